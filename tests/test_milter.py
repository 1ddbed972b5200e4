"""pymaster.milter: the wire format, the milter lists, and conversations with
a scripted milter (tests/milterpeer.py) covering negotiation, every verdict,
every edit, timeouts and milter_default_action."""

import socket
import struct

import pytest

from pymaster import log, milter
from pymaster.config import Config
from tests import milterpeer as peer
from tests.milterpeer import ScriptedMilter


def make_cfg(tmp_path, **values):
    base = {"myhostname": "mx.example.com", "maillog_file": str(tmp_path / "maillog")}
    base.update(values)
    cfg = Config(str(tmp_path), base)
    log.setup("cleanup", cfg)
    return cfg


def envelope(**overrides):
    values = dict(sender="a@example.org", recipients=["b@example.net"],
                  headers=[["From", " a@example.org"], ["Subject", " hi\n\tthere"]],
                  body=b"line 1\nline 2\n", client_name="client.example",
                  client_address="192.0.2.1", client_port=4000, helo="client.example")
    values.update(overrides)
    return milter.Envelope(**values)


def spec(m, **kw):
    return milter.Spec(m.name, **{"connect_timeout": 5, "command_timeout": 5,
                                  "content_timeout": 5, **kw})


def run(m, env=None, macros=None, names=None, **kw):
    env = env or envelope()
    outcome = milter.run_chain([spec(m, **kw)], env, macros or {"i": "QID"}, names or {})
    return outcome, env


class TestWireFormat:
    def test_packet_is_length_command_data(self):
        assert milter.encode(b"C", b"ab") == b"\0\0\0\x03Cab"

    def test_strings_round_trip(self):
        assert milter.unstrings(milter.strings("From", " x")) == ["From", " x"]

    def test_connect_data_for_ipv4_and_ipv6(self):
        data = milter.connect_data(envelope())
        assert data == b"client.example\x004" + struct.pack("!H", 4000) + b"192.0.2.1\0"
        assert milter.connect_data(envelope(client_address="::1"))[15:16] == b"6"

    def test_body_goes_with_crlf_in_chunks_of_at_most_65535(self):
        chunks = list(milter.body_chunks(b"x" * 70000 + b"\n"))
        assert [len(c) for c in chunks] == [65535, 4467]
        assert chunks[-1].endswith(b"x\r\n")

    @pytest.mark.parametrize("text,expected", [
        ("554 5.7.1 go away", ("554", "5.7.1", "go away")),
        ("450 try later", ("450", "4.7.1", "try later")),
        ("550-5.7.1 first\r\n550 5.7.1 second", ("550", "5.7.1", "first")),
    ])
    def test_replycode_text(self, text, expected):
        assert milter.parse_reply(text) == expected

    def test_malformed_replycode_is_an_error(self):
        with pytest.raises(milter.MilterError):
            milter.parse_reply("hello")


class TestMilterLists:
    def test_plain_names_take_main_cf_settings(self, tmp_path):
        cfg = make_cfg(tmp_path, milter_default_action="accept", milter_command_timeout="7s")
        specs = milter.parse_milters(cfg, "inet:127.0.0.1:8891, unix:/run/m.sock")
        assert [s.name for s in specs] == ["inet:127.0.0.1:8891", "unix:/run/m.sock"]
        assert specs[0].default_action == "accept" and specs[0].command_timeout == 7
        assert specs[0].content_timeout == 300 and specs[0].connect_timeout == 30

    def test_group_overrides_settings_for_its_milter(self, tmp_path):
        specs = milter.parse_milters(make_cfg(tmp_path), "{ inet:127.0.0.1:1, connect_timeout=2s,"
                                     " default_action=reject }, inet:127.0.0.1:2")
        assert (specs[0].connect_timeout, specs[0].default_action) == (2, "reject")
        assert specs[1].default_action == "tempfail"

    @pytest.mark.parametrize("text", ["{ inet:x:1, colour=red }", "{ inet:x:1, default_action=maybe }"])
    def test_bad_group_is_a_clear_error(self, tmp_path, text):
        with pytest.raises(ValueError):
            milter.parse_milters(make_cfg(tmp_path), text)

    def test_macro_names_per_stage_have_postfix_defaults(self, tmp_path):
        names = milter.macro_names(make_cfg(tmp_path))
        assert names[0] == ["j", "{daemon_name}", "{daemon_addr}", "v", "_"]
        assert names[3][:2] == ["i", "{rcpt_addr}"]


class TestConversation:
    def test_events_in_order_with_negotiation_first(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter() as m:
            outcome, _ = run(m)
        assert outcome.action == "accept"
        assert [c for c in m.commands() if c != b"D"] == \
            [b"O", b"C", b"H", b"M", b"R", b"T", b"L", b"L", b"N", b"B", b"E", b"Q"]
        version, actions, steps = struct.unpack("!III", m.data(b"O")[0])
        assert (version, actions) == (6, 0x1FF)
        assert m.data(b"M") == [b"<a@example.org>\0"]
        assert m.data(b"L")[1] == b"Subject\0hi\n\tthere\0"
        assert m.data(b"B") == [b"line 1\r\nline 2\r\n"]

    def test_skipped_steps_are_not_sent(self, tmp_path):
        make_cfg(tmp_path)
        steps = milter.NO_CONNECT | milter.NO_HELO | milter.NO_BODY | milter.NO_HDRS
        with ScriptedMilter(steps=steps) as m:
            run(m)
        assert [c for c in m.commands() if c != b"D"] == [b"O", b"M", b"R", b"T", b"N", b"E", b"Q"]

    def test_leading_space_kept_when_negotiated(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(steps=milter.HDR_LEADSPC) as m:
            run(m)
        assert m.data(b"L")[0] == b"From\0 a@example.org\0"

    def test_macros_sent_as_configured_or_as_the_milter_asks(self, tmp_path):
        make_cfg(tmp_path)
        macros = {"i": "QID", "j": "mx.example.com", "{rcpt_addr}": "ignored"}
        with ScriptedMilter(symlists={0: "i"}) as m:
            run(m, macros=macros, names={0: ["j"], 3: ["i", "{rcpt_addr}"]})
        macro_packets = m.data(b"D")
        assert macro_packets[0] == b"Ci\0QID\0"                     # the milter's list wins
        assert b"R" + b"i\0QID\0{rcpt_addr}\0b@example.net\0" in macro_packets

    def test_no_reply_steps_are_not_waited_for(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(steps=milter.NR_CONN | milter.NR_HDR, stall={b"C", b"L"}) as m:
            outcome, _ = run(m)
        assert outcome.action == "accept"


class TestVerdicts:
    @pytest.mark.parametrize("command,event", [(b"C", "CONNECT"), (b"R", "RCPT"),
                                               (b"E", "END-OF-MESSAGE")])
    def test_reject_at_any_event(self, tmp_path, command, event):
        make_cfg(tmp_path)
        with ScriptedMilter(script={command: [peer.reply(b"r")]}) as m:
            outcome, _ = run(m)
        assert (outcome.action, outcome.code, outcome.dsn, outcome.text, outcome.event) == \
            ("reject", "550", "5.7.1", "Command rejected", event)

    def test_tempfail(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.reply(b"t")]}) as m:
            outcome, _ = run(m)
        assert (outcome.action, outcome.code, outcome.dsn, outcome.text) == \
            ("tempfail", "451", "4.7.1", "Service unavailable - try again later")

    @pytest.mark.parametrize("text,action", [("554 5.7.0 spam", "reject"),
                                             ("452 4.2.2 full", "tempfail")])
    def test_replycode(self, tmp_path, text, action):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.replycode(text)]}) as m:
            outcome, _ = run(m)
        assert (outcome.action, f"{outcome.code} {outcome.dsn} {outcome.text}") == (action, text)

    def test_discard(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"M": [peer.reply(b"d")]}) as m:
            outcome, _ = run(m)
        assert (outcome.action, outcome.event) == ("discard", "MAIL")

    def test_accept_early_ends_this_milter_without_edits(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"H": [peer.reply(b"a")]}) as m:
            outcome, env = run(m)
        assert outcome.action == "accept"
        assert b"M" not in m.commands()

    def test_skip_stops_the_body(self, tmp_path):
        make_cfg(tmp_path)
        big = envelope(body=b"y" * 200000)
        with ScriptedMilter(script={b"B": [peer.reply(b"s")]}) as m:
            outcome, _ = run(m, env=big)
        assert outcome.action == "accept"
        assert m.commands().count(b"B") == 1

    def test_progress_is_not_a_verdict(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.reply(b"p"), peer.reply(b"r")]}) as m:
            outcome, _ = run(m)
        assert outcome.action == "reject"

    def test_quarantine_means_hold(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.quarantine("suspicious"), peer.reply(b"c")]}) as m:
            outcome, _ = run(m)
        assert (outcome.action, outcome.reason) == ("hold", "suspicious")


class TestEdits:
    def edited(self, tmp_path, *edits, steps=0):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [*edits, peer.reply(b"a")]}, steps=steps) as m:
            outcome, env = run(m)
        assert outcome.action == "accept"
        return env

    def test_add_header_goes_last_with_a_space(self, tmp_path):
        env = self.edited(tmp_path, peer.add_header("X-Scan", "clean"))
        assert env.headers[-1] == ["X-Scan", " clean"]

    def test_insert_header_at_index(self, tmp_path):
        env = self.edited(tmp_path, peer.insert_header(0, "DKIM-Signature", "v=1;\r\n\td=x"),
                          peer.insert_header(99, "X-Last", "z"))
        assert env.headers[0] == ["DKIM-Signature", " v=1;\n\td=x"]
        assert env.headers[-1] == ["X-Last", " z"]

    def test_change_header_by_name_index(self, tmp_path):
        env = self.edited(tmp_path, peer.change_header(1, "subject", "new"))
        assert env.headers[1] == ["Subject", " new"]

    def test_change_header_with_empty_value_deletes(self, tmp_path):
        env = self.edited(tmp_path, peer.change_header(1, "Subject", ""))
        assert [h[0] for h in env.headers] == ["From"]

    def test_change_header_past_the_last_adds(self, tmp_path):
        env = self.edited(tmp_path, peer.change_header(2, "Subject", "second"))
        assert env.headers[-1] == ["Subject", " second"]

    def test_leading_space_is_the_milters_when_negotiated(self, tmp_path):
        env = self.edited(tmp_path, peer.add_header("X-A", "tight"), steps=milter.HDR_LEADSPC)
        assert env.headers[-1] == ["X-A", "tight"]

    def test_recipients_added_and_deleted(self, tmp_path):
        env = self.edited(tmp_path, peer.add_rcpt("c@example.net"), peer.del_rcpt("B@example.net"),
                          peer.packet(b"2", b"<d@example.net>\0NOTIFY=NEVER\0"))
        assert env.recipients == ["c@example.net", "d@example.net"]

    def test_sender_changed(self, tmp_path):
        env = self.edited(tmp_path, peer.change_from("new@example.org"))
        assert env.sender == "new@example.org"

    def test_body_replaced_from_chunks(self, tmp_path):
        env = self.edited(tmp_path, peer.replace_body(b"new\r\n"), peer.replace_body(b"body\r\n"))
        assert (env.body, env.body_replaced) == (b"new\nbody\n", True)


class TestChain:
    def test_each_milter_sees_the_previous_ones_edits(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.add_header("X-First", "1"), peer.reply(b"c")]}) as a, \
                ScriptedMilter() as b:
            env = envelope()
            milter.run_chain([spec(a), spec(b)], env, {}, {})
        assert b"X-First\x001\0" in b.data(b"L")

    def test_reject_stops_the_chain(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as a, ScriptedMilter() as b:
            outcome = milter.run_chain([spec(a), spec(b)], envelope(), {}, {})
        assert outcome.action == "reject" and b.commands() == []


class TestFailures:
    def unreachable(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return milter.Spec(f"inet:127.0.0.1:{port}", 1, 1, 1)

    def test_unreachable_milter_gets_tempfail_and_a_warning(self, tmp_path):
        make_cfg(tmp_path)
        outcome = milter.run_chain([self.unreachable()], envelope(), {}, {})
        assert (outcome.action, outcome.code, outcome.dsn, outcome.text) == \
            ("tempfail", "451", "4.7.1", "Service unavailable - try again later")
        assert "warning: connect to Milter service inet:127.0.0.1:" in \
            (tmp_path / "maillog").read_text()

    @pytest.mark.parametrize("action,expected", [("accept", "accept"), ("reject", "reject"),
                                                 ("quarantine", "hold")])
    def test_default_action(self, tmp_path, action, expected):
        make_cfg(tmp_path)
        bad = milter.Spec(self.unreachable().name, 1, 1, 1, action)
        assert milter.run_chain([bad], envelope(), {}, {}).action == expected

    def test_silent_milter_times_out(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(stall={b"O"}) as m:
            outcome, _ = run(m, command_timeout=0.2)
        assert outcome.action == "tempfail"
        assert f"warning: milter {m.name}: can't read SMFIC_OPTNEG reply packet header: " \
               "Connection timed out" in (tmp_path / "maillog").read_text()

    def test_protocol_violation_gets_default_action(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"C": [peer.add_header("X", "too early")]}) as m:
            outcome, _ = run(m, default_action="reject")
        assert outcome.action == "reject"
        assert "unexpected filter response" in (tmp_path / "maillog").read_text()
