"""smtpd's milters (services/smtpd/milters.py) against the real session code, a
scripted milter (tests/support/milterpeer.py) and cleanup stood in for
(tests/test_smtpd_session.py): the UNKNOWN event and the macros of each stage."""

from __future__ import annotations

import struct

import pytest

from pymaster.mail import milter
from tests.support import milterpeer as peer
from tests.support.milterpeer import ScriptedMilter
from tests.test_smtpd_session import Server, _end_servers, hello  # noqa: F401


def macros_of(m: ScriptedMilter) -> dict[bytes, dict[str, str]]:
    """macros_of - the macros the milter received, by the command they came with."""
    out: dict[bytes, dict[str, str]] = {}
    for data in m.data(b"D"):
        words = milter.unstrings(data[1:])
        out[data[:1]] = dict(zip(words[::2], words[1::2]))
    return out


class TestUnknownCommand:
    def test_the_milters_reject_replaces_502(self, tmp_path):
        with ScriptedMilter(script={b"U": [peer.replycode("554 5.7.1 Go away, spammer")]}) as m:
            s = Server(tmp_path, smtpd_milters=m.name)
            raw = s.raw()
            hello(raw)
            assert raw.cmd("XYZZY plugh") == "554 5.7.1 Go away, spammer"
            assert raw.cmd("NOOP") == "250 2.0.0 Ok"
            s.wait_log("NOQUEUE: milter-reject: UNKNOWN from localhost[127.0.0.1]: 554 5.7.1 "
                       "Go away, spammer; proto=ESMTP helo=<client.example>")
        assert m.data(b"U") == [b"XYZZY plugh\0"]

    def test_tempfail_and_continue(self, tmp_path):
        script = {b"U": lambda data: [peer.reply(b"t")] if data.startswith(b"TEMP")
                  else [peer.reply(b"c")]}
        with ScriptedMilter(script=script) as m:
            raw = Server(tmp_path, smtpd_milters=m.name).raw()
            hello(raw)
            assert raw.cmd("TEMP x") == "451 4.7.1 Service unavailable - try again later"
            assert raw.cmd("OTHER") == "502 5.5.2 Error: command not recognized"

    def test_not_sent_when_the_milter_turned_it_off(self, tmp_path):
        with ScriptedMilter(steps=milter.NO_UNKNOWN,
                            script={b"U": [peer.reply(b"r")]}) as m:
            raw = Server(tmp_path, smtpd_milters=m.name).raw()
            hello(raw)
            assert raw.cmd("XYZZY") == "502 5.5.2 Error: command not recognized"
        assert b"U" not in m.commands()

    def test_not_sent_to_a_version_2_milter(self, tmp_path):
        with ScriptedMilter(version=2, script={b"U": [peer.reply(b"r")]}) as m:
            raw = Server(tmp_path, smtpd_milters=m.name).raw()
            hello(raw)
            assert raw.cmd("XYZZY") == "502 5.5.2 Error: command not recognized"
        assert b"U" not in m.commands()

    def test_milter_unknown_command_macros(self, tmp_path):
        with ScriptedMilter() as m:
            raw = Server(tmp_path, smtpd_milters=m.name,
                         milter_unknown_command_macros="j {client_addr}").raw()
            hello(raw)
            raw.cmd("XYZZY")
            m.wait_until(lambda: b"U" in m.commands())
        assert macros_of(m)[b"U"] == {"j": "mx.example.com", "{client_addr}": "127.0.0.1"}


class TestMacros:
    """Postfix's default milter_*_macros, each with the value Postfix gives it."""

    def session(self, tmp_path, **settings):
        with ScriptedMilter() as m:
            s = Server(tmp_path, smtpd_milters=m.name, **settings)
            raw = s.raw()
            hello(raw)
            assert raw.cmd("MAIL FROM:<a@example.org>").startswith("250")
            assert raw.cmd("RCPT TO:<alice@mx.example.com>").startswith("250")
            assert raw.cmd("DATA").startswith("354")
            assert raw.cmd("Subject: hi\r\n\r\nhello\r\n.").startswith("250")
            raw.cmd("QUIT")
            m.wait_until(lambda: b"Q" in m.commands())
        return macros_of(m), s

    def test_each_stage_gets_its_default_macros(self, tmp_path):
        got, s = self.session(tmp_path)
        connect = got[b"C"]
        assert connect.pop("v").startswith("Postfix")
        assert connect == {"j": "mx.example.com", "{daemon_name}": "mx.example.com",
                           "{daemon_addr}": "127.0.0.1", "_": "localhost [127.0.0.1]"}
        assert b"H" not in got          # the TLS macros: no TLS, nothing to send
        assert got[b"M"] == {"{mail_addr}": "a@example.org", "{mail_host}": "example.org",
                             "{mail_mailer}": "smtp"}
        # The queue file opens once the first recipient is accepted, as in
        # Postfix: the first RCPT has no queue ID yet.
        assert got[b"R"] == {"{rcpt_addr}": "alice@mx.example.com",
                             "{rcpt_host}": "mx.example.com", "{rcpt_mailer}": "local"}
        assert got[b"T"] == got[b"N"] == got[b"E"] == {"i": "QID1"}

    def test_the_lists_choose(self, tmp_path):
        got, _ = self.session(tmp_path, milter_connect_macros="{daemon_port} {client_port}",
                              milter_rcpt_macros="{rcpt_mailer}", milter_data_macros="")
        assert set(got[b"C"]) == {"{daemon_port}", "{client_port}"}
        assert got[b"C"]["{daemon_port}"].isdigit()
        assert got[b"R"] == {"{rcpt_mailer}": "local"}
        assert b"T" not in got

    def test_a_milters_own_list_wins(self, tmp_path):
        with ScriptedMilter(symlists={2: "{mail_mailer} {mail_host}"}) as m:
            raw = Server(tmp_path, smtpd_milters=m.name, milter_mail_macros="").raw()
            hello(raw)
            raw.cmd("MAIL FROM:<a@example.org>")
            m.wait_until(lambda: b"M" in m.commands())
        assert macros_of(m)[b"M"] == {"{mail_mailer}": "smtp", "{mail_host}": "example.org"}


def test_auth_author_is_the_mail_from_auth_parameter():
    from services.smtpd.command import parse_mail
    assert parse_mail("FROM:<a@example.org> AUTH=joe+2Bx@example.org").auth == \
        "joe+x@example.org"
    assert parse_mail("FROM:<a@example.org> AUTH=<>").auth == ""
