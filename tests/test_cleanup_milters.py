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
