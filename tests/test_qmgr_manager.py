"""qmgr's queue manager, driven turn by turn against real delivery agents.

The discard and error agents run in a thread that listens at private/NAME
itself and serves the leases qmgr takes there with the agent's own request
handler (tests/support/served.py), so these tests exercise qmgr's real
feeding, scheduling, answers and finishing without starting the master.
End-to-end behaviour through the master is in tests/e2e/test_qmgr.py."""

from __future__ import annotations

import os
import time

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.util import ipc, log
from pymaster.mail.config import Config
from services import discard, error
from services.qmgr.manager import QueueManager
from tests.support.served import ServedHandler, listen


class FakeService:
    """What QueueManager needs of pymaster.master.service.Service, without a master."""

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.busy, self.stopping = cfg, False, False

    def master_gone(self) -> bool:
        return False


class AgentThread(ServedHandler):
    """A delivery agent's request handler served at private/NAME."""

    def __init__(self, name: str, handler) -> None:
        super().__init__(ipc.endpoint("private", name), handler)


@pytest.fixture
def spool(tmp_path, monkeypatch):
    queue.create_layout(str(tmp_path / "spool"))
    monkeypatch.chdir(tmp_path / "spool")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "main.cf").write_text("")
    (tmp_path / "etc" / "master.cf").write_text("")
    return tmp_path


@pytest.fixture
def logged(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    monkeypatch.setattr(log, "warning", lambda text: lines.append("warning: " + text))
    return lines


@pytest.fixture
def agents():
    started: list[AgentThread] = []

    def start(name: str, deliver, cfg=None) -> AgentThread:
        agent = AgentThread(name, delivery.request_handler(deliver, cfg))
        started.append(agent)
        return agent
    yield start
    for agent in started:
        agent.close()


def manager(spool, **settings) -> QueueManager:
    values = {"myhostname": "mx.example.com", "mydestination": "",
              "queue_run_delay": "1s", "minimal_backoff_time": "1s",
              "maximal_backoff_time": "2s"}
    values.update({k: str(v) for k, v in settings.items()})
    mgr = QueueManager(FakeService(Config(str(spool / "etc"), values)))
    mgr.start()
    return mgr


def submit(rcpts: list[str], sender="a@example.com", queue_name="incoming",
           done: tuple[int, ...] = ()) -> str:
    w = queue.create(queue_name)
    w.write_envelope(time.time(), sender,
                     [records.Recipient(r, done=i in done) for i, r in enumerate(rcpts)], {})
    w.write_content([b"Subject: test\n\nhello\n"])
    return w.commit()


def run_until(mgr: QueueManager, logged: list[str], pattern: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mgr.turn()
        if any(pattern in line for line in logged):
            return
    raise AssertionError(f"no log line with {pattern!r}:\n" + "\n".join(logged))


def turn_until(mgr: QueueManager, condition, timeout: float = 20) -> None:
    """turn_until - run MGR until CONDITION() holds.

    An agent logs its status line before it answers, so the message moves on
    (to deferred/, a second attempt) some turns after the line appears."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        mgr.turn()


def queue_of(qid: str) -> str | None:
    found = queue.find(qid)
    return found[0] if found else None


def test_discarded_mail_is_logged_sent_and_removed(spool, logged, agents):
    agents("discard", discard.deliver)
    mgr = manager(spool, default_transport="discard")
    qid = submit(["b@example.org", "c@example.org"])
    run_until(mgr, logged, f"{qid}: removed")
    assert f"{qid}: from=<a@example.com>, size=21, nrcpt=2 (queue active)" in logged
    sent = [line for line in logged if "status=sent (example.org)" in line]
    assert len(sent) == 2 and all("relay=none" in line for line in sent)
    assert queue.find(qid) is None


def test_recipient_limit_splits_requests(spool, logged, agents):
    agent = agents("discard", discard.deliver)
    mgr = manager(spool, default_transport="discard", discard_destination_recipient_limit=2)
    qid = submit([f"r{i}@example.org" for i in range(5)])
    run_until(mgr, logged, f"{qid}: removed")
    assert agent.requests == 3


def test_error_transport_bounces_and_the_bounce_is_due(spool, logged, agents):
    agents("error", error.make_deliver("error"))
    mgr = manager(spool, default_transport="error:5.1.1 User unknown")
    qid = submit(["b@example.org"])
    run_until(mgr, logged, f"{qid}: removed")
    assert any("dsn=5.1.1, status=bounced (User unknown)" in line for line in logged)
    assert any("sender non-delivery notification not sent" in line for line in logged)


def test_retry_defers_then_tries_again_after_the_backoff(spool, logged, agents):
    agent = agents("retry", error.make_deliver("retry"))
    mgr = manager(spool, default_transport="retry:4.2.0 mailbox busy")
    qid = submit(["b@example.org"])
    run_until(mgr, logged, "status=deferred (mailbox busy)")
    turn_until(mgr, lambda: queue_of(qid) == "deferred")
    retry = queue.retry_time(queue.path_of("deferred", qid))
    assert retry > time.time() - 0.5
    turn_until(mgr, lambda: agent.requests >= 2)
    assert agent.requests == 2
    entries = delivery.read_status_log(queue.defer_log_path(qid))
    assert entries and entries[0]["reason"] == "mailbox busy"


def test_flush_makes_deferred_mail_due_at_once(spool, logged, agents):
    agent = agents("retry", error.make_deliver("retry"))
    mgr = manager(spool, default_transport="retry", minimal_backoff_time="1h",
                  maximal_backoff_time="2h", queue_run_delay="1h")
    submit(["b@example.org"])
    run_until(mgr, logged, "status=deferred")
    for _ in range(3):
        mgr.turn()
    assert agent.requests == 1
    mgr.flush()
    turn_until(mgr, lambda: agent.requests >= 2)
    assert agent.requests == 2


def test_a_missing_transport_defers(spool, logged):
    mgr = manager(spool, default_transport="nosuchagent")
    qid = submit(["b@example.org"])
    run_until(mgr, logged, "status=deferred (mail transport unavailable)")
    turn_until(mgr, lambda: queue_of(qid) == "deferred")


def test_defer_transports_are_not_tried(spool, logged, agents):
    agent = agents("discard", discard.deliver)
    mgr = manager(spool, default_transport="discard", defer_transports="discard")
    submit(["b@example.org"])
    run_until(mgr, logged, "status=deferred (deferred transport)")
    assert agent.requests == 0


def test_expired_mail_is_returned_to_sender(spool, logged, agents):
    agents("retry", error.make_deliver("retry"))
    mgr = manager(spool, default_transport="retry:4.4.1 host down", maximal_queue_lifetime="0")
    qid = submit(["b@example.org"])
    run_until(mgr, logged, f"{qid}: removed")
    assert f"{qid}: from=<a@example.com>, status=expired, returned to sender" in logged


def test_active_files_are_requeued_and_done_recipients_skipped(spool, logged, agents):
    agents("discard", discard.deliver)
    qid = submit(["done@example.org", "todo@example.org"], queue_name="active", done=(0,))
    mgr = manager(spool, default_transport="discard")
    run_until(mgr, logged, f"{qid}: removed")
    sent = [line for line in logged if "status=sent" in line]
    assert len(sent) == 1 and "to=<todo@example.org>" in sent[0]


def test_incomplete_incoming_files_are_left_alone(spool, logged, agents):
    agents("discard", discard.deliver)
    w = queue.create("incoming")
    w.write_envelope(time.time(), "a@example.com", [records.Recipient("b@example.org")], {})
    mgr = manager(spool, default_transport="discard")
    for _ in range(3):
        mgr.turn()
    assert os.path.exists(w.path) and not any("queue active" in line for line in logged)
    w.abort()


def test_a_corrupt_file_is_quarantined(spool, logged):
    with open(queue.path_of("incoming", "0000000000zB"), "wb") as f:
        f.write(b"garbage")
    os.chmod(queue.path_of("incoming", "0000000000zB"), 0o700)
    mgr = manager(spool)
    mgr.turn()
    assert queue.find("0000000000zB")[0] == "corrupt"


def test_a_dead_destination_defers_what_waits_for_it(spool, logged, agents):
    def unreachable(req, status):
        status.hop_failed("connect to mx.example.org[192.0.2.1]:25: Connection refused")
        for rcpt in req.recipients:
            status.deferred(rcpt, "none", "connect to mx.example.org: Connection refused", "4.4.1")
    agent = agents("remote", unreachable)
    mgr = manager(spool, default_transport="remote", remote_destination_recipient_limit=2,
                  initial_destination_concurrency=1)
    submit(["a@example.org", "b@example.org", "c@example.org"])
    run_until(mgr, logged, "status=deferred (delivery temporarily suspended: "
                           "connect to mx.example.org[192.0.2.1]:25: Connection refused)")
    assert agent.requests == 1


def test_an_agent_that_never_answers_defers_after_the_timeout(spool, logged):
    silent = listen(ipc.endpoint("private", "silent"))      # no worker ever accepts
    try:
        mgr = manager(spool, default_transport="silent", ipc_timeout="1s")
        qid = submit(["b@example.org"])
        run_until(mgr, logged, "status=deferred (unknown mail transport error)")
        turn_until(mgr, lambda: queue_of(qid) == "deferred")
    finally:
        silent.close()


def submit_filtered(rcpts: list[str], content_filter: str) -> str:
    """submit_filtered - a queue file whose receiver recorded CONTENT_FILTER."""
    w = queue.create("incoming")
    w.write_envelope(time.time(), "a@example.com", [records.Recipient(r) for r in rcpts],
                     {"content_filter": content_filter})
    w.write_content([b"Subject: test\n\nhello\n"])
    return w.commit()


def test_a_content_filter_overrides_the_resolved_transport(spool, logged, agents):
    # Without the filter every recipient would bounce (default_transport = error).
    agents("discard", discard.deliver)
    mgr = manager(spool, default_transport="error")
    qid = submit_filtered(["b@example.org", "c@example.net"], "discard:filter.example")
    run_until(mgr, logged, f"{qid}: removed")
    assert len([line for line in logged if "status=sent (filter.example)" in line]) == 2


def test_a_content_filter_without_nexthop_uses_the_recipient_domain(spool, logged, agents):
    agents("discard", discard.deliver)
    mgr = manager(spool, default_transport="error")
    qid = submit_filtered(["b@example.org"], "discard:")
    run_until(mgr, logged, f"{qid}: removed")
    assert any("to=<b@example.org>" in line and "status=sent (example.org)" in line
               for line in logged)


def test_cache_lookup_only_after_a_request_that_had_a_backlog(spool, logged, agents):
    # Postfix's qmgr tells smtp when a cached connection may exist
    # (DEL_REQ_FLAG_CONN_LOAD): only after an earlier request to the same
    # destination, since it was last idle, went out with a backlog.
    seen: list[tuple[bool | None, bool | None]] = []

    def deliver(req, status):
        seen.append((req.backlog, req.cache_lookup))
        discard.deliver(req, status)
    agents("discard", deliver)
    mgr = manager(spool, default_transport="discard")
    burst = [submit([f"r{i}@example.org"]) for i in range(4)]
    for qid in burst:
        run_until(mgr, logged, f"{qid}: removed")
    assert seen[0][1] is False
    for i, (_, lookup) in enumerate(seen[1:], 1):
        assert lookup == any(backlog for backlog, _ in seen[:i])
    assert any(backlog for backlog, _ in seen)     # the burst did wait
    # Idle, the destination is forgotten: the next request starts with no lookup.
    assert "example.org" not in mgr.transports["discard"].destinations
