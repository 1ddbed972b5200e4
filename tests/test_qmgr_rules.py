"""qmgr's queue rules, driven turn by turn against real delivery agents:
delay warnings once per message, soft_bounce, defer_transports and flush,
the hold queue, recipient slices in memory, and corrupt queue files.

Setup as in tests/test_qmgr_manager.py: agents are served in a thread at
private/NAME, no master is started."""

from __future__ import annotations

import os
import time

from pymaster.mail import queue, records
from services import discard, error
from services.qmgr.active import read_envelope
from tests.test_qmgr_manager import (AgentThread, agents, logged, manager,  # noqa: F401
                                     run_until, spool, submit)

HOUR = 3600.0


def submit_at(rcpts: list[str], when: float, queue_name: str = "incoming",
              sender: str = "a@example.com") -> str:
    w = queue.create(queue_name)
    w.write_envelope(when, sender, [records.Recipient(r) for r in rcpts], {})
    w.write_content([b"Subject: test\n\nhello\n"])
    return w.commit()


def turns(mgr, n: int = 5) -> None:
    for _ in range(n):
        mgr.turn()


def until(mgr, condition, timeout: float = 20) -> None:
    """until - turn the loop until CONDITION() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        mgr.turn()


def in_queue(qid: str, name: str):
    return lambda: (queue.find(qid) or ("",))[0] == name


def bounce_service(name: str = "defer") -> AgentThread:
    """bounce_service - a stand-in notice service that says ok (counts requests)."""
    return AgentThread(name, lambda header, payload: ({"status": "ok"}, []))


class TestDelayWarning:
    def test_sent_once_and_recorded_in_the_queue_file(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        notices = bounce_service()
        try:
            mgr = manager(spool, default_transport="retry:4.2.0 busy", delay_warning_time="1h",
                          minimal_backoff_time="1s", maximal_backoff_time="1s")
            qid = submit_at(["b@example.org"], time.time() - 2 * HOUR)
            run_until(mgr, logged, "status=deferred (busy)")
            until(mgr, in_queue(qid, "deferred"))
            assert notices.requests == 1
            path = queue.path_of("deferred", qid)
            assert records.read_message(path).attrs.get("warning_time") == "0"
            # The next attempt defers again, without a second warning.
            until(mgr, lambda: sum("status=deferred" in x for x in logged) >= 2)
            until(mgr, in_queue(qid, "deferred"))
            assert notices.requests == 1
        finally:
            notices.close()

    def test_not_before_delay_warning_time(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        notices = bounce_service()
        try:
            mgr = manager(spool, default_transport="retry", delay_warning_time="4h")
            qid = submit_at(["b@example.org"], time.time() - HOUR)
            run_until(mgr, logged, "status=deferred")
            until(mgr, in_queue(qid, "deferred"))
            assert notices.requests == 0
        finally:
            notices.close()


class TestSoftBounce:
    def test_a_bounce_becomes_a_deferral(self, spool, logged, agents):
        mgr = manager(spool, default_transport="error:5.1.1 User unknown", soft_bounce="yes")
        agents("error", error.make_deliver("error"), mgr.cfg)
        qid = submit(["b@example.org"])
        run_until(mgr, logged, "status=deferred (User unknown)")
        until(mgr, in_queue(qid, "deferred"))
        assert not os.path.exists(queue.bounce_log_path(qid))

    def test_expired_mail_stays_queued(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        mgr = manager(spool, default_transport="retry:4.4.1 host down",
                      maximal_queue_lifetime="1h", soft_bounce="yes")
        qid = submit_at(["b@example.org"], time.time() - 2 * HOUR)
        run_until(mgr, logged, "status=deferred (host down)")
        until(mgr, in_queue(qid, "deferred"))
        assert not any("status=expired" in line for line in logged)


class TestLifetimes:
    def test_bounces_expire_after_bounce_queue_lifetime(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        mgr = manager(spool, default_transport="retry:4.4.1 host down",
                      maximal_queue_lifetime="5d", bounce_queue_lifetime="1h")
        qid = submit_at(["b@example.org"], time.time() - 2 * HOUR, sender="")
        run_until(mgr, logged, f"{qid}: removed")
        assert f"{qid}: from=<>, status=expired, returned to sender" in logged

    def test_ordinary_mail_lives_until_maximal_queue_lifetime(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        mgr = manager(spool, default_transport="retry:4.4.1 host down",
                      maximal_queue_lifetime="5d", bounce_queue_lifetime="1h")
        qid = submit_at(["b@example.org"], time.time() - 2 * HOUR)
        run_until(mgr, logged, "status=deferred (host down)")
        until(mgr, in_queue(qid, "deferred"))


class TestDeferTransports:
    def test_a_flush_delivers_what_defer_transports_hold_back(self, spool, logged, agents):
        agent = agents("discard", discard.deliver)
        mgr = manager(spool, default_transport="discard", defer_transports="discard",
                      minimal_backoff_time="1h", maximal_backoff_time="2h")
        qid = submit(["b@example.org"])
        run_until(mgr, logged, "status=deferred (deferred transport)")
        until(mgr, in_queue(qid, "deferred"))
        assert agent.requests == 0
        mgr.flush()
        run_until(mgr, logged, f"{qid}: removed")
        assert agent.requests == 1


class TestHold:
    def test_the_hold_queue_is_never_delivered(self, spool, logged, agents):
        agent = agents("discard", discard.deliver)
        mgr = manager(spool, default_transport="discard")
        qid = submit(["b@example.org"], queue_name="hold")
        mgr.flush()
        turns(mgr, 10)
        assert agent.requests == 0 and queue.find(qid)[0] == "hold"

    def test_released_mail_is_delivered(self, spool, logged, agents):
        agents("discard", discard.deliver)
        mgr = manager(spool, default_transport="discard")
        qid = submit(["b@example.org"], queue_name="hold")
        queue.move(qid, "hold", "deferred")      # postsuper -H
        mgr.flush()
        run_until(mgr, logged, f"{qid}: removed")


class TestRecipientSlices:
    def test_only_a_slice_of_recipients_is_in_memory(self, spool, logged, agents):
        seen_at_once = []
        agent_deliver = discard.deliver

        def deliver(req, status):
            seen_at_once.append(mgr.in_core)
            agent_deliver(req, status)
        agents("discard", deliver)
        mgr = manager(spool, default_transport="discard", qmgr_message_recipient_limit=10,
                      qmgr_message_recipient_minimum=3)
        qid = submit([f"r{i}@example.org" for i in range(35)])
        run_until(mgr, logged, f"{qid}: removed")
        assert sum("status=sent" in line for line in logged) == 35
        assert max(seen_at_once) <= 10
        assert mgr.in_core == 0

    def test_expiry_reaches_every_slice(self, spool, logged, agents):
        agents("retry", error.make_deliver("retry"))
        mgr = manager(spool, default_transport="retry:4.4.1 host down",
                      maximal_queue_lifetime="1h", qmgr_message_recipient_limit=4,
                      qmgr_message_recipient_minimum=1)
        qid = submit_at([f"r{i}@example.org" for i in range(10)], time.time() - 2 * HOUR)
        run_until(mgr, logged, f"{qid}: removed")
        entries = open(queue.bounce_log_path(qid)).read() if os.path.exists(
            queue.bounce_log_path(qid)) else ""
        assert f"{qid}: from=<a@example.com>, status=expired, returned to sender" in logged
        assert entries == ""             # the bounce log went to the notice (none here)

    def test_the_envelope_reader_resumes_where_the_slice_ended(self, spool):
        w = queue.create("incoming")
        rcpts = [records.Recipient(f"r{i}@x", orig=f"o{i}@x", notify="NEVER", done=i % 3 == 0)
                 for i in range(10)]
        w.write_envelope(1.0, "s@x", rcpts, {"a": "1"})
        w.write_content([b"body\n"])
        w.commit()
        msg, more = read_envelope(w.path, 4)
        assert [r.address for r in msg.recipients] == ["r1@x", "r2@x", "r4@x", "r5@x"]
        assert msg.recipients[0].orig == "o1@x" and msg.recipients[0].notify == "NEVER"
        assert more > 0 and msg.attrs == {"a": "1"} and msg.rcpt_count == 10
        from services.qmgr.active import read_recipients
        rest, end = read_recipients(w.path, more, 4)
        assert [r.address for r in rest] == ["r7@x", "r8@x"] and end == -1
        assert rest[0].orig == "o7@x"


class TestCorruptFiles:
    def write_truncated(self, queue_name: str) -> str:
        qid = submit(["b@example.org"], queue_name="incoming")
        path = queue.path_of("incoming", qid)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) - 3)
        if queue_name != "incoming":
            path = queue.move(qid, "incoming", queue_name)
            queue.set_retry_time(path, time.time() - 10)
        return qid

    def test_a_truncated_incoming_file_goes_to_corrupt(self, spool, logged, agents):
        agents("discard", discard.deliver)
        mgr = manager(spool, default_transport="discard")
        bad = self.write_truncated("incoming")
        good = submit(["c@example.org"])
        run_until(mgr, logged, f"{good}: removed")
        assert queue.find(bad)[0] == "corrupt"
        assert any(f"corrupt queue file active/{bad}" in line for line in logged)

    def test_a_truncated_deferred_file_goes_to_corrupt(self, spool, logged, agents):
        agents("discard", discard.deliver)
        mgr = manager(spool, default_transport="discard")
        bad = self.write_truncated("deferred")
        turns(mgr, 5)
        assert queue.find(bad)[0] == "corrupt"
        turns(mgr, 5)                     # and nothing loops on it
        assert sum(f"active/{bad}" in line for line in logged) == 1


class TestAppendAttribute:
    def test_the_file_stays_readable_at_every_step(self, spool):
        qid = submit(["b@example.org"])
        path = queue.path_of("incoming", qid)
        before = open(path, "rb").read()
        records.append_attribute(path, "warning_time", "0")
        after = open(path, "rb").read()
        assert records.read_message(path).attrs["warning_time"] == "0"
        # The state after the first write only: the old end record still ends it.
        middle = bytearray(after)
        middle[len(before) - records.HEADER_SIZE] = records.REC_END[0]
        msg = records.parse_message(bytes(middle))
        assert "warning_time" not in msg.attrs and msg.read_content() == b"Subject: test\n\nhello\n"


class TestSelectedFlush:
    def test_a_site_flush_moves_only_that_sites_mail(self, spool, logged):
        mgr = manager(spool)
        here = submit(["b@site.example"], queue_name="deferred")
        there = submit(["b@elsewhere.example"], queue_name="deferred")
        mgr.flush_selected({"op": "flush", "site": "site.example"})
        assert queue.find(here)[0] == "incoming" and queue.find(there)[0] == "deferred"

    def test_a_queue_id_flush_moves_that_message(self, spool, logged):
        mgr = manager(spool)
        qid = submit(["b@site.example"], queue_name="deferred")
        mgr.flush_selected({"op": "flush", "queue_id": qid})
        mgr.flush_selected({"op": "flush", "queue_id": "../../etc"})   # ignored
        assert queue.find(qid)[0] == "incoming"
