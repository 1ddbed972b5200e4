"""pymaster.util.ipc and pymaster.master.broker: messages, and the broker between clients and workers.

The broker runs in the test's thread (as in the master, one thread owns its
sockets); clients and workers run in helper threads with their own sockets.
"""

from __future__ import annotations

import threading

import pytest

from pymaster.master import broker as broker_module
from pymaster.util import ipc
from pymaster.master.broker import Broker
from tests.support.brokerpump import pump


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "private").mkdir()
    b = Broker("private", "svc")
    yield b
    b.close()


def in_thread(fn) -> dict:
    """in_thread - run FN in a thread; its result lands in box["result"]."""
    box: dict = {}

    def target():
        box["result"] = fn()
    box["thread"] = threading.Thread(target=target, daemon=True)
    box["thread"].start()
    return box


def echo_worker(count: int, credits: int = 1) -> dict:
    """echo_worker - a worker thread that answers COUNT requests, then leaves."""
    def run():
        w = ipc.Worker("ipc://private/.svc.workers")
        w.ready(credits)
        seen = []
        for _ in range(count):
            client, header, payload = w.recv()
            seen.append(header)
            w.reply(client, {"echo": header}, payload)
        w.leave()
        released = w.released
        w.close()
        return seen, released
    return in_thread(run)


class TestMessages:
    def test_a_message_is_a_json_header_and_raw_payload_frames(self):
        frames = ipc.pack({"op": "message", "n": 1}, [b"body\n", b"more"])
        assert frames[0] == b'{"op":"message","n":1}'
        assert ipc.unpack(frames) == ({"op": "message", "n": 1}, [b"body\n", b"more"])

    @pytest.mark.parametrize("header", [
        {"sender": "j\u00fcrgen@b\u00fccher.example"},     # UTF-8 text
        {"sender": "bad\udcffbyte@example.com"},        # smtpd's surrogateescape
        {"sizes": {1: 2}},                              # a key that is no string
    ])
    def test_every_header_text_survives_the_round_trip(self, header):
        expected = {str(k): v for k, v in header.items()}
        expected = {k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v)
                    for k, v in expected.items()}
        assert ipc.unpack(ipc.pack(header)) == (expected, [])

    @pytest.mark.parametrize("frames", [[], [b"not json"], [b"[1, 2]"], [b"\xff"]])
    def test_a_malformed_message_is_an_ipc_error(self, frames):
        with pytest.raises(ipc.IpcError):
            ipc.unpack(frames)

    def test_endpoints_are_relative_to_the_queue_directory(self):
        assert ipc.endpoint("private", "cleanup") == "ipc://private/cleanup"
        assert ipc.worker_endpoint("public", "qmgr") == "ipc://public/.qmgr.workers"
        assert ipc.endpoint("private", "smtp", "/var/spool/postfix") == \
            "ipc:///var/spool/postfix/private/smtp"


class TestBroker:
    def test_a_request_reaches_a_worker_and_the_reply_its_client(self, broker):
        worker = echo_worker(1)
        client = in_thread(lambda: ipc.Client("ipc://private/svc").call(
            {"op": "ping"}, [b"payload"], timeout=10))
        pump(broker, lambda: "result" in client and "result" in worker)
        assert client["result"] == ({"echo": {"op": "ping"}}, [b"payload"])
        assert worker["result"] == ([{"op": "ping"}], True)

    def test_a_waiting_request_asks_for_a_worker(self, broker):
        client = in_thread(lambda: ipc.Client("ipc://private/svc").call({"op": "x"}, timeout=10))
        pump(broker, lambda: broker.pending)
        assert broker.used
        assert broker.wanted(starting=0) == 1
        assert broker.wanted(starting=1) == 0        # one is already on its way
        echo_worker(1)
        pump(broker, lambda: "result" in client)
        assert broker.wanted(starting=0) == 0

    def test_credit_returns_with_each_reply(self, broker):
        worker = echo_worker(3)
        for n in range(3):
            client = in_thread(lambda: ipc.Client("ipc://private/svc").call({"n": n}, timeout=10))
            pump(broker, lambda: "result" in client)
        pump(broker, lambda: "result" in worker)
        assert [h["n"] for h in worker["result"][0]] == [0, 1, 2]
        assert broker.credits == {}                  # it said BYE

    def test_injected_wakeups_reach_a_worker_and_their_replies_are_dropped(self, broker):
        worker = echo_worker(1)
        broker.inject({"op": "wakeup"})
        assert broker.injected_pending() or broker.requests == 1
        pump(broker, lambda: "result" in worker)
        assert worker["result"][0] == [{"op": "wakeup"}]
        assert not broker.used                       # the master's own trigger

    def test_nothing_is_routed_to_a_retired_worker(self, broker):
        injected = threading.Event()

        def run():
            w = ipc.Worker("ipc://private/.svc.workers")
            w.ready(5)
            injected.wait(20)           # a wrongly routed request is on its way by now
            got = w.sock.poll(300)
            w.close()
            return got
        worker = in_thread(run)
        pump(broker, lambda: broker.credits)
        pid = int(next(iter(broker.credits)))
        broker.retire(pid)
        broker.inject({"op": "wakeup"})
        injected.set()
        pump(broker, lambda: "result" in worker)
        assert worker["result"] == 0
        assert broker.pending and broker.wanted(starting=0) == 1

    def test_a_leaving_worker_still_serves_what_was_routed_to_it(self, broker):
        routed = threading.Event()

        def run():
            w = ipc.Worker("ipc://private/.svc.workers")
            w.ready(2)
            routed.wait(20)                          # two requests are on their way
            served = []
            w.leave(lambda client, header, payload: (served.append(header),
                                                     w.reply(client, {"ok": 1})))
            w.close()
            return served
        worker = in_thread(run)
        clients = [in_thread(lambda: ipc.Client("ipc://private/svc").call({"k": 1}, timeout=20))
                   for _ in range(2)]
        pump(broker, lambda: broker.requests == 2 and not broker.pending)
        routed.set()
        pump(broker, lambda: "result" in worker and all("result" in c for c in clients))
        assert len(worker["result"]) == 2
        assert all(c["result"] == ({"ok": 1}, []) for c in clients)


class FakeClock:
    """The broker's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def holding_worker(release: threading.Event, count: int) -> dict:
    """holding_worker - a worker with one credit that keeps its first request
    unanswered until RELEASE is set, then answers COUNT in all and leaves.
    (One worker per test process: a worker's zeromq identity is its pid.)"""
    def run():
        w = ipc.Worker("ipc://private/.svc.workers")
        w.ready(1)
        client, header, payload = w.recv()
        release.wait(20)
        w.reply(client, {"echo": header})
        for _ in range(count - 1):
            client, header, payload = w.recv()
            w.reply(client, {"echo": header})
        w.leave()
        w.close()
    return in_thread(run)


class TestStartingWorkers:
    """How many workers waiting requests want: Python workers are costly to
    start, so one at a time, and only when those running fall behind."""

    @pytest.fixture
    def clock(self, monkeypatch):
        fake = FakeClock()
        monkeypatch.setattr(broker_module, "time", fake)
        return fake

    def requests(self, broker, count):
        clients = [in_thread(lambda: ipc.Client("ipc://private/svc").call({"op": "x"}, timeout=20))
                   for _ in range(count)]
        pump(broker, lambda: broker.requests + len(broker.pending) >= count)
        return clients

    def test_waiting_requests_want_one_worker_at_once_and_none_while_it_starts(
            self, broker, clock):
        clients = self.requests(broker, 3)
        assert broker.wanted(starting=0) == 1
        assert broker.wanted(starting=1) == 0
        assert broker.spawn_due() is None            # its start is what comes next
        echo_worker(3)
        pump(broker, lambda: all("result" in c for c in clients))

    def test_requests_behind_a_busy_worker_want_another_only_after_a_stall(
            self, broker, clock):
        release = threading.Event()
        holding_worker(release, 1 + broker_module.BACKLOG)
        clients = self.requests(broker, 1 + broker_module.BACKLOG)
        pump(broker, lambda: broker.requests == 1)
        assert len(broker.pending) == broker_module.BACKLOG
        assert broker.wanted(starting=0) == 0
        due = broker.spawn_due()
        assert due == clock.now + broker_module.SPAWN_DELAY
        clock.now = due
        assert broker.wanted(starting=0) == 1
        assert broker.wanted(starting=0) == 0        # that start counts as progress
        release.set()
        pump(broker, lambda: all("result" in c for c in clients))

    def test_a_backlog_behind_a_busy_worker_wants_another_at_once(self, broker, clock):
        release = threading.Event()
        holding_worker(release, 2 + broker_module.BACKLOG)
        clients = self.requests(broker, 2 + broker_module.BACKLOG)
        pump(broker, lambda: broker.requests == 1)
        assert broker.wanted(starting=0) == 1
        release.set()
        pump(broker, lambda: all("result" in c for c in clients))


class TestOneWay:
    """ipc.OneWay: requests nobody waits for, over one kept socket."""

    def test_requests_arrive_in_order_and_their_answers_are_dropped(self, broker):
        worker = echo_worker(3)
        sender = ipc.OneWay("ipc://private/svc")
        for n in range(3):
            assert sender.send({"op": "wakeup", "n": n})
        pump(broker, lambda: "result" in worker)
        assert [h["n"] for h in worker["result"][0]] == [0, 1, 2]
        pump(broker, lambda: broker.credits == {} and not broker.pending)
        closing = in_thread(lambda: sender.close(wait=10))
        pump(broker, lambda: "result" in closing)
        assert sender.unanswered == 0                # every answer came and was dropped
