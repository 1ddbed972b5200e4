"""The smtp client's SASL side (services/smtp/sasl.py) and TLS policy pieces (tls.py).

Lookup order of smtp_sasl_password_maps, mechanism choice under the
security options and the mechanism filter, the responses each mechanism
sends, the AUTH exchange and its failure reasons; then the TLS policy
lookups and certificate name matching that need no server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from pymaster.mail.config import Config
from services.smtp import sasl, tls
from services.smtp.dns import Host
from services.smtp.reply import Reply
from services.smtp.session import SessionError
from services.smtp.settings import Settings


def make_cfg(tmp_path, **values) -> Config:
    return Config(str(tmp_path), {k: str(v) for k, v in values.items()})


def client(tmp_path, lmtp=False, **values) -> sasl.SaslClient:
    cfg = make_cfg(tmp_path, **values)
    return sasl.SaslClient(cfg, Settings.from_config(cfg, lmtp))


def passwords(tmp_path, text: str) -> str:
    path = tmp_path / "sasl_passwd"
    path.write_text(text)
    return f"texthash:{path}"


class TestPasswordLookup:
    TABLE = ("alice@example.com alice:a1\n@example.com dept:d1\n"
             "[relay.example.net]:587 relay:r1\nrelay.example.net host:h1\n"
             "mx.example.org mx:m1\n")

    def test_next_hop_as_given_comes_before_the_host_name(self, tmp_path):
        c = client(tmp_path, smtp_sasl_auth_enable="yes",
                   smtp_sasl_password_maps=passwords(tmp_path, self.TABLE))
        assert c.credentials("alice@example.com", "[relay.example.net]:587",
                             "relay.example.net") == ("relay", "r1")

    def test_the_host_name_when_the_next_hop_has_no_entry(self, tmp_path):
        c = client(tmp_path, smtp_sasl_password_maps=passwords(tmp_path, self.TABLE))
        assert c.credentials("", "example.org", "mx.example.org") == ("mx", "m1")
        assert c.credentials("", "example.org", "other.example.org") is None

    def test_sender_dependent_looks_up_the_sender_then_its_domain(self, tmp_path):
        c = client(tmp_path, smtp_sender_dependent_authentication="yes",
                   smtp_sasl_password_maps=passwords(tmp_path, self.TABLE))
        assert c.keys("Bob@Example.com", "[relay.example.net]:587", "relay.example.net") == \
            ["bob@example.com", "@example.com", "[relay.example.net]:587", "relay.example.net"]
        assert c.credentials("alice@example.com", "[relay.example.net]:587", "x") == \
            ("alice", "a1")
        assert c.credentials("bob@example.com", "[relay.example.net]:587", "x") == \
            ("dept", "d1")
        # The null sender has no entry of its own.
        assert c.credentials("", "[relay.example.net]:587", "x") == ("relay", "r1")

    def test_without_sender_dependence_the_sender_is_not_a_key(self, tmp_path):
        c = client(tmp_path, smtp_sasl_password_maps=passwords(tmp_path, self.TABLE))
        assert c.keys("alice@example.com", "example.net", "mx.example.net") == \
            ["example.net", "mx.example.net"]

    def test_the_password_may_contain_colons(self, tmp_path):
        c = client(tmp_path, smtp_sasl_password_maps=passwords(tmp_path, "h u:p:a:ss\n"))
        assert c.credentials("", "h", "h") == ("u", "p:a:ss")

    def test_lmtp_reads_the_lmtp_names(self, tmp_path):
        c = client(tmp_path, lmtp=True, lmtp_sasl_auth_enable="yes",
                   lmtp_sasl_password_maps=passwords(tmp_path, "h lu:lp\n"),
                   smtp_sasl_password_maps="inline:{h=su:sp}")
        assert c.enabled and c.credentials("", "h", "h") == ("lu", "lp")


class TestMechanismChoice:
    def test_defaults_refuse_plaintext_mechanisms_with_or_without_tls(self, tmp_path):
        # smtp_sasl_tls_security_options defaults to $smtp_sasl_security_options.
        c = client(tmp_path)
        assert c.choose(["PLAIN", "LOGIN"], tls=False) is None
        assert c.choose(["PLAIN", "LOGIN"], tls=True) is None
        assert c.choose(["PLAIN", "LOGIN", "CRAM-MD5"], tls=False) == "CRAM-MD5"

    def test_tls_options_apply_inside_tls_only(self, tmp_path):
        c = client(tmp_path, smtp_sasl_tls_security_options="noanonymous")
        assert c.choose(["LOGIN", "PLAIN"], tls=True) == "PLAIN"
        assert c.choose(["LOGIN", "PLAIN"], tls=False) is None

    def test_preference_is_the_clients_not_the_servers_order(self, tmp_path):
        c = client(tmp_path, smtp_sasl_security_options="noanonymous")
        assert c.choose(["login", "plain", "cram-md5"], tls=False) == "CRAM-MD5"
        assert c.choose(["LOGIN", "PLAIN"], tls=False) == "PLAIN"
        assert c.choose(["GSSAPI", "XOAUTH2"], tls=False) is None

    def test_nodictionary_excludes_all_password_mechanisms(self, tmp_path):
        c = client(tmp_path, smtp_sasl_security_options="noanonymous, nodictionary")
        assert c.choose(["PLAIN", "LOGIN", "CRAM-MD5"], tls=False) is None

    def test_mechanism_filter(self, tmp_path):
        c = client(tmp_path, smtp_sasl_security_options="noanonymous",
                   smtp_sasl_mechanism_filter="login")
        assert c.choose(["PLAIN", "LOGIN", "CRAM-MD5"], tls=False) == "LOGIN"
        c = client(tmp_path, smtp_sasl_security_options="noanonymous",
                   smtp_sasl_mechanism_filter="!cram-md5, static:all")
        assert c.choose(["PLAIN", "LOGIN", "CRAM-MD5"], tls=False) == "PLAIN"


class TestResponses:
    def test_plain(self):
        assert sasl.respond("PLAIN", "u", "p", b"") == b"\0u\0p"

    def test_login_answers_username_then_password(self):
        assert sasl.respond("LOGIN", "u", "p", b"Username:", 1) == b"u"
        assert sasl.respond("LOGIN", "u", "p", b"Password:", 2) == b"p"

    def test_cram_md5_is_rfc_2195(self):
        challenge = b"<1896.697170952@postoffice.reston.mci.net>"
        expected = hmac.new(b"tanstaaftanstaaf", challenge, hashlib.md5).hexdigest()
        assert expected == "b913a602c7eda7a495b4e6e7334d3890"
        assert sasl.respond("CRAM-MD5", "tim", "tanstaaftanstaaf", challenge) == \
            f"tim {expected}".encode()


class FakeSession:
    """A session that records what is sent and answers from a script."""

    def __init__(self, auth: str, replies: list[str], tls: str = "Verified") -> None:
        self.host = Host("mx.example.com", "192.0.2.1", 587)
        self.features = {"AUTH": auth} if auth else {}
        self.tls = tls
        self.sent: list[str] = []
        self.replies = replies

    def has(self, keyword: str) -> bool:
        return keyword in self.features

    def command(self, line: str, timeout_name: str, phase: str) -> Reply:
        self.sent.append(line)
        return self.read_reply(timeout_name, phase)

    def send(self, data: bytes, phase: str, timeout_name: str = "mail") -> None:
        self.sent.append(data.decode().rstrip("\r\n"))

    def read_reply(self, timeout_name: str, phase: str) -> Reply:
        line = self.replies.pop(0)
        return Reply(int(line[:3]), [line])


class TestExchange:
    def enabled(self, tmp_path, **more) -> sasl.SaslClient:
        return client(tmp_path, smtp_sasl_auth_enable="yes",
                      smtp_sasl_tls_security_options="noanonymous",
                      smtp_sasl_password_maps="inline:{[mx.example.com]:587=u:p}", **more)

    def test_plain_sends_an_initial_response(self, tmp_path):
        s = FakeSession("PLAIN LOGIN", ["235 2.7.0 Authentication successful"])
        assert self.enabled(tmp_path).authenticate(s, "", "[mx.example.com]:587") == "u"
        assert s.sent == ["AUTH PLAIN " + base64.b64encode(b"\0u\0p").decode()]

    def test_login_answers_two_challenges(self, tmp_path):
        s = FakeSession("LOGIN", ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 2.7.0 Ok"])
        assert self.enabled(tmp_path).authenticate(s, "", "[mx.example.com]:587") == "u"
        assert s.sent == ["AUTH LOGIN", "dQ==", "cA=="]

    def test_a_refusal_is_a_soft_site_failure_quoting_the_server(self, tmp_path):
        s = FakeSession("PLAIN", ["535 5.7.8 Error: authentication failed: bad password"])
        with pytest.raises(SessionError) as e:
            self.enabled(tmp_path).authenticate(s, "", "[mx.example.com]:587")
        assert e.value.reason == ("SASL authentication failed; server mx.example.com"
                                  "[192.0.2.1] said: 535 5.7.8 Error: authentication failed: "
                                  "bad password")
        assert e.value.dsn == "4.7.8" and e.value.site

    def test_without_soft_bounce_the_refusal_stays_permanent(self, tmp_path):
        s = FakeSession("PLAIN", ["535 5.7.8 no"])
        with pytest.raises(SessionError) as e:
            self.enabled(tmp_path, smtp_sasl_auth_soft_bounce="no").authenticate(
                s, "", "[mx.example.com]:587")
        assert e.value.dsn == "5.7.8"

    def test_no_usable_mechanism_defers(self, tmp_path):
        s = FakeSession("PLAIN LOGIN", [], tls="")     # no TLS: noplaintext applies
        with pytest.raises(SessionError) as e:
            self.enabled(tmp_path).authenticate(s, "", "[mx.example.com]:587")
        assert e.value.reason == ("SASL authentication failed; cannot authenticate to server "
                                  "mx.example.com[192.0.2.1]: no mechanism available")
        assert s.sent == []

    def test_nothing_is_sent_without_a_password_or_without_auth_offered(self, tmp_path):
        s = FakeSession("PLAIN", [])
        assert self.enabled(tmp_path).authenticate(s, "", "other.example") is None
        s = FakeSession("", [])
        assert self.enabled(tmp_path).authenticate(s, "", "[mx.example.com]:587") is None
        assert client(tmp_path).authenticate(FakeSession("PLAIN", []), "", "x") is None
        assert s.sent == []


# -- TLS policy pieces that need no server -------------------------------------------

def tls_client(tmp_path, **values) -> tls.TlsClient:
    cfg = make_cfg(tmp_path, **values)
    return tls.TlsClient(cfg, Settings.from_config(cfg, False))


class TestTlsPolicy:
    def test_levels_from_the_parameter_and_the_legacy_names(self, tmp_path):
        assert tls_client(tmp_path).default_level == "none"
        assert tls_client(tmp_path, smtp_use_tls="yes").default_level == "may"
        assert tls_client(tmp_path, smtp_use_tls="yes",
                          smtp_enforce_tls="yes").default_level == "encrypt"
        assert tls_client(tmp_path, smtp_enforce_tls="yes",
                          smtp_tls_security_level="may").default_level == "may"

    def test_lmtp_reads_the_lmtp_names(self, tmp_path):
        cfg = make_cfg(tmp_path, lmtp_use_tls="yes", smtp_tls_security_level="encrypt")
        assert tls.TlsClient(cfg, Settings.from_config(cfg, True)).default_level == "may"
        cfg = make_cfg(tmp_path, lmtp_tls_security_level="verify")
        t = tls.TlsClient(cfg, Settings.from_config(cfg, True))
        assert t.policy("mx.example.com", "mx.example.com").match == ["hostname"]

    def test_policy_maps_by_nexthop_as_given_then_parent_domains(self, tmp_path):
        table = tmp_path / "policy"
        table.write_text("[mx.example.com]:587 verify\nexample.com encrypt\n"
                         ".example.org secure match=nexthop:.example.net\n")
        t = tls_client(tmp_path, smtp_tls_security_level="may",
                       smtp_tls_policy_maps=f"texthash:{table}")
        assert t.policy("[mx.example.com]:587", "mx.example.com") == \
            tls.Policy("verify", "mx.example.com", ["hostname"])
        # [host]:port is looked up as given, once: no parent domains.
        assert t.policy("[mx.example.com]", "mx.example.com").level == "may"
        assert t.policy("example.com", "example.com").level == "encrypt"
        assert t.policy("sub.example.com", "sub.example.com").level == "may"
        assert t.policy("a.b.example.org", "a.b.example.org") == \
            tls.Policy("secure", "a.b.example.org", ["nexthop", ".example.net"])

    def test_secure_defaults_to_nexthop_and_dot_nexthop(self, tmp_path):
        t = tls_client(tmp_path, smtp_tls_security_level="secure")
        assert t.policy("example.com", "example.com").match == ["nexthop", "dot-nexthop"]

    def test_a_bad_policy_entry_is_an_error(self, tmp_path):
        table = tmp_path / "policy"
        table.write_text("bad.example maybe\nworse.example encrypt frob=1\n")
        t = tls_client(tmp_path, smtp_tls_policy_maps=f"texthash:{table}")
        for dest in ("bad.example", "worse.example"):
            with pytest.raises(tls.PolicyError):
                t.policy(dest, dest)


class TestCertificateNames:
    def test_subject_alt_names_win_over_the_common_name(self):
        cert = {"subject": ((("commonName", "cn.example"),),),
                "subjectAltName": (("DNS", "MX.Example.com"), ("IP Address", "192.0.2.1"))}
        assert tls.cert_names(cert) == ["mx.example.com"]
        assert tls.cert_names({"subject": ((("commonName", "cn.example"),),)}) == ["cn.example"]

    @pytest.mark.parametrize("cert, strategy, nexthop, host, ok", [
        ("mx.example.com", "hostname", "example.com", "mx.example.com", True),
        ("mx.example.com", "hostname", "example.com", "alias.example", False),
        ("mx.example.com", "nexthop", "example.com", "mx.example.com", False),
        ("mx.example.com", "dot-nexthop", "example.com", "x", True),
        ("example.com", "nexthop", "example.com", "x", True),
        ("example.com", "dot-nexthop", "example.com", "x", False),
        ("*.example.com", "hostname", "", "mx.example.com", True),
        ("*.example.com", "hostname", "", "a.mx.example.com", False),
        ("mx.example.com", ".example.com", "", "x", True),
        ("mx.example.com", "mx.example.com", "", "x", True),
        ("mx.example.com", "mail.example.com", "", "x", False),
    ])
    def test_match_strategies(self, cert, strategy, nexthop, host, ok):
        policy = tls.Policy("secure", nexthop, [strategy])
        assert tls.matches([cert], tls.reference_names(policy, host)) is ok
