"""pymaster.mail.sasl: security options, the built-in mechanisms, the Dovecot protocol pieces."""

from __future__ import annotations

import asyncio

import pytest

from pymaster.mail import sasl
from pymaster.mail.sasl import dovecot
from pymaster.mail.sasl.builtin import BuiltinServer
from pymaster.mail.sasl.mechanisms import filter_mechanisms, parse_options
from pymaster.mail.sasl.passwd import PasswordFile


class TestSecurityOptions:
    @pytest.mark.parametrize("options, offered", [
        ([], ["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS"]),
        (["noanonymous"], ["PLAIN", "LOGIN", "CRAM-MD5"]),
        (["noplaintext", "noanonymous"], ["CRAM-MD5"]),
        (["nodictionary"], ["ANONYMOUS"]),
        (["mutual_auth"], []),
    ])
    def test_filter(self, options, offered):
        mechs = ["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS"]
        assert filter_mechanisms(mechs, parse_options(options)) == offered

    def test_unknown_option(self):
        with pytest.raises(ValueError, match="unknown SASL security option"):
            parse_options(["noplain"])


@pytest.fixture
def server(tmp_path):
    store = PasswordFile(str(tmp_path / "sasldb2"))
    store.set("kdent", "", "secret")
    store.set("anne", "example.com", "pw")
    store.save()
    return BuiltinServer(str(tmp_path / "sasldb2"), "")


def converse(server, mech, initial, *responses):
    async def run():
        conv = server.conversation(mech, {})
        steps = [await conv.start(initial)]
        for r in responses:
            steps.append(await conv.respond(r))
        return steps
    return asyncio.run(run())


class TestBuiltin:
    def test_offers_plain_and_login_unless_plaintext_is_refused(self, server):
        assert server.mechanisms({"noanonymous"}) == ["PLAIN", "LOGIN"]
        assert server.mechanisms({"noplaintext"}) == []

    def test_plain(self, server):
        assert converse(server, "PLAIN", b"\0kdent\0secret")[-1] == (sasl.OK, b"", "kdent", "")
        assert converse(server, "PLAIN", b"\0kdent\0wrong")[-1].kind == sasl.FAIL
        assert converse(server, "PLAIN", b"kdent\0kdent\0secret")[-1].kind == sasl.OK
        assert converse(server, "PLAIN", b"boss\0kdent\0secret")[-1].kind == sasl.FAIL
        assert converse(server, "PLAIN", b"garbage")[-1].reason == "authentication failure"

    def test_plain_without_initial_response_gets_an_empty_challenge(self, server):
        steps = converse(server, "PLAIN", None, b"\0anne@example.com\0pw")
        assert steps[0] == (sasl.CHALLENGE, b"", "", "")
        assert steps[1].user == "anne@example.com"

    def test_login(self, server):
        steps = converse(server, "LOGIN", None, b"kdent", b"secret")
        assert [s.data for s in steps[:2]] == [b"Username:", b"Password:"]
        assert steps[2].kind == sasl.OK

    def test_cyrus_type_maps_to_the_builtin_store(self, tmp_path):
        from pymaster.mail.config import load_config
        (tmp_path / "main.cf").write_text("smtpd_sasl_type = cyrus\n")
        assert isinstance(sasl.open_server(load_config(str(tmp_path))), BuiltinServer)
        (tmp_path / "main.cf").write_text("smtpd_sasl_type = gssapi-only\n")
        with pytest.raises(sasl.SaslError, match="unsupported SASL server"):
            sasl.open_server(load_config(str(tmp_path)))


class TestDovecotProtocol:
    def test_handshake(self):
        mechs = dovecot.parse_handshake(["VERSION\t1\t2", "MECH\tPLAIN\tplaintext",
                                         "MECH\tLOGIN\tplaintext", "MECH\tGSSAPI\tprivate",
                                         "SPID\t1", "CUID\t7", "COOKIE\tabc"])
        assert mechs["PLAIN"] == {"plaintext"}
        server = dovecot.DovecotServer("private/auth")
        server.mechs = mechs
        assert server.mechanisms({"noanonymous"}) == ["PLAIN", "LOGIN"]     # private is hidden

    def test_wrong_major_version(self):
        with pytest.raises(sasl.SaslError, match="not supported"):
            dovecot.parse_handshake(["VERSION\t2\t0"])

    def test_escaping(self):
        assert dovecot.escape("a\tb\\c\n") == "a\\tb\\\\c\\n"
        assert dovecot.unescape(dovecot.escape("a\tb\\c\n")) == "a\tb\\c\n"


class TestDovecotPath:
    """smtpd_sasl_path: inet:host:port, unix:path, or a bare path (a UNIX socket)."""

    def test_the_three_forms(self):
        from pymaster.mail.sasl import dovecot
        assert dovecot.endpoint("inet:127.0.0.1:12345") == ("inet", "127.0.0.1", 12345)
        assert dovecot.endpoint("inet:[::1]:12345") == ("inet", "::1", 12345)
        assert dovecot.endpoint("unix:/run/dovecot/auth") == ("unix", "/run/dovecot/auth", 0)
        assert dovecot.endpoint("private/auth") == ("unix", "private/auth", 0)
