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
