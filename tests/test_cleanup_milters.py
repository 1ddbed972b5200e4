"""services.cleanup.milters: cleanup runs non_smtpd_milters and applies what
they say, and applies the verdict and edits of the smtpd_milters that smtpd
ran (the milter_result attribute); driven through handle_message with a
scripted milter (tests/support/milterpeer.py)."""

import os
import struct

import pytest

from pymaster.mail import milter, queue, records
from services.smtpd.milters import encode_result
from tests.support import milterpeer as peer
from tests.support.milterpeer import ScriptedMilter
from tests.test_cleanup import SIMPLE, headers_of, maillog, make_cfg, queued, spool, submit  # noqa: F401

SMTP_ATTRS = dict(client_name="client.example", client_address="192.0.2.1",
                  client_port="4000", helo_name="helo.example", protocol="ESMTP")
LOCAL = dict(origin="pickup", context="local")


def incoming_files():
    return [f for _, _, files in os.walk("incoming") for f in files]


def from_smtpd(cfg, outcome, edits=(), leadspc=0):
    """from_smtpd - a message from smtpd whose milters ended with OUTCOME and EDITS."""
    result = encode_result(outcome, [(list(edits), leadspc)] if edits else [])
    return submit(cfg, SIMPLE, milter_result=result, **SMTP_ATTRS)


def header_edit(command, name, value, index=None):
    data = (struct.pack("!I", index) if index is not None else b"") + \
        milter.strings(name, value)
    return (command, data)


class TestOwnChain:
    def test_reject_refuses_and_queues_nothing(self, spool):
        with ScriptedMilter(script={b"E": [peer.replycode("554 5.7.1 Go away")]}) as m:
            reply, _ = submit(make_cfg(spool, non_smtpd_milters=m.name), SIMPLE, **LOCAL)
        assert (reply["status"], reply["code"], reply["dsn"], reply["reason"]) == \
            ("reject", 554, "5.7.1", "Go away")
        assert incoming_files() == []
        assert ": milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Go away; " \
               "from=<sender@example.org> to=<rcpt@example.net>" in maillog(spool)

    def test_unreachable_milter_defers(self, spool):
        cfg = make_cfg(spool, non_smtpd_milters="inet:127.0.0.1:1", milter_connect_timeout="1s")
        reply, _ = submit(cfg, SIMPLE, **LOCAL)
        assert (reply["status"], reply["dsn"], reply["reason"]) == \
            ("defer", "4.7.1", "Service unavailable - try again later")
        assert incoming_files() == []

    def test_bad_milter_list_defers_with_a_warning(self, spool):
        cfg = make_cfg(spool, non_smtpd_milters="{ inet:127.0.0.1:1, colour=red }")
        reply, _ = submit(cfg, SIMPLE, **LOCAL)
        assert reply["status"] == "defer"
        assert "milter configuration: unknown milter setting: colour" in maillog(spool)

    def test_discard(self, spool):
        with ScriptedMilter(script={b"E": [peer.reply(b"d")]}) as m:
            reply, _ = submit(make_cfg(spool, non_smtpd_milters=m.name), SIMPLE, **LOCAL)
        assert reply["status"] == "ok"
        assert incoming_files() == []
        assert f"{reply['queue_id']}: milter-discard: END-OF-MESSAGE from " in maillog(spool)

    def test_quarantine_goes_to_hold(self, spool):
        with ScriptedMilter(script={b"E": [peer.quarantine("look at me"), peer.reply(b"a")]}) as m:
            reply, _ = submit(make_cfg(spool, non_smtpd_milters=m.name), SIMPLE, **LOCAL)
        assert os.path.exists(queue.path_of("hold", reply["queue_id"]))
        assert f"{reply['queue_id']}: milter-hold: END-OF-MESSAGE from localhost" \
               "[127.0.0.1]: look at me;" in maillog(spool)

    def test_edits_reach_the_queue_file(self, spool):
        edits = [peer.insert_header(0, "DKIM-Signature", "v=1; d=example.com"),
                 peer.change_header(1, "Subject", "[tagged] hi"),
                 peer.add_rcpt("extra@example.net"), peer.del_rcpt("rcpt@example.net"),
                 peer.change_from("bounces@example.org"), peer.replace_body(b"replaced\r\n"),
                 peer.reply(b"c")]
        with ScriptedMilter(script={b"E": edits}) as m:
            reply, _ = submit(make_cfg(spool, non_smtpd_milters=m.name), SIMPLE, **LOCAL)
        msg = queued(reply)
        head, body = headers_of(msg)
        assert head.startswith("DKIM-Signature: v=1; d=example.com\nReceived: ")
        assert "\nSubject: [tagged] hi\n" in head
        assert body == "replaced\n"
        assert [r.address for r in msg.recipients] == ["extra@example.net"]
        assert msg.sender == "bounces@example.org"

    def test_milter_sees_cleanups_headers_and_the_queue_id(self, spool):
        with ScriptedMilter() as m:
            reply, _ = submit(make_cfg(spool, non_smtpd_milters=m.name), SIMPLE, **LOCAL)
        assert b"i\0" + reply["queue_id"].encode() + b"\0" in b"".join(m.data(b"D"))
        assert m.data(b"H") == [b"localhost\0"]


class TestSmtpdResult:
    """What smtpd's milters decided (services/smtpd/milters.py), applied here."""

    def test_reject_refuses_with_the_milters_reply_and_cleanups_log_line(self, spool):
        outcome = milter.Outcome("reject", "554", "5.7.1", "Go away")
        reply, _ = from_smtpd(make_cfg(spool), outcome)
        assert (reply["status"], reply["code"], reply["dsn"], reply["reason"]) == \
            ("reject", 554, "5.7.1", "Go away")
        assert incoming_files() == []
        assert ": milter-reject: END-OF-MESSAGE from client.example[192.0.2.1]: 5.7.1 Go away; " \
               "from=<sender@example.org> to=<rcpt@example.net> proto=ESMTP helo=<helo.example>" \
               in maillog(spool)

    def test_tempfail_defers(self, spool):
        outcome = milter.Outcome("tempfail", "451", "4.7.1", "Try later")
        reply, _ = from_smtpd(make_cfg(spool), outcome)
        assert (reply["status"], reply["code"], reply["dsn"]) == ("defer", 451, "4.7.1")

    def test_discard_and_hold(self, spool):
        reply, _ = from_smtpd(make_cfg(spool), milter.Outcome("discard"))
        assert reply["status"] == "ok" and incoming_files() == []
        reply, _ = from_smtpd(make_cfg(spool), milter.Outcome("hold", reason="look"))
        assert os.path.exists(queue.path_of("hold", reply["queue_id"]))
        assert f"{reply['queue_id']}: milter-hold: END-OF-MESSAGE from client.example" \
               "[192.0.2.1]: look;" in maillog(spool)

    def test_edits_apply_to_the_queue_file_in_order(self, spool):
        edits = [header_edit(b"i", "DKIM-Signature", "v=1; d=example.com", 0),
                 header_edit(b"m", "Subject", "[tagged] hi", 1),
                 header_edit(b"h", "X-Scanned", "yes"),
                 (b"+", b"<extra@example.net>\0"), (b"-", b"<rcpt@example.net>\0"),
                 (b"e", b"<bounces@example.org>\0"),
                 (b"b", b"replaced "), (b"b", b"in two\r\n")]
        reply, _ = from_smtpd(make_cfg(spool), milter.Outcome(), edits)
        msg = queued(reply)
        head, body = headers_of(msg)
        assert head.startswith("DKIM-Signature: v=1; d=example.com\nReceived: ")
        assert "\nSubject: [tagged] hi\n" in head and head.endswith("\nX-Scanned: yes")
        assert body == "replaced in two\n"
        assert [r.address for r in msg.recipients] == ["extra@example.net"]
        assert msg.sender == "bounces@example.org"

    def test_the_attribute_never_reaches_the_queue_file(self, spool):
        reply, _ = from_smtpd(make_cfg(spool), milter.Outcome())
        assert "milter_result" not in queued(reply).attrs

    def test_malformed_result_defers(self, spool):
        reply, _ = submit(make_cfg(spool), SIMPLE, milter_result="{nonsense", **SMTP_ATTRS)
        assert reply["status"] == "defer" and incoming_files() == []
        assert "malformed milter_result from smtpd" in maillog(spool)

    def test_cleanup_runs_no_smtpd_milters_itself(self, spool):
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        assert reply["status"] == "ok" and m.commands() == []


class TestWhichMilters:
    def test_local_submission_gets_non_smtpd_milters_as_localhost(self, spool):
        with ScriptedMilter() as m, ScriptedMilter() as other:
            cfg = make_cfg(spool, smtpd_milters=other.name, non_smtpd_milters=m.name)
            submit(cfg, SIMPLE, **LOCAL)
        assert m.data(b"C")[0].startswith(b"localhost\x004")
        assert other.commands() == []

    @pytest.mark.parametrize("origin,values", [
        ("bounce", {}), ("local", {}),
        ("pickup", {"receive_override_options": "no_milters"})])
    def test_no_milters(self, spool, origin, values):
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as m:
            cfg = make_cfg(spool, smtpd_milters=m.name, non_smtpd_milters=m.name, **values)
            reply, _ = submit(cfg, SIMPLE, origin=origin)
        assert reply["status"] == "ok" and m.commands() == []

    def test_bounces_when_internal_mail_filter_classes_says_so(self, spool):
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as m:
            cfg = make_cfg(spool, non_smtpd_milters=m.name, internal_mail_filter_classes="bounce")
            reply, _ = submit(cfg, SIMPLE, origin="bounce")
        assert reply["status"] == "reject"


MILTER_RULES = r"""/^X-Spam-Flag: *YES/ REJECT 5.7.1 spam says the milter
/^X-Spam-Flag: *MAYBE/ HOLD suspicious
/^X-Spam-Flag: *LATER/ REJECT 4.7.1 try later
/^X-Quarantine:/ DISCARD
/^X-Route: *sanitizer/ FILTER smtp:[sanitizer.example]:25
/^X-Route: *postmaster/ REDIRECT postmaster@example.com
/^X-Route: *bad-filter/ FILTER nocolon
/^X-Copy:/ BCC archive@example.com
/^X-Note:/ WARN looked at it
/^X-Drop:/ IGNORE
/^X-Old:/ REPLACE X-New: replaced
/^X-Front:/ PREPEND X-Before: no
"""


class TestMilterHeaderChecks:
    """milter_header_checks: the headers milters add, insert or change, looked up
    before the edit applies (services/cleanup/milter_checks.py)."""

    @pytest.fixture
    def cfg(self, spool):
        return checks_cfg(spool, MILTER_RULES)

    def run(self, cfg, *edits):
        """run - a pickup message through a non_smtpd_milter that sends EDITS."""
        with ScriptedMilter(script={b"E": [*edits, peer.reply(b"c")]}) as m:
            cfg.values["non_smtpd_milters"] = m.name
            reply, _ = submit(cfg, SIMPLE, **LOCAL)
        return reply

    def test_an_added_header_a_pattern_rejects_refuses_the_message(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Spam-Flag", "YES"))
        assert (reply["status"], reply["dsn"], reply["reason"]) == \
            ("reject", "5.7.1", "spam says the milter")
        assert incoming_files() == []
        assert ": milter-header-reject: header X-Spam-Flag: YES from localhost[127.0.0.1]; " \
               "from=<sender@example.org> to=<rcpt@example.net>: 5.7.1 spam says the milter" \
               in maillog(spool)

    def test_a_4xx_reject_defers(self, cfg):
        reply = self.run(cfg, peer.add_header("X-Spam-Flag", "LATER"))
        assert (reply["status"], reply["dsn"], reply["reason"]) == \
            ("defer", "4.7.1", "try later")

    def test_an_inserted_header_a_pattern_holds_goes_to_hold(self, cfg, spool):
        reply = self.run(cfg, peer.insert_header(0, "X-Spam-Flag", "MAYBE"))
        assert os.path.exists(queue.path_of("hold", reply["queue_id"]))
        head, _ = headers_of(queued_in("hold", reply))
        assert head.startswith("X-Spam-Flag: MAYBE\n")
        assert f"{reply['queue_id']}: milter-header-hold: header X-Spam-Flag: MAYBE from " \
               "localhost[127.0.0.1]; from=<sender@example.org> to=<rcpt@example.net>: " \
               "suspicious" in maillog(spool)

    def test_a_changed_header_is_checked_too(self, cfg):
        reply = self.run(cfg, peer.change_header(1, "Subject", "x"),
                         peer.change_header(1, "X-Spam-Flag", "YES"))
        assert reply["status"] == "reject"

    def test_discard(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Quarantine", "1"))
        assert reply["status"] == "ok" and incoming_files() == []
        assert f"{reply['queue_id']}: milter-header-discard: header X-Quarantine: 1 " \
               in maillog(spool)

    def test_filter_sets_the_content_filter(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Route", "sanitizer"))
        assert queued(reply).attrs["content_filter"] == "smtp:[sanitizer.example]:25"
        assert "milter-header-filter: header X-Route: sanitizer from localhost[127.0.0.1]; " \
               "from=<sender@example.org> to=<rcpt@example.net>: smtp:[sanitizer.example]:25" \
               in maillog(spool)

    def test_a_filter_without_transport_is_a_warning(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Route", "bad-filter"))
        assert "content_filter" not in queued(reply).attrs
        assert "bad FILTER command 'nocolon' in milter_header_checks" in maillog(spool)

    def test_redirect_and_bcc(self, cfg):
        reply = self.run(cfg, peer.add_header("X-Route", "postmaster"),
                         peer.add_header("X-Copy", "1"))
        assert [r.address for r in queued(reply).recipients] == \
            ["postmaster@example.com", "archive@example.com"]

    def test_warn_logs_and_keeps_the_header(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Note", "hello"))
        head, _ = headers_of(queued(reply))
        assert head.endswith("\nX-Note: hello")
        assert "milter-header-warning: header X-Note: hello from localhost[127.0.0.1]; " \
               "from=<sender@example.org> to=<rcpt@example.net>: looked at it" in maillog(spool)

    def test_ignore_drops_the_edit_and_replace_rewrites_it(self, cfg):
        reply = self.run(cfg, peer.add_header("X-Drop", "1"), peer.add_header("X-Old", "1"),
                         peer.change_header(1, "Subject", "edited"),
                         peer.change_header(1, "X-Drop", "2"))
        head, _ = headers_of(queued(reply))
        assert "X-Drop" not in head and "X-Old" not in head
        assert head.endswith("\nX-New: replaced") and "\nSubject: edited\n" in head

    def test_prepend_is_not_implemented(self, cfg, spool):
        reply = self.run(cfg, peer.add_header("X-Front", "1"))
        head, _ = headers_of(queued(reply))
        assert "X-Before" not in head and head.endswith("\nX-Front: 1")
        assert "PREPEND is not implemented for milter_header_checks" in maillog(spool)

    def test_the_messages_own_headers_are_not_looked_up(self, spool):
        cfg = checks_cfg(spool, "/^Subject:/ REJECT\n")
        assert self.run(cfg, peer.add_header("X-Other", "1"))["status"] == "ok"

    def test_smtpd_milters_edits_are_checked_in_cleanup(self, cfg, spool):
        reply, _ = from_smtpd(cfg, milter.Outcome(), [header_edit(b"h", "X-Spam-Flag", "MAYBE")])
        assert os.path.exists(queue.path_of("hold", reply["queue_id"]))
        assert f"{reply['queue_id']}: milter-header-hold: header X-Spam-Flag: MAYBE from " \
               "client.example[192.0.2.1]; from=<sender@example.org> to=<rcpt@example.net> " \
               "proto=ESMTP helo=<helo.example>: suspicious" in maillog(spool)


def checks_cfg(spool, rules):
    """checks_cfg - a configuration whose milter_header_checks table holds RULES."""
    table = spool / "milter_header_checks"
    table.write_text(rules)
    return make_cfg(spool, milter_header_checks=f"regexp:{table}")


def queued_in(where, reply):
    return records.read_message(queue.path_of(where, reply["queue_id"]))
