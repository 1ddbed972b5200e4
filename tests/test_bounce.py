"""The bounce service and its notices: RFC 3464 reports from a queue file and a status log.

Each test builds a spool in tmp_path, queues a message with pymaster's own
writer, records outcomes with pymaster.mail.delivery (the agents' library), then
asks the BounceServer for a notice. cleanup is replaced by a list that
collects what would be queued, so a test reads the notice back with
Python's `email` package, field by field."""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import threading
import time
from dataclasses import dataclass

import pytest

from pymaster.mail import delivery, dsn, queue, records
from pymaster.mail.bounce_template import (DEFAULT_TEMPLATES, TemplateError, load_templates,
                                      parse_template_file)
from pymaster.mail.config import load_config
from services.bounce import BounceServer, SubmitError
from tests.support.queue_fixtures import make_spool

BODY = b"Subject: hello\nFrom: sender@example.com\nMessage-Id: <m1@example.com>\n\nHi there\n"


@dataclass
class Queued:
    sender: str
    recipient: str
    message: email.message.EmailMessage
    content: bytes

    def raw_header(self, name: str) -> str:
        """raw_header - a top-level header as written (comments kept)."""
        return email.message_from_bytes(self.content, policy=email.policy.compat32)[name]


class Collector:
    """Stands in for cleanup: keeps every notice, numbers them NEW1, NEW2 …"""

    def __init__(self) -> None:
        self.queued: list[Queued] = []
        self.fail = False

    def __call__(self, sender: str, recipient: str, content: bytes) -> str:
        if self.fail:
            raise SubmitError("cleanup is down")
        msg = email.message_from_bytes(content, policy=email.policy.default)
        self.queued.append(Queued(sender, recipient, msg, content))
        return f"NEW{len(self.queued)}"


@pytest.fixture
def spool(tmp_path, monkeypatch):
    return make_spool(tmp_path, monkeypatch, "myhostname = mx.example.com\n")


@pytest.fixture
def logged(monkeypatch):
    lines: list[str] = []
    from pymaster.util import log
    monkeypatch.setattr(log, "info", lambda text: lines.append(text))
    monkeypatch.setattr(log, "warning", lambda text: lines.append("warning: " + text))
    return lines


def config(tmp_path, extra: str = ""):
    path = tmp_path / "etc" / "main.cf"
    path.write_text(path.read_text() + extra)
    return load_config(str(tmp_path / "etc"))


def queue_message(rcpts, sender="sender@example.com", content=BODY, attrs=None) -> str:
    """queue_message - an active queue file; RCPTS are Recipient objects."""
    w = queue.create("incoming")
    w.write_envelope(1795900000.0, sender, rcpts, attrs or {})
    w.write_content([content])
    queue_id = w.commit()
    queue.move(queue_id, "incoming", "active")
    return queue_id


def record(queue_id: str, outcome: str, reason: str, dsn_code: str, relay="none",
           transport="error") -> list[records.Recipient]:
    """record - every pending recipient gets OUTCOME, as an agent would log it."""
    msg = records.read_message(queue.path_of("active", queue_id))
    req = delivery.DeliveryRequest(queue_id=queue_id, path=msg.path, transport=transport,
                                   nexthop="", sender=msg.sender, recipients=msg.pending(),
                                   arrival_time=msg.arrival_time)
    status = delivery.Status(req)
    for r in msg.pending():
        getattr(status, outcome)(r, relay, reason, dsn_code)
    return msg.recipients


def request(op: str, queue_id: str) -> dict:
    return {"op": op, "queue_id": queue_id, "queue_name": "active",
            "path": queue.path_of("active", queue_id)}


def server(cfg) -> tuple[BounceServer, Collector]:
    sink = Collector()
    return BounceServer(cfg, submit=sink), sink


def parts(msg) -> list:
    return list(msg.iter_parts())


def report_fields(msg) -> list[dict]:
    """report_fields - the per-message block, then one dict per recipient."""
    report = parts(msg)[1]
    assert report.get_content_type() == "message/delivery-status"
    return [dict(block.items()) for block in report.get_payload()]


def rcpt(address, **kw) -> records.Recipient:
    return records.Recipient(address, orig=kw.pop("orig", address), **kw)


class TestNonDeliveryNotice:
    def test_is_an_rfc3464_report_to_the_sender_from_the_null_sender(self, spool, logged):
        qid = queue_message([rcpt("nobody@nobody.example")])
        record(qid, "bounced", "no such user", "5.1.1")
        srv, sink = server(spool)
        assert srv.handle(request("bounce", qid), [])[0] == {"status": "ok"}
        (out,) = sink.queued
        assert (out.sender, out.recipient) == ("", "sender@example.com")
        msg = out.message
        assert msg.get_content_type() == "multipart/report"
        assert msg.get_param("report-type") == "delivery-status"
        assert out.raw_header("From") == "MAILER-DAEMON@mx.example.com (Mail Delivery System)"
        assert msg["Subject"] == "Undelivered Mail Returned to Sender"
        assert msg["To"] == "sender@example.com"
        assert msg["Auto-Submitted"] == "auto-replied"
        assert [p.get_content_type() for p in parts(msg)] == [
            "text/plain", "message/delivery-status", "message/rfc822"]
        assert f"{qid}: sender non-delivery notification: NEW1" in logged

    def test_human_readable_part_uses_postfix_wording(self, spool, logged):
        qid = queue_message([rcpt("nobody@nobody.example")])
        record(qid, "bounced", "no such user", "5.1.1")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        text = parts(sink.queued[0].message)[0].get_content()
        assert text.startswith("This is the mail system at host mx.example.com.\n")
        assert "I'm sorry to have to inform you that your message could not\n" \
               "be delivered to one or more recipients. It's attached below." in text
        assert "The mail system" in text
        assert "<nobody@nobody.example>: no such user" in text

    def test_delivery_status_fields(self, spool, logged):
        qid = queue_message([rcpt("nobody@nobody.example", orig="Alias@nobody.example")])
        record(qid, "bounced", "no such user", "5.1.1")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        per_message, per_rcpt = report_fields(sink.queued[0].message)
        assert per_message["Reporting-MTA"] == "dns; mx.example.com"
        assert per_message["X-Postfix-Queue-ID"] == qid
        assert per_message["X-Postfix-Sender"] == "rfc822; sender@example.com"
        assert email.utils.parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() \
            == 1795900000
        assert per_rcpt["Final-Recipient"] == "rfc822; nobody@nobody.example"
        assert per_rcpt["Original-Recipient"] == "rfc822;Alias@nobody.example"
        assert per_rcpt["Action"] == "failed"
        assert per_rcpt["Status"] == "5.1.1"
        assert per_rcpt["Diagnostic-Code"] == "X-Postfix; no such user"
        text = parts(sink.queued[0].message)[0].get_content()
        assert "<nobody@nobody.example> (expanded from <Alias@nobody.example>): " \
               "no such user" in text

    def test_remote_smtp_reply_gives_remote_mta_and_smtp_diagnostic(self, spool, logged):
        qid = queue_message([rcpt("u@remote.example")])
        record(qid, "bounced", "host mx.remote.example[192.0.2.1] said: 550 5.1.1 "
               "<u@remote.example>: unknown user (in reply to RCPT TO command)", "5.1.1",
               relay="mx.remote.example[192.0.2.1]:25", transport="smtp")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        _, per_rcpt = report_fields(sink.queued[0].message)
        assert per_rcpt["Remote-MTA"] == "dns; mx.remote.example"
        assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 <u@remote.example>: unknown user"

    def test_orcpt_and_envid_are_reported_decoded(self, spool, logged):
        qid = queue_message([rcpt("a@b.example", orcpt="rfc822;first+2Bx@b.example")],
                            attrs={"envid": "QQ+3D1"})
        record(qid, "bounced", "no", "5.0.0")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        per_message, per_rcpt = report_fields(sink.queued[0].message)
        assert per_message["Original-Envelope-Id"] == "QQ=1"
        assert per_rcpt["Original-Recipient"] == "rfc822;first+x@b.example"

    def test_returns_the_whole_original_message(self, spool, logged):
        qid = queue_message([rcpt("x@y.example")])
        record(qid, "bounced", "no", "5.0.0")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        original = parts(sink.queued[0].message)[2]
        assert original["Content-Description"] == "Undelivered Message"
        inner = original.get_payload()[0]
        assert inner["Subject"] == "hello"
        assert inner.get_content() == "Hi there\n"

    def test_ret_hdrs_returns_headers_only(self, spool, logged):
        qid = queue_message([rcpt("x@y.example")], attrs={"ret": "HDRS"})
        record(qid, "bounced", "no", "5.0.0")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        original = parts(sink.queued[0].message)[2]
        assert original.get_content_type() == "text/rfc822-headers"
        returned = original.get_payload()
        assert "Subject: hello" in returned and "Hi there" not in returned

    def test_a_message_over_bounce_size_limit_is_returned_as_headers(self, tmp_path, spool,
                                                                     logged):
        cfg = config(tmp_path, "bounce_size_limit = 200\n")
        qid = queue_message([rcpt("x@y.example")], content=BODY + b"x" * 500 + b"\n")
        record(qid, "bounced", "no", "5.0.0")
        srv, sink = server(cfg)
        srv.handle(request("bounce", qid), [])
        original = parts(sink.queued[0].message)[2]
        assert original.get_content_type() == "text/rfc822-headers"
        assert "xxxxx" not in original.get_payload()

    def test_several_recipients_one_notice(self, spool, logged):
        qid = queue_message([rcpt("a@x.example"), rcpt("b@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        (out,) = sink.queued
        finals = [f["Final-Recipient"] for f in report_fields(out.message)[1:]]
        assert finals == ["rfc822; a@x.example", "rfc822; b@x.example"]

    def test_the_bounce_log_is_removed_once_the_notice_is_queued(self, spool, logged):
        qid = queue_message([rcpt("a@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, _ = server(spool)
        srv.handle(request("bounce", qid), [])
        assert not os.path.exists(queue.bounce_log_path(qid))

    def test_a_request_sent_again_while_the_first_waits_on_cleanup_sends_no_second_notice(
            self, spool, logged):
        """qmgr gives up on a request after ipc_timeout and asks again; the
        first may still be waiting for cleanup (throttled, say), and both
        end up served."""
        qid = queue_message([rcpt("a@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(spool)
        waiting, cleanup_back = threading.Event(), threading.Event()
        submit = srv.submit

        def slow_submit(sender, recipient, content):
            waiting.set()
            cleanup_back.wait(20)
            return submit(sender, recipient, content)
        srv.submit = slow_submit
        replies: list[dict] = []
        flushes = [threading.Thread(target=lambda: replies.append(
            srv.handle(request("bounce", qid), [])[0])) for _ in range(2)]
        flushes[0].start()
        assert waiting.wait(20)                 # the first waits on cleanup
        flushes[1].start()
        time.sleep(0.2)                         # the second has read the log, or waits to
        cleanup_back.set()
        for flush in flushes:
            flush.join(20)
        assert [r["status"] for r in replies] == ["ok", "ok"]
        assert len(sink.queued) == 1
        assert not os.path.exists(queue.bounce_log_path(qid))

    def test_cleanup_failure_keeps_the_log_and_asks_qmgr_to_retry(self, spool, logged):
        qid = queue_message([rcpt("a@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(spool)
        sink.fail = True
        reply, _ = srv.handle(request("bounce", qid), [])
        assert reply["status"] == "defer"
        assert dsn.read_log(queue.bounce_log_path(qid))


class TestNotify:
    def test_notify_never_gives_no_notice(self, spool, logged):
        qid = queue_message([rcpt("a@x.example", notify="NEVER")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(spool)
        assert srv.handle(request("bounce", qid), [])[0]["status"] == "ok"
        assert sink.queued == []

    def test_only_recipients_asking_for_failure_are_reported(self, spool, logged):
        qid = queue_message([rcpt("a@x.example", notify="SUCCESS"),
                             rcpt("b@x.example", notify="FAILURE,DELAY"),
                             rcpt("c@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(spool)
        srv.handle(request("bounce", qid), [])
        finals = [f["Final-Recipient"] for f in report_fields(sink.queued[0].message)[1:]]
        assert finals == ["rfc822; b@x.example", "rfc822; c@x.example"]


class TestDoubleBounces:
    def test_a_null_sender_bounce_goes_to_the_postmaster_once(self, tmp_path, spool, logged):
        cfg = config(tmp_path, "notify_classes = resource, software, 2bounce\n")
        qid = queue_message([rcpt("someone@gone.example")], sender="")
        record(qid, "bounced", "no such user", "5.1.1")
        srv, sink = server(cfg)
        srv.handle(request("bounce", qid), [])
        (out,) = sink.queued
        assert (out.sender, out.recipient) == ("double-bounce@mx.example.com", "postmaster")
        assert out.message["Subject"] == "Postmaster Copy: Undelivered Mail"
        assert f"{qid}: postmaster non-delivery notification: NEW1" in logged
        text = parts(out.message)[0].get_content()
        assert "I'm sorry" not in text and "<someone@gone.example>: no such user" in text

    def test_without_2bounce_in_notify_classes_a_failed_bounce_is_dropped(self, spool,
                                                                          logged):
        qid = queue_message([rcpt("someone@gone.example")], sender="")
        record(qid, "bounced", "no such user", "5.1.1")
        srv, sink = server(spool)
        assert srv.handle(request("bounce", qid), [])[0]["status"] == "ok"
        assert sink.queued == []

    def test_a_failed_postmaster_notice_is_discarded_with_a_warning(self, tmp_path, spool,
                                                                    logged):
        cfg = config(tmp_path, "notify_classes = 2bounce\n")
        qid = queue_message([rcpt("postmaster@mx.example.com")],
                            sender="double-bounce@mx.example.com")
        record(qid, "bounced", "mailbox full", "5.2.2")
        srv, sink = server(cfg)
        assert srv.handle(request("bounce", qid), [])[0]["status"] == "ok"
        assert sink.queued == []
        assert f"warning: {qid}: undeliverable postmaster notification discarded" in logged

    def test_notify_classes_bounce_sends_the_postmaster_a_headers_only_copy(
            self, tmp_path, spool, logged):
        cfg = config(tmp_path, "notify_classes = bounce\nbounce_notice_recipient = pm\n")
        qid = queue_message([rcpt("a@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(cfg)
        srv.handle(request("bounce", qid), [])
        to_sender, to_pm = sink.queued
        assert to_sender.recipient == "sender@example.com"
        assert (to_pm.sender, to_pm.recipient) == ("double-bounce@mx.example.com", "pm")
        assert to_pm.message["Subject"] == "Postmaster Copy: Undelivered Mail"
        assert parts(to_pm.message)[2].get_content_type() == "text/rfc822-headers"
        assert f"{qid}: postmaster non-delivery notification: NEW2" in logged


class TestDelayAndSuccess:
    def test_delay_warning_lists_deferred_recipients(self, tmp_path, spool, logged):
        cfg = config(tmp_path, "delay_warning_time = 4h\n")
        qid = queue_message([rcpt("slow@x.example"), rcpt("fine@x.example")])
        path = queue.path_of("active", qid)
        msg = records.read_message(path)
        req = delivery.DeliveryRequest(queue_id=qid, path=path, transport="smtp", nexthop="",
                                       sender=msg.sender, recipients=msg.recipients)
        status = delivery.Status(req)
        status.deferred(msg.recipients[0], "none", "connection timed out", "4.4.1")
        status.sent(msg.recipients[1], "local", "delivered to maildir")
        srv, sink = server(cfg)
        assert srv.handle(request("delay", qid), [])[0]["status"] == "ok"
        (out,) = sink.queued
        assert out.message["Subject"] == "Delayed Mail (still being retried)"
        text = parts(out.message)[0].get_content()
        assert "could not be delivered for more than 4 hour(s)" in text
        assert "It will be retried until it is 5 day(s) old." in text
        _, per_rcpt = report_fields(out.message)
        assert per_rcpt["Action"] == "delayed"
        assert per_rcpt["Status"] == "4.4.1"
        assert "Will-Retry-Until" in per_rcpt
        assert parts(out.message)[2].get_content_type() == "text/rfc822-headers"
        assert f"{qid}: sender delay notification: NEW1" in logged
        assert dsn.delay_warning_sent(qid)

    def test_delay_warning_is_due_once(self, tmp_path, spool):
        cfg = config(tmp_path, "delay_warning_time = 1h\n")
        qid = queue_message([rcpt("a@x.example")])
        assert not dsn.delay_warning_due(cfg, qid, "s@x", 1000.0, 1000.0 + 3599)
        assert dsn.delay_warning_due(cfg, qid, "s@x", 1000.0, 1000.0 + 3600)
        dsn.note_delay_warning(qid)
        assert not dsn.delay_warning_due(cfg, qid, "s@x", 1000.0, 1000.0 + 7200)

    def test_no_delay_warnings_by_default(self, spool):
        qid = queue_message([rcpt("a@x.example")])
        assert not dsn.delay_warning_due(spool, qid, "s@x", 0.0, 1e10)

    def test_success_notice_for_notify_success(self, spool, logged):
        qid = queue_message([rcpt("a@x.example", notify="SUCCESS"), rcpt("b@x.example")])
        path = queue.path_of("active", qid)
        msg = records.read_message(path)
        req = delivery.DeliveryRequest(queue_id=qid, path=path, transport="local", nexthop="",
                                       sender=msg.sender, recipients=msg.recipients)
        status = delivery.Status(req)
        for r in msg.recipients:
            status.sent(r, "local", "delivered to maildir")
        srv, sink = server(spool)
        assert srv.handle(request("trace", qid), [])[0]["status"] == "ok"
        (out,) = sink.queued
        assert out.message["Subject"] == "Successful Mail Delivery Report"
        per_message, per_rcpt = report_fields(out.message)
        assert per_rcpt["Final-Recipient"] == "rfc822; a@x.example"
        assert per_rcpt["Action"] == "delivered"
        assert per_rcpt["Status"] == "2.0.0"
        text = parts(out.message)[0].get_content()
        assert "<a@x.example>: delivery via local: delivered to maildir" in text
        assert f"{qid}: sender delivery status notification: NEW1" in logged

    def test_sendmail_v_report_covers_every_recipient_with_verify_template(self, spool, logged):
        qid = queue_message([rcpt("a@x.example"), rcpt("b@y.example")],
                            attrs={"trace_flags": "record"})
        trace = queue.trace_log_path(qid)
        delivery.append_status_log(trace, {"recipient": "a@x.example", "offset": 1,
                                           "status": "2.0.0", "action": "delivered",
                                           "reason": "delivered to maildir",
                                           "relay": "virtual"})
        delivery.append_status_log(trace, {"recipient": "b@y.example", "offset": 2,
                                           "status": "5.1.1", "action": "failed",
                                           "reason": "no such user", "relay": "none"})
        srv, sink = server(spool)
        srv.handle(request("trace", qid), [])
        (out,) = sink.queued
        assert out.message["Subject"] == "Mail Delivery Status Report"
        text = parts(out.message)[0].get_content()
        assert "Enclosed is the mail delivery report that you requested." in text
        assert "<a@x.example>: delivery via virtual: delivered to maildir" in text
        assert "<b@y.example>: no such user" in text
        actions = [f["Action"] for f in report_fields(out.message)[1:]]
        assert actions == ["delivered", "failed"]
        assert not os.path.exists(trace)


TEMPLATE_FILE = """\
# site templates
failure_template = <<EOF
Charset: us-ascii
From: bounces (Bounce Robot)
Subject: Could not deliver
Postmaster-Subject: PM copy

Hello from $myhostname, cost $$5.
Gave up after $maximal_queue_lifetime_days days.
EOF
"""


class TestTemplates:
    def test_defaults_exist_for_every_kind(self):
        assert set(DEFAULT_TEMPLATES) == {"failure_template", "delay_template",
                                          "success_template", "verify_template"}

    def test_template_file_replaces_headers_and_text(self, tmp_path, spool, logged):
        (tmp_path / "bounce.cf").write_text(TEMPLATE_FILE)
        cfg = config(tmp_path, f"bounce_template_file = {tmp_path / 'bounce.cf'}\n")
        qid = queue_message([rcpt("a@x.example")])
        record(qid, "bounced", "no", "5.1.1")
        srv, sink = server(cfg)
        srv.handle(request("bounce", qid), [])
        msg = sink.queued[0].message
        assert sink.queued[0].raw_header("From") == "bounces@mx.example.com (Bounce Robot)"
        assert msg["Subject"] == "Could not deliver"
        text = parts(msg)[0].get_content()
        assert text.startswith("Hello from mx.example.com, cost $5.\n"
                               "Gave up after 5 days.\n")

    def test_unknown_template_name_names_file_and_line(self, tmp_path):
        (tmp_path / "t.cf").write_text("\n\nbogus_template = <<EOF\nx\nEOF\n")
        with pytest.raises(TemplateError, match=r"t\.cf, line 3: unknown template name"):
            parse_template_file(str(tmp_path / "t.cf"))

    def test_missing_terminator_is_an_error(self, tmp_path):
        (tmp_path / "t.cf").write_text("delay_template = <<END\nSubject: x\n\ntext\n")
        with pytest.raises(TemplateError, match="missing terminator"):
            parse_template_file(str(tmp_path / "t.cf"))

    def test_unknown_parameter_is_reported_at_load(self, tmp_path, spool):
        (tmp_path / "t.cf").write_text("success_template = <<EOF\n\n$no_such_thing\nEOF\n")
        cfg = config(tmp_path, f"bounce_template_file = {tmp_path / 't.cf'}\n")
        with pytest.raises(TemplateError, match="no_such_thing"):
            load_templates(cfg)
