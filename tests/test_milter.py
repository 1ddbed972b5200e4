"""pymaster.mail.milter: the wire format, the milter lists, and conversations with
a scripted milter (tests/support/milterpeer.py) covering negotiation, every verdict,
every edit, timeouts and milter_default_action."""

import socket
import struct
import threading

import pytest

from pymaster.mail import milter
from pymaster.util import log
from pymaster.mail.config import Config
from tests.support import milterpeer as peer
from tests.support.milterpeer import ScriptedMilter


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
            # The peer's thread records QUIT a moment after we sent it.
            m.wait_until(lambda: b"Q" in m.commands())
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
            m.wait_until(lambda: b"Q" in m.commands())
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


class TestHostileMilter:
    """A milter is a network peer: whatever it sends is bounded and checked."""

    def refused(self, tmp_path, *packets, **kw):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [*packets, peer.reply(b"a")]}) as m:
            outcome, env = run(m, **kw)
        return outcome, env, (tmp_path / "maillog").read_text()

    def test_a_2_gb_reply_length_is_refused_before_anything_is_read(self, tmp_path):
        outcome, _, log_text = self.refused(tmp_path, struct.pack("!I", 2 ** 31) + b"b")
        assert outcome.action == "tempfail"
        assert "bad SMFIC_EOM reply packet length: 2147483648" in log_text

    def test_a_reply_just_over_the_packet_limit_is_refused(self, tmp_path):
        outcome, _, log_text = self.refused(
            tmp_path, struct.pack("!I", milter.MAX_PACKET + 1) + b"b")
        assert outcome.action == "tempfail" and "reply packet length" in log_text

    def test_a_replaced_body_beyond_message_size_limit_gets_the_default_action(self, tmp_path):
        outcome, env, log_text = self.refused(
            tmp_path, peer.replace_body(b"x" * 600), peer.replace_body(b"x" * 600),
            message_size_limit=1000)
        assert outcome.action == "tempfail" and env.body == b"line 1\nline 2\n"
        assert "replaced body exceeds message_size_limit 1000" in log_text

    def test_a_header_beyond_header_size_limit_gets_the_default_action(self, tmp_path):
        outcome, env, log_text = self.refused(
            tmp_path, peer.add_header("X-Big", "y" * 200), header_size_limit=100,
            default_action="reject")
        assert outcome.action == "reject" and env.headers[-1][0] == "Subject"
        assert "header edit exceeds header_size_limit 100" in log_text

    def test_many_small_edits_add_up_to_message_size_limit(self, tmp_path):
        outcome, _, log_text = self.refused(
            tmp_path, *[peer.add_header("X-N", "z" * 50)] * 40, message_size_limit=1000)
        assert outcome.action == "tempfail"
        assert "message edits exceed message_size_limit 1000" in log_text

    def test_the_number_of_edits_is_bounded(self, tmp_path):
        outcome, env, log_text = self.refused(
            tmp_path, *[peer.del_rcpt("nobody@example.net")] * (milter.MAX_EDITS + 1))
        assert outcome.action == "tempfail" and env.recipients == ["b@example.net"]
        assert f"too many message edits (more than {milter.MAX_EDITS})" in log_text

    @pytest.mark.parametrize("garbage", [
        peer.packet(b"y", b"hello\0"),                  # a reply code that is none
        peer.packet(b"i", b"\0\0"),                     # an insert without its index
        peer.packet(b"Z", b"\xff\xfe"),                 # an unknown response
        peer.packet(b"y"),                              # a reply code without text
    ])
    def test_garbage_gets_the_default_action_and_a_warning_never_a_traceback(
            self, tmp_path, garbage):
        outcome, _, log_text = self.refused(tmp_path, garbage)
        assert outcome.action == "tempfail"
        assert "warning: milter inet:127.0.0.1:" in log_text

    def test_a_trickling_milter_cannot_stretch_one_packet_past_the_timeout(self, tmp_path):
        # Every byte arrives well within the timeout, but the packet as a
        # whole never does: the timeout bounds the packet, not each recv().
        make_cfg(tmp_path)
        listener = socket.create_server(("127.0.0.1", 0))
        done = threading.Event()

        def trickle():
            conn, _ = listener.accept()
            with conn:
                conn.recv(100)                          # SMFIC_OPTNEG
                conn.sendall(struct.pack("!I", 1000) + b"O")
                while not done.wait(0.02):
                    try:
                        conn.sendall(b"\0")
                    except OSError:
                        return

        thread = threading.Thread(target=trickle, daemon=True)
        thread.start()
        try:
            bad = milter.Spec(f"inet:127.0.0.1:{listener.getsockname()[1]}", 5, 0.3, 0.3)
            outcome = milter.run_chain([bad], envelope(), {}, {})
        finally:
            done.set()
            listener.close()
        assert outcome.action == "tempfail"
        assert "can't read SMFIC_OPTNEG reply packet body: Connection timed out" in \
            (tmp_path / "maillog").read_text()

    def test_limits_come_from_main_cf(self, tmp_path):
        cfg = make_cfg(tmp_path, message_size_limit="5000", header_size_limit="300")
        [one] = milter.parse_milters(cfg, "inet:127.0.0.1:9")
        assert (one.message_size_limit, one.header_size_limit) == (5000, 300)


class TestSessionChain:
    """SessionChain: smtpd's milters, kept open from CONNECT to QUIT."""

    def chain(self, *milters, **kw):
        return milter.SessionChain([spec(m, **kw) for m in milters], {})

    def smtp_events(self, chain, rcpts=("b@example.net",)):
        got = [chain.event("connect", milter.connect_data(envelope()), {}),
               chain.event("helo", milter.strings("client.example"), {}),
               chain.event("mail", milter.strings("<a@example.org>"), {})]
        got += [chain.event("rcpt", milter.strings(f"<{r}>"), {}) for r in rcpts]
        return got

    def test_one_session_for_every_event_and_quit_at_close(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"E": [peer.add_header("X-A", "1"), peer.reply(b"c")]}) as m:
            chain = self.chain(m)
            assert self.smtp_events(chain) == [None] * 4
            assert chain.event("data", b"", {}) is None
            outcome, edits = chain.content(envelope(), {})
            chain.close()
            m.wait_until(lambda: b"Q" in m.commands())
        assert outcome.action == "accept"
        assert edits == [([(b"h", b"X-A\x001\x00")], False)]
        assert [c for c in m.sessions[0] if c != b"D"] == \
            [b"O", b"C", b"H", b"M", b"R", b"T", b"L", b"L", b"N", b"B", b"E", b"Q"]

    def test_rcpt_tempfail_refuses_that_recipient_and_the_message_goes_on(self, tmp_path):
        make_cfg(tmp_path)
        script = {b"R": lambda data: [peer.replycode("451 4.7.1 Greylisted")]
                  if b"grey" in data else [peer.reply(b"c")]}
        with ScriptedMilter(script=script) as m:
            chain = self.chain(m)
            got = self.smtp_events(chain, ["grey@example.net", "b@example.net"])
            outcome, _ = chain.content(envelope(), {})
            chain.close()
        assert got[:3] == [None] * 3 and got[4] is None
        assert (got[3].action, got[3].code, got[3].dsn, got[3].text, got[3].event) == \
            ("tempfail", "451", "4.7.1", "Greylisted", "RCPT")
        assert outcome.action == "accept"

    def test_abort_goes_before_the_next_transaction_and_at_close(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter() as m:
            chain = self.chain(m)
            self.smtp_events(chain)
            chain.abort()                               # RSET
            chain.event("mail", milter.strings("<c@example.org>"), {})
            chain.close()                               # QUIT inside a transaction
            m.wait_until(lambda: b"Q" in m.commands())
        assert [c for c in m.commands() if c != b"D"] == \
            [b"O", b"C", b"H", b"M", b"R", b"A", b"M", b"A", b"Q"]

    def test_accept_at_connect_ends_the_milters_session(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"C": [peer.reply(b"a")]}) as m:
            chain = self.chain(m)
            assert self.smtp_events(chain) == [None] * 4
            assert chain.content(envelope(), {})[0].action == "accept"
            chain.close()
        assert [c for c in m.commands() if c != b"D"][:2] == [b"O", b"C"]
        assert b"M" not in m.commands() and b"E" not in m.commands()

    def test_reject_at_connect(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(script={b"C": [peer.replycode("554 5.7.1 Go away")]}) as m:
            outcome = self.chain(m).event("connect", milter.connect_data(envelope()), {})
        assert (outcome.action, outcome.code, outcome.event) == ("reject", "554", "CONNECT")

    def test_failure_mid_session_gets_the_default_action_from_then_on(self, tmp_path):
        make_cfg(tmp_path)
        with ScriptedMilter(stall={b"M"}) as m:
            chain = self.chain(m, command_timeout=0.2)
            got = self.smtp_events(chain)
            chain.close()
        assert got[:2] == [None, None]
        assert [(o.action, o.code, o.event) for o in got[2:]] == \
            [("tempfail", "451", "MAIL"), ("tempfail", "451", "RCPT")]
        assert (tmp_path / "maillog").read_text().count("warning: milter ") == 1

    def test_unreachable_milter_with_accept_default_is_left_out(self, tmp_path):
        make_cfg(tmp_path)
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        name = f"inet:127.0.0.1:{port.getsockname()[1]}"
        port.close()
        chain = milter.SessionChain([milter.Spec(name, connect_timeout=1,
                                                 default_action="accept")], {})
        assert self.smtp_events(chain) == [None] * 4
        assert chain.content(envelope(), {}) == (milter.Outcome(), [])
        chain.close()
