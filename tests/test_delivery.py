"""pymaster.mail.delivery: what every delivery agent shares.

The status line is what pflogsumm and administrators parse, so its shape is
specified here to the character; the queue-file side effects (mark done,
defer and bounce logs) are what qmgr and the bounce service rely on."""

from __future__ import annotations

import os
import re

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.util import log
from pymaster.mail.config import Config

STATUS_RE = re.compile(
    r"^(?P<id>\w+): to=<(?P<to>[^>]*)>, (?:orig_to=<(?P<orig>[^>]*)>, )?"
    r"relay=(?P<relay>[^,]+), delay=(?P<delay>[\d.]+), "
    r"delays=(?P<delays>[\d.]+/[\d.]+/[\d.]+/[\d.]+), dsn=(?P<dsn>\d\.\d+\.\d+), "
    r"status=(?P<status>\w+) \((?P<reason>.*)\)$")


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """A queue directory as the working directory, as every service has."""
    queue.create_layout(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def logged(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    return lines


def make_cfg(tmp_path, **values) -> Config:
    return Config(str(tmp_path), {k: str(v) for k, v in values.items()})


def queue_message(rcpts: list[tuple[str, str]], sender="a@example.com") -> str:
    w = queue.create("active")
    w.write_envelope(1000.0, sender,
                     [records.Recipient(addr, orig=orig) for addr, orig in rcpts], {})
    w.write_content([b"Subject: t\n\nbody\n"])
    return w.commit()


def request_for(queue_id: str, transport="local", nexthop="example.org") -> delivery.DeliveryRequest:
    path = queue.path_of("active", queue_id)
    msg = records.read_message(path)
    header = delivery.DeliveryRequest(
        queue_id=queue_id, path=path, transport=transport, nexthop=nexthop,
        sender=msg.sender, recipients=msg.pending(), arrival_time=msg.arrival_time,
        active_time=msg.arrival_time + 0.5).to_header()
    return delivery.DeliveryRequest.from_header(header)


class TestRequest:
    def test_header_round_trip_keeps_every_field(self, spool):
        qid = queue_message([("b@example.org", "B@example.org")])
        req = request_for(qid)
        again = delivery.DeliveryRequest.from_header(req.to_header())
        assert again.queue_id == qid and again.path == req.path
        assert again.transport == "local" and again.nexthop == "example.org"
        assert [(r.address, r.orig, r.offset) for r in again.recipients] == \
               [(r.address, r.orig, r.offset) for r in req.recipients]
        assert req.to_header()["op"] == "deliver"

    def test_open_content_reads_the_queue_file(self, spool):
        req = request_for(queue_message([("b@example.org", "")]))
        assert delivery.open_content(req).read_content() == b"Subject: t\n\nbody\n"


class TestStatusLine:
    def test_sent_line_has_postfix_shape_and_marks_done(self, spool, logged):
        req = request_for(queue_message([("b@example.org", "")]))
        status = delivery.Status(req)
        status.sent(req.recipients[0], "local", "delivered to maildir")
        m = STATUS_RE.match(logged[0])
        assert m, logged[0]
        assert (m["id"], m["to"], m["orig"], m["relay"], m["dsn"], m["status"], m["reason"]) == \
               (req.queue_id, "b@example.org", None, "local", "2.0.0", "sent",
                "delivered to maildir")
        assert records.read_message(req.path).recipients[0].done

    def test_orig_to_only_when_it_differs(self, spool, logged):
        req = request_for(queue_message([("b@example.org", "alias@example.org"),
                                         ("c@example.org", "C@Example.org")]))
        status = delivery.Status(req)
        for r in req.recipients:
            status.sent(r, "local", "ok")
        assert "orig_to=<alias@example.org>" in logged[0]
        assert "orig_to" not in logged[1]

    def test_reply_lists_every_outcome_by_offset(self, spool, logged):
        req = request_for(queue_message([("b@example.org", ""), ("c@example.org", "")]))
        status = delivery.Status(req)
        status.sent(req.recipients[0], "local", "ok")
        status.deferred(req.recipients[1], "local", "mailbox busy", "4.2.0")
        header, payload = status.reply()
        assert header["status"] == "ok" and payload == []
        assert [(r["offset"], r["status"], r["dsn"]) for r in header["results"]] == \
               [(req.recipients[0].offset, "sent", "2.0.0"),
                (req.recipients[1].offset, "deferred", "4.2.0")]


class TestQueueEffects:
    def test_deferred_stays_not_done_and_goes_to_the_defer_log(self, spool, logged):
        req = request_for(queue_message([("b@example.org", "")]))
        delivery.Status(req).deferred(req.recipients[0], "none", "try later", "4.4.1")
        assert not records.read_message(req.path).recipients[0].done
        entries = delivery.read_status_log(queue.defer_log_path(req.queue_id))
        assert entries[0]["recipient"] == "b@example.org"
        assert (entries[0]["status"], entries[0]["action"], entries[0]["reason"]) == \
               ("4.4.1", "delayed", "try later")
        assert "status=deferred (try later)" in logged[0]

    def test_bounced_is_done_and_goes_to_the_bounce_log(self, spool, logged):
        req = request_for(queue_message([("b@example.org", "")]))
        delivery.Status(req).bounced(req.recipients[0], "none", "User unknown", "5.1.1")
        assert records.read_message(req.path).recipients[0].done
        entries = delivery.read_status_log(queue.bounce_log_path(req.queue_id))
        assert (entries[0]["status"], entries[0]["action"]) == ("5.1.1", "failed")
        assert "dsn=5.1.1, status=bounced (User unknown)" in logged[0]

    def test_soft_bounce_turns_a_bounce_into_a_defer(self, spool, logged, tmp_path):
        req = request_for(queue_message([("b@example.org", "")]))
        status = delivery.Status(req, make_cfg(tmp_path, soft_bounce="yes"))
        status.bounced(req.recipients[0], "none", "User unknown", "5.1.1")
        assert not records.read_message(req.path).recipients[0].done
        assert not os.path.exists(queue.bounce_log_path(req.queue_id))
        assert "dsn=4.1.1, status=deferred (User unknown)" in logged[0]

    def test_status_log_entries_accumulate(self, spool):
        path = queue.defer_log_path("ABC")
        delivery.append_status_log(path, {"recipient": "a@x", "reason": "one\ntwo"})
        delivery.append_status_log(path, {"recipient": "b@x", "reason": "three"})
        assert [(e["recipient"], e["reason"]) for e in delivery.read_status_log(path)] == \
               [("a@x", "one two"), ("b@x", "three")]


class TestHandler:
    def test_recipients_left_without_outcome_are_deferred(self, spool, logged):
        req = request_for(queue_message([("b@example.org", ""), ("c@example.org", "")]))
        handler = delivery.request_handler(
            lambda r, status: status.sent(r.recipients[0], "none", "ok"))
        header, _ = handler({**req.to_header(), "id": 7}, [])
        assert header["id"] == 7
        assert [r["status"] for r in header["results"]] == ["sent", "deferred"]

    def test_an_exception_defers_instead_of_losing_recipients(self, spool, logged):
        req = request_for(queue_message([("b@example.org", "")]))

        def deliver(r, status):
            raise RuntimeError("boom")
        header, _ = delivery.request_handler(deliver)(req.to_header(), [])
        assert [r["status"] for r in header["results"]] == ["deferred"]
        assert not records.read_message(req.path).recipients[0].done


@pytest.mark.parametrize("seconds, resolution, text", [
    (0, 2, "0"), (0.004, 2, "0"), (0.0123, 2, "0.01"), (0.0123, 3, "0.012"),
    (0.06, 2, "0.06"), (0.123, 2, "0.12"), (0.1, 2, "0.1"), (1.0, 2, "1"),
    (1.23, 2, "1.2"), (9.99, 2, "9.9"), (10.4, 2, "10"), (10.5, 2, "11"),
    (432000.2, 2, "432000"), (0.00123, 3, "0.001"), (0.0004, 3, "0"),
    (0.00049, 6, "0.00049"), (0.0099, 2, "0"), (0.5, 0, "0"), (0.09, 1, "0"), (0.19, 1, "0.1"),
])
def test_delay_figures_follow_postfix_rounding(seconds, resolution, text):
    assert delivery.format_delay(seconds, resolution) == text


def test_a_recipient_already_done_is_not_delivered_again(spool, logged):
    req = request_for(queue_message([("b@example.org", ""), ("c@example.org", "")]))
    records.mark_done(req.path, req.recipients[0].offset)
    seen = []
    handler = delivery.request_handler(lambda r, status: seen.extend(x.address for x in r.recipients))
    header, _ = handler(req.to_header(), [])
    assert seen == ["c@example.org"]
    assert header["results"][0]["status"] == "sent" and not any("b@example" in l for l in logged)


class TestDoneMarkSync:
    """A done mark is fsynced, except for an agent that asks not to (discard)."""

    def fsyncs_while_handling(self, monkeypatch, handler, req) -> int:
        synced: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
        reply, _ = handler(req.to_header(), [])
        assert [r["status"] for r in reply["results"]] == ["sent"]
        assert records.read_message(req.path).pending() == []
        return len(synced)

    def test_an_agent_fsyncs_each_done_mark(self, spool, logged, monkeypatch):
        req = request_for(queue_message([("b@example.org", "")]))
        handler = delivery.request_handler(
            lambda r, status: status.sent(r.recipients[0], "none", "ok"))
        assert self.fsyncs_while_handling(monkeypatch, handler, req) == 1

    def test_discard_marks_done_without_fsync(self, spool, logged, monkeypatch):
        from services import discard

        class Svc:
            cfg = make_cfg(spool)
        req = request_for(queue_message([("b@example.org", "")]), transport="discard")
        assert self.fsyncs_while_handling(monkeypatch, discard.pre_jail(Svc()), req) == 0


class TestVerify:
    """sendmail -bv (trace_flags=verify): verdicts in the trace log, nothing delivered."""

    def verify_request(self, rcpts) -> delivery.DeliveryRequest:
        req = request_for(queue_message(rcpts), transport="smtp", nexthop="example.org")
        req.attrs["trace_flags"] = "verify"
        return req

    def test_outcomes_become_verdicts_in_the_trace_log(self, spool, logged, tmp_path):
        req = self.verify_request([("a@example.org", ""), ("b@example.org", ""),
                                   ("c@example.org", "")])
        status = delivery.Status(req, make_cfg(tmp_path, soft_bounce="yes"))
        a, b, c = req.recipients
        status.sent(a, "local", "delivers to mailbox")
        status.bounced(b, "none", "no such user", "5.1.1")
        status.deferred(c, "none", "try later", "4.4.1")
        entries = delivery.read_status_log(queue.trace_log_path(req.queue_id))
        assert [(e["recipient"], e["action"], e["status"]) for e in entries] == [
            ("a@example.org", "deliverable", "2.0.0"),
            ("b@example.org", "undeliverable", "5.1.1"),
            ("c@example.org", "undeliverable", "4.4.1")]
        assert not os.path.exists(queue.bounce_log_path(req.queue_id))
        assert not os.path.exists(queue.defer_log_path(req.queue_id))
        assert records.read_message(req.path).pending() == []
        assert [STATUS_RE.match(line).group("status") for line in logged] == [
            "deliverable", "undeliverable", "undeliverable"]
        assert [r["status"] for r in status.reply()[0]["results"]] == [
            "deliverable", "undeliverable", "undeliverable"]

    def test_handler_calls_verify_instead_of_deliver(self, spool, logged):
        req = self.verify_request([("a@example.org", "")])
        called = []
        handler = delivery.request_handler(lambda r, s: called.append("deliver"), None,
                                           verify=lambda r, s: [s.sent(x, "local", "would")
                                                                for x in r.recipients])
        reply, _ = handler(req.to_header(), [])
        assert called == [] and reply["results"][0]["status"] == "deliverable"

    def test_an_agent_without_verify_reports_its_transport(self, spool, logged):
        req = self.verify_request([("a@example.org", "")])
        handler = delivery.request_handler(lambda r, s: pytest.fail("delivered"), None)
        reply, _ = handler(req.to_header(), [])
        [result] = reply["results"]
        assert (result["status"], result["reason"]) == (
            "deliverable", "delivers via smtp to example.org")
