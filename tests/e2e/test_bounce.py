"""Delivery status notifications end to end: the real master, smtpd, cleanup,
qmgr, error, bounce and virtual services.

A recipient in nobody.example is routed to the error agent (transport_maps
`inline:`), which bounces it; qmgr asks the bounce service for a notice, the
bounce service submits it to cleanup, and the virtual agent delivers it to
the sender's Maildir under the in-tree virtual domain `localhost`. The tests
read the notice back with Python's `email` package.
"""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.support.dsnreport import parse
from tests.support.instance import ROOT, Instance

pytestmark = pytest.mark.skipif(
    not all((ROOT / "libexec" / name).exists() for name in ("smtpd", "bounce", "virtual")),
    reason="needs the smtpd, bounce and virtual services")

SETTINGS = {
    "myhostname": "mx.example.com",
    "transport_maps": ("inline:{ { nobody.example = error:5.1.1 no such user }, "
                       "{ slow.example = retry:4.4.1 connection timed out } }"),
    "queue_run_delay": "1s", "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
    # smtpd refuses error-transport recipients at RCPT (as Postfix) unless told not to.
    "smtpd_reject_unlisted_recipient": "no",
}
MESSAGE = ("From: sender@localhost\r\nTo: nobody@nobody.example\r\n"
           "Subject: will bounce\r\nMessage-ID: <bounce-e2e@localhost>\r\n\r\nhello\r\n")


def send(inst: Instance, sender: str, rcpt: str, rcpt_options=()) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
        s.ehlo("client.example")
        s.sendmail(sender, [rcpt], MESSAGE, rcpt_options=list(rcpt_options))


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    """One instance for the tests that need only SETTINGS: each uses its own
    sender (its own Maildir) and reads only its own message's log lines."""
    with Instance(tmp_path_factory.mktemp("bounce"), main_cf=SETTINGS) as instance:
        yield instance


def maildir(inst: Instance, user: str):
    return inst.mailbox_dir / "localhost" / user


def test_a_bounce_reaches_the_senders_maildir_as_an_rfc3464_report(inst):
    send(inst, "sender@localhost", "nobody@nobody.example")
    [raw] = inst.maildir_messages(maildir(inst, "sender"))
    msg = parse(raw)
    original_id = dict(list(msg.iter_parts())[1].get_payload()[0].items())["X-Postfix-Queue-ID"]
    m = inst.wait_for_log(rf"{original_id}: sender non-delivery notification: (\w+)")
    inst.wait_for_log(rf"{original_id}: removed")
    inst.wait_for_log(rf"{m.group(1)}: from=<>")
    assert msg["Return-Path"] in (None, "<>")
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg.get_content_type() == "multipart/report"
    text, report, original = msg.iter_parts()
    assert "This is the mail system at host mx.example.com." in text.get_content()
    assert "<nobody@nobody.example>: no such user" in text.get_content()
    per_message, per_rcpt = (dict(b.items()) for b in report.get_payload())
    assert per_message["Reporting-MTA"] == "dns; mx.example.com"
    assert per_message["X-Postfix-Queue-ID"] == original_id
    assert per_rcpt["Final-Recipient"] == "rfc822; nobody@nobody.example"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Subject"] == "will bounce"


def test_notify_never_suppresses_the_notice(inst):
    send(inst, "never@localhost", "never@nobody.example", ["NOTIFY=NEVER"])
    m = inst.wait_for_log(r"(\w+): to=<never@nobody\.example>.*status=bounced")
    inst.wait_for_log(rf"{m.group(1)}: removed")
    assert f"{m.group(1)}: sender non-delivery notification" not in inst.log_text()
    new = maildir(inst, "never") / "new"
    assert not new.exists() or not list(new.iterdir())


def test_a_bounce_of_a_null_sender_message_goes_to_the_postmaster_once(tmp_path):
    settings = dict(SETTINGS, notify_classes="resource, software, 2bounce",
                    **{"2bounce_notice_recipient": "postmaster@localhost"})
    with Instance(tmp_path, main_cf=settings) as inst:
        send(inst, "", "nobody@nobody.example")
        m = inst.wait_for_log(r"(\w+): postmaster non-delivery notification: (\w+)")
        [raw] = inst.maildir_messages(inst.mailbox_dir / "localhost" / "postmaster")
        inst.wait_for_log(rf"{m.group(2)}: removed")
        time.sleep(0.5)     # room for a wrong second notice to show up
        log = inst.log_text()
    assert log.count("non-delivery notification") == 1
    msg = parse(raw)
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert "<nobody@nobody.example>: no such user" in next(msg.iter_parts()).get_content()


def test_an_undeliverable_postmaster_notice_is_discarded(tmp_path):
    settings = dict(SETTINGS, notify_classes="2bounce",
                    **{"2bounce_notice_recipient": "pm@nobody.example"})
    with Instance(tmp_path, main_cf=settings) as inst:
        send(inst, "", "nobody@nobody.example")
        m = inst.wait_for_log(r"(\w+): postmaster non-delivery notification: (\w+)")
        notice_id = m.group(2)
        inst.wait_for_log(rf"warning: {notice_id}: undeliverable postmaster "
                          rf"notification discarded")
        inst.wait_for_log(rf"{notice_id}: removed")
        log = inst.log_text()
    assert log.count("non-delivery notification") == 1


def test_notify_success_gives_a_delivery_report(inst):
    send(inst, "happy@localhost", "friend@localhost", ["NOTIFY=SUCCESS"])
    [raw] = inst.maildir_messages(maildir(inst, "happy"))
    msg = parse(raw)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    _, report, _ = msg.iter_parts()
    per_rcpt = dict(report.get_payload()[1].items())
    assert per_rcpt["Final-Recipient"] == "rfc822; friend@localhost"
    assert per_rcpt["Action"] == "delivered"
    assert per_rcpt["Status"] == "2.0.0"


def test_delay_warning_is_sent_once_after_delay_warning_time(tmp_path):
    settings = dict(SETTINGS, delay_warning_time="1s")
    with Instance(tmp_path, main_cf=settings) as inst:
        send(inst, "sender@localhost", "someone@slow.example")
        m = inst.wait_for_log(r"(\w+): sender delay notification: (\w+)", timeout=30)
        [raw] = inst.maildir_messages(inst.mailbox_dir / "localhost" / "sender")
        # Another retry of the same message, and still one warning.
        inst.wait_for_log(rf"{m.group(1)}: to=<someone@slow\.example>.*status=deferred",
                          count=3, timeout=30)
        log = inst.log_text()
    assert log.count("sender delay notification") == 1
    msg = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    _, report, headers = msg.iter_parts()
    per_rcpt = dict(report.get_payload()[1].items())
    assert (per_rcpt["Action"], per_rcpt["Status"]) == ("delayed", "4.4.1")
    assert headers.get_content_type() == "text/rfc822-headers"


def test_bounced_recipients_are_reported_while_others_stay_deferred(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
        s.sendmail("mixed@localhost", ["gone@nobody.example", "x@slow.example"], MESSAGE)
    m = inst.wait_for_log(r"(\w+): to=<x@slow\.example>.*status=deferred")
    queue_id = m.group(1)
    inst.wait_for_log(rf"{queue_id}: sender non-delivery notification: ")
    [raw] = inst.maildir_messages(maildir(inst, "mixed"))
    # The message lives on for its deferred recipient, and is retried,
    # without a second notice about the bounced one.
    inst.wait_for_log(rf"{queue_id}: to=<x@slow\.example>.*status=deferred", count=2)
    log = inst.log_text()
    assert log.count(f"{queue_id}: sender non-delivery notification") == 1
    assert f"{queue_id}: removed" not in log
    per_rcpt = [dict(b.items()) for b in list(parse(raw).iter_parts())[1].get_payload()][1:]
    assert [f["Final-Recipient"] for f in per_rcpt] == ["rfc822; gone@nobody.example"]


def test_sendmail_v_mails_a_report_of_the_first_delivery_attempt(inst):
    done = inst.command("sendmail", "-v", "-f", "verbose@localhost",
                        "pal@localhost", "gone@nobody.example",
                        input="Subject: report please\n\nhello\n")
    assert done.returncode == 0, done.stderr
    messages = inst.maildir_messages(maildir(inst, "verbose"), count=2)
    by_subject = {parse(raw)["Subject"]: parse(raw) for raw in messages}
    report = by_subject["Mail Delivery Status Report"]
    assert "Undelivered Mail Returned to Sender" in by_subject
    fields = [dict(b.items()) for b in list(report.iter_parts())[1].get_payload()][1:]
    assert sorted((f["Final-Recipient"], f["Action"]) for f in fields) == [
        ("rfc822; gone@nobody.example", "failed"), ("rfc822; pal@localhost", "delivered")]


def test_a_deferred_recipient_is_retried_then_returned_after_the_queue_lifetime(tmp_path):
    """retry: defers every attempt; qmgr retries on its backoff schedule and,
    once maximal_queue_lifetime has passed, returns the mail to its sender."""
    # Long enough for a second attempt (backoff 1-2s) even when the machine is
    # busy: a message that expires at its first attempt is never retried.
    settings = dict(SETTINGS, maximal_queue_lifetime="6s", bounce_queue_lifetime="6s")
    with Instance(tmp_path, main_cf=settings) as inst:
        send(inst, "expiry@localhost", "late@slow.example")
        first = inst.wait_for_log(r"(\w+): to=<late@slow\.example>, .*status=deferred "
                                  r"\(connection timed out\)")
        qid = first.group(1)
        inst.wait_for_log(rf"{qid}: to=<late@slow\.example>, .*status=deferred", count=2)
        inst.wait_for_log(rf"{qid}: from=<expiry@localhost>, status=expired, "
                          r"returned to sender", timeout=30)
        [raw] = inst.maildir_messages(maildir(inst, "expiry"), timeout=30)
    report = parse(raw)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    status = next(p for p in report.walk()
                  if p.get_content_type() == "message/delivery-status")
    recipient_fields = status.get_payload()[1]
    assert recipient_fields["Final-Recipient"] == "rfc822; late@slow.example"
    assert recipient_fields["Action"] == "failed"
    assert recipient_fields["Status"].startswith("4.4.1")
    assert "connection timed out" in recipient_fields["Diagnostic-Code"]
