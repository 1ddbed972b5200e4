"""pymaster.util.ipc: messages, leases on a service's socket, requests over
the worker's own zeromq endpoint.

The test listens on private/svc itself (the master's part, tests/support/
served.py's listen()); an ipc.Server on that socket is the worker. Where
a test drives both sides from its own thread, `pump` runs the server's
events until what the test waits for has happened; blocking clients and
serving workers otherwise run in threads or child processes of their own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest

from pymaster.util import ipc
from tests.support.served import ServedHandler, listen
from tests.support.wait import wait_until

EP = "private/svc"


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """spool - a queue directory with private/, the test's working directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "private").mkdir()
    (tmp_path / "public").mkdir()
    return tmp_path


@pytest.fixture
def listener(spool):
    sock = listen(EP)
    yield sock
    sock.close()


@pytest.fixture
def server(listener):
    """server - a one-at-a-time worker on private/svc."""
    s = ipc.Server(listener, many=False)
    yield s
    s.close()


@pytest.fixture
def many_server(listener):
    s = ipc.Server(listener, many=True)
    yield s
    s.close()


def pump(server: ipc.Server, until, what: str = "condition") -> list:
    """pump - run SERVER's events until UNTIL() holds; the events seen."""
    seen: list = []
    poller = ipc.Poller()
    poller.register(server)

    def turn():
        poller.poll(20)
        seen.extend(server.events())
        return until()
    wait_until(turn, 20, what, interval=0)
    return seen


def _collect(server: ipc.Server, count: int) -> list:
    """_collect - the first COUNT events of SERVER."""
    events: list = []

    def enough():
        return len(events) >= count
    poller = ipc.Poller()
    poller.register(server)

    def turn():
        poller.poll(20)
        events.extend(server.events())
        return enough()
    wait_until(turn, 20, f"{count} events", interval=0)
    return events


def opened(server: ipc.Server, *leases: ipc.Lease) -> None:
    """opened - run SERVER until every one of LEASES has had its greeting."""
    pump(server, lambda: all(lease.open_done() for lease in leases), "the greeting")


def exchange(server: ipc.Server, lease: ipc.Lease, header: dict, payload=()) -> tuple:
    """exchange - HEADER on LEASE, answered by SERVER with its own header."""
    lease.send(header, payload)
    (token, got, got_payload), = [e for e in _collect(server, 1) if e[0] is not None]
    server.reply(token, {"echo": got}, got_payload)
    wait_until(lambda: lease.sock.poll(20), 20, "the answer")
    return lease.recv()


def in_thread(fn) -> dict:
    """in_thread - run FN in a thread; its result lands in box["result"],
    an exception it raised in box["error"]."""
    box: dict = {}

    def target():
        try:
            box["result"] = fn()
        except Exception as e:
            box["error"] = e
    box["thread"] = threading.Thread(target=target, daemon=True)
    box["thread"].start()
    return box


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

    def test_endpoints_are_socket_paths_relative_to_the_queue_directory(self):
        assert ipc.endpoint("private", "cleanup") == "private/cleanup"
        assert ipc.endpoint("private", "smtp", "/var/spool/postfix") == \
            "/var/spool/postfix/private/smtp"

    def test_a_service_endpoint_follows_the_socket_that_exists(self, spool):
        assert ipc.service_endpoint("qmgr") == "public/qmgr"        # neither yet
        listen("private/qmgr").close()
        assert ipc.service_endpoint("qmgr") == "private/qmgr"
        listen("public/qmgr").close()
        assert ipc.service_endpoint("qmgr") == "public/qmgr"        # public first

    def test_a_trigger_frame_is_a_length_and_a_json_header(self):
        frame = ipc.trigger_frame({"op": "wakeup"})
        assert frame == len(b'{"op":"wakeup"}').to_bytes(4, "big") + b'{"op":"wakeup"}'


class TestServer:
    """A worker accepts leases on the service's socket and answers the
    requests sent over its own zeromq endpoint, named in the greeting."""

    def test_a_request_reaches_the_worker_and_the_answer_its_client(self, spool):
        served = ServedHandler(EP, lambda header, payload: ({"echo": header}, payload))
        try:
            client = ipc.Client(EP)
            assert client.call({"op": "ping"}, [b"payload"], timeout=20) == \
                ({"echo": {"op": "ping"}}, [b"payload"])
            assert client.call({"op": "again"}, timeout=20) == ({"echo": {"op": "again"}}, [])
            assert served.server.uses == 1              # one kept lease
            client.close()
        finally:
            served.close()

    def test_an_old_ipc_prefix_still_names_the_socket(self, spool):
        served = ServedHandler("ipc://" + EP, lambda header, payload: ({"ok": 1}, []))
        try:
            assert ipc.Client("ipc://" + EP).call({}, timeout=20) == ({"ok": 1}, [])
        finally:
            served.close()

    def test_the_greeting_names_the_workers_endpoint_beside_the_socket(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            assert server.file.startswith(f".{os.getpid()}-")
            assert os.path.exists(os.path.join("private", server.file))
            assert not lease.many and lease.usable
            assert exchange(server, lease, {"op": "x"}, [b"body"]) == \
                ({"echo": {"op": "x"}}, [b"body"])
        finally:
            lease.close()

    def test_a_closed_server_removes_its_endpoint(self, listener):
        s = ipc.Server(listener)
        path = os.path.join("private", s.file)
        assert os.path.exists(path)
        s.close()
        assert not os.path.exists(path)

    def test_a_deep_spool_is_reached_from_inside_it(self, tmp_path, monkeypatch):
        """A client whose working directory is the queue directory (every
        program's) reaches a worker whose endpoint's full path would not fit
        a socket address (107 bytes)."""
        deep = tmp_path / ("d" * 50) / ("e" * 50)
        (deep / "private").mkdir(parents=True)
        monkeypatch.chdir(deep)
        served = ServedHandler(EP, lambda header, payload: ({"ok": 1}, []))
        try:
            assert len(str(deep / "private" / served.server.file)) > 107
            client = ipc.Client(str(deep / EP))
            assert client.call({}, timeout=20) == ({"ok": 1}, [])
            client.close()
        finally:
            served.close()

    def test_connecting_where_nobody_listens_is_an_ipc_error(self, spool):
        with pytest.raises(ipc.IpcError, match="connect to private/nobody"):
            ipc.Lease("private/nobody")
        with pytest.raises(ipc.IpcError):
            ipc.Client("private/nobody").call({}, timeout=5)


class TestOneAtATime:
    """A one-at-a-time worker (cleanup, the delivery agents) holds one lease;
    the next client's lease waits in the listen queue for another worker,
    or for this one once the lease is let go or retired."""

    def test_the_next_lease_opens_only_after_the_first_is_let_go(self, server):
        first, second = ipc.Lease(EP), ipc.Lease(EP)
        try:
            opened(server, first)
            assert not server.available()
            assert exchange(server, first, {"n": 1})[0] == {"echo": {"n": 1}}
            assert not second.open_done()           # served turns went by: still waiting
            first.close()
            opened(server, second)
            assert server.uses == 2
        finally:
            first.close()
            second.close()

    def test_an_idle_lease_is_retired_with_bye_and_the_next_one_opens(self, server):
        first, second = ipc.Lease(EP), ipc.Lease(EP)
        try:
            opened(server, first)
            [held] = server.held.values()
            assert server.retire_idle(held.last) == held.last + ipc.LEASE_IDLE  # due then
            assert server.retire_idle(held.last + ipc.LEASE_IDLE) is None
            wait_until(lambda: (first.check(), first.retiring)[1], 20, "BYE")
            assert not first.usable
            assert server.available()
            opened(server, second)
            assert second.usable
        finally:
            first.close()
            second.close()

    def test_a_request_resets_the_idle_clock(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            [held] = server.held.values()
            accepted = held.last
            exchange(server, lease, {"op": "x"})
            assert held.last > accepted
            assert server.retire_idle(accepted + ipc.LEASE_IDLE) == held.last + ipc.LEASE_IDLE
            assert server.active == 1
        finally:
            lease.close()

    def test_a_many_server_takes_several_leases_and_retires_idle_ones_later(self, many_server):
        leases = [ipc.Lease(EP) for _ in range(3)]
        try:
            opened(many_server, *leases)
            assert all(lease.many for lease in leases)
            assert many_server.active == 3 and many_server.available()
            answers = [exchange(many_server, lease, {"n": n}) for n, lease in enumerate(leases)]
            assert answers == [({"echo": {"n": n}}, []) for n in range(3)]
            # Unused for LEASE_IDLE: kept; for SHARED_LEASE_IDLE (Postfix's ipc_idle): ended.
            assert many_server.retire_idle(time.monotonic() + ipc.LEASE_IDLE) is not None
            assert many_server.active == 3
            assert many_server.retire_idle(time.monotonic() + ipc.SHARED_LEASE_IDLE) is None
            assert many_server.active == 0
        finally:
            for lease in leases:
                lease.close()


class TestOneWay:
    """trigger() and OneWay: requests nobody answers, written on the lease
    connection; the worker sees them as (None, header, [])."""

    def test_a_trigger_arrives_as_a_one_way_request(self, server):
        ipc.trigger(EP, {"op": "wakeup", "n": 1})
        ipc.trigger(EP)
        events = pump(server, lambda: not server.held and server.uses == 2, "two triggers")
        assert events == [(None, {"op": "wakeup", "n": 1}, []), (None, {"op": "wakeup"}, [])]

    def test_a_trigger_waits_in_the_listen_queue_for_a_busy_worker(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            ipc.trigger(EP, {"op": "wakeup"})       # its sender is gone at once
            assert exchange(server, lease, {"op": "x"})[0] == {"echo": {"op": "x"}}
            lease.close()
            events = pump(server, lambda: server.uses == 2, "the trigger's lease")
            events += pump(server, lambda: not server.held, "the trigger's end")
            assert (None, {"op": "wakeup"}, []) in events
        finally:
            lease.close()

    def test_a_trigger_where_nobody_listens_is_dropped(self, spool):
        ipc.trigger("private/nobody", {"op": "wakeup"})
        assert not os.path.exists("private/nobody")

    def test_oneway_requests_arrive_in_order_over_one_lease(self, server):
        sender = ipc.OneWay(EP)
        try:
            for n in range(3):
                assert sender.send({"op": "wakeup", "n": n})
            events = _collect(server, 3)
            assert events == [(None, {"op": "wakeup", "n": n}, []) for n in range(3)]
            assert server.uses == 1
        finally:
            sender.close()

    def test_oneway_takes_a_new_lease_after_bye(self, server):
        sender = ipc.OneWay(EP)
        try:
            assert sender.send({"n": 1})
            assert _collect(server, 1) == [(None, {"n": 1}, [])]
            server.retire_idle(time.monotonic() + ipc.LEASE_IDLE)
            wait_until(lambda: (sender.lease.check(), sender.lease.retiring)[1], 20, "BYE")
            assert sender.send({"n": 2})
            assert _collect(server, 1) == [(None, {"n": 2}, [])]
            assert server.uses == 2
        finally:
            sender.close()

    def test_oneway_to_nobody_reports_the_drop(self, spool):
        assert ipc.OneWay("private/nobody").send({"op": "wakeup"}) is False


# A worker in a process of its own, on the listening socket whose descriptor
# is its argument: it answers {"op": "exit"} by dying in the middle of the request.
WORKER = """
import os, socket, sys
from pymaster.util import ipc
server = ipc.Server(socket.socket(fileno=int(sys.argv[1])), many=False)
poller = ipc.Poller()
poller.register(server)
while True:
    poller.poll(None)
    for token, header, payload in server.events():
        if header.get("op") == "exit":
            os._exit(1)
        server.reply(token, {"pid": os.getpid()})
"""


def worker_process(listener) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(listener.fileno())],
                            pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL)


class TestLostWorker:
    def test_a_worker_process_that_dies_mid_request_fails_the_request_at_once(
            self, listener):
        proc = worker_process(listener)
        try:
            client = ipc.Client(EP, timeout=600)
            assert client.call({"op": "whoami"})[0] == {"pid": proc.pid}
            with pytest.raises(ipc.IpcError) as caught:
                client.call({"op": "exit"})
            assert str(caught.value) == "lost connection with svc service"
            assert not isinstance(caught.value, ipc.IpcTimeout)
            assert proc.wait(20) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_a_worker_thread_that_ends_mid_request_fails_the_request_at_once(self, server):
        box = in_thread(lambda: ipc.Client(EP, timeout=600).call({"op": "x"}))
        pump(server, lambda: server.last_request, "the request")
        server.close()                              # what a dying worker's exit does
        wait_until(lambda: "error" in box or "result" in box, 20, "the client's answer")
        assert isinstance(box.get("error"), ipc.IpcError)
        assert str(box["error"]) == "lost connection with svc service"


class TestLeave:
    """leave() (max_use, max_idle, reload, stop): BYE on every lease, no new
    lease; finished() once the clients have let go."""

    def test_leave_sends_bye_and_finishes_after_the_release(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            server.leave()
            assert not server.available()
            wait_until(lambda: (lease.check(), lease.retiring)[1], 20, "BYE")
            assert not server.finished(server.leaving)     # the client still holds it
            lease.close()
            pump(server, lambda: not server.held, "the release")
            assert server.finished(time.monotonic())
        finally:
            lease.close()

    def test_a_client_that_never_lets_go_is_left_after_the_grace(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            server.leave()
            assert not server.finished(server.leaving)
            assert server.finished(server.leaving + ipc.LEAVE_GRACE)
        finally:
            lease.close()

    def test_a_request_sent_before_the_bye_is_still_served(self, server):
        lease = ipc.Lease(EP)
        try:
            opened(server, lease)
            lease.send({"op": "late"})
            server.leave()
            requests = [e for e in _collect(server, 1) if e[0] is not None]
            assert requests[0][1] == {"op": "late"}
            server.reply(requests[0][0], {"ok": 1})
            wait_until(lambda: lease.sock.poll(20), 20, "the answer")
            assert lease.recv() == ({"ok": 1}, [])
        finally:
            lease.close()

    def test_a_client_whose_worker_left_takes_a_lease_of_the_next(self, spool):
        first = ServedHandler(EP, lambda header, payload: ({"worker": 1}, []), many=False)
        client = ipc.Client(EP)
        try:
            assert client.call({}, timeout=20)[0] == {"worker": 1}
            first.stop.set()
            first.thread.join()
            first.server.leave()
            wait_until(lambda: (client.lease.check(), client.lease.retiring)[1], 20, "BYE")
            second = ipc.Server(first.listener, many=False)
            box = in_thread(lambda: client.call({}, timeout=20))
            events = pump(second, lambda: second.last_request, "the request")
            (token, _, _), = [e for e in events if e[0] is not None]
            second.reply(token, {"worker": 2})
            wait_until(lambda: "result" in box, 20, "the answer")
            assert box["result"] == ({"worker": 2}, [])
            client.close()
            second.close()
        finally:
            client.close()
            first.close()


class TestUses:
    """max_use counts leases as Postfix counts connections, and a kept lease
    again every max_use requests (ipc._Uses)."""

    def test_every_lease_is_a_use(self):
        counter = ipc._Uses(100)
        for token in (b"a", b"b", b"c"):
            counter.lease(token)
        assert counter.uses == 3

    def test_a_kept_lease_counts_again_every_max_use_requests(self):
        counter = ipc._Uses(3)
        counter.lease(b"a")
        seen = []
        for _ in range(7):
            counter.request(b"a")
            seen.append(counter.uses)
        assert seen == [1, 1, 1, 2, 2, 2, 3]

    def test_without_a_limit_only_leases_count(self):
        counter = ipc._Uses(0)
        counter.lease(b"a")
        for _ in range(10):
            counter.request(b"a")
        assert counter.uses == 1

    def test_a_server_counts_its_leases_and_requests(self, listener):
        s = ipc.Server(listener, many=True, max_use=2)
        leases = [ipc.Lease(EP) for _ in range(2)]
        try:
            opened(s, *leases)
            assert s.uses == 2
            for n in range(3):                      # the third counts again
                exchange(s, leases[0], {"n": n})
            assert s.uses == 3
        finally:
            for lease in leases:
                lease.close()
            s.close()


class TestLeaseRule:
    """When a client takes another lease of a service."""

    now = 1000.0
    cores = ipc.LeaseRule.CORES

    def wants(self, held=cores, opening=0, waiting=1, waited=0.0, many=False,
              service=0.0, progress=0.0) -> bool:
        rule = ipc.LeaseRule(progress=progress, service=service)
        return rule.wants(held, opening, waiting, self.now - waited, self.now, many)

    def test_waiting_requests_get_a_lease_per_core_at_once(self):
        for held in range(self.cores):
            assert self.wants(held=held)

    def test_none_without_a_waiting_request(self):
        assert not self.wants(held=0, waiting=0)

    def test_none_while_one_is_opening(self):
        assert not self.wants(held=0, opening=1)
        assert not self.wants(opening=1, waiting=100, waited=60, many=True)

    def test_fast_requests_wait_for_a_busy_lease_however_many_wait(self):
        assert not self.wants(waiting=50, service=0.002)

    def test_slow_requests_take_another_when_the_queue_would_take_long(self):
        slow = ipc.LeaseRule.SLOW
        drains_in_time = int(ipc.LeaseRule.SPAWN_DELAY / slow)    # requests per lease
        held = self.cores
        assert not self.wants(held=held, waiting=drains_in_time * held, service=slow)
        assert self.wants(held=held, waiting=drains_in_time * held + 1, service=slow)
        assert not self.wants(held=held + 1, waiting=drains_in_time * held + 1, service=slow)

    def test_a_request_that_waited_spawn_delay_takes_another(self):
        assert self.wants(waiting=1, waited=ipc.LeaseRule.SPAWN_DELAY)

    def test_no_stall_while_leases_keep_going_to_requests(self):
        assert not self.wants(waiting=5, waited=ipc.LeaseRule.SPAWN_DELAY,
                              progress=self.now - ipc.LeaseRule.SPAWN_DELAY / 2)

    def test_the_time_per_request_follows_the_recent_ones(self):
        rule = ipc.LeaseRule()
        for _ in range(50):
            rule.served(0.2)
        assert abs(rule.service - 0.2) < 0.01
        for _ in range(50):
            rule.served(0.001)
        assert rule.service < ipc.LeaseRule.SLOW

    def test_a_service_of_many_clients_at_once_gets_one_per_waiting_request(self):
        assert self.wants(held=self.cores + 3, waiting=1, many=True)


class TestPoller:
    def test_it_answers_the_registered_objects_and_descriptors(self, server):
        poller = ipc.Poller()
        read_end, write_end = os.pipe()
        lease = None
        try:
            poller.register(server)
            poller.register(read_end)
            assert poller.poll(0) == []
            os.write(write_end, b"x")
            assert poller.poll(1000) == [read_end]
            os.read(read_end, 1)
            lease = ipc.Lease(EP)
            assert wait_until(lambda: poller.poll(20), 20, "the connection") == [server]
            poller.register(lease)
            server.events()                         # accepted: the greeting goes out
            assert wait_until(lambda: lease in poller.poll(20), 20, "the greeting")
            poller.unregister(lease)
            poller.unregister(lease)                # twice is harmless
            lease.open_done()
            poller.unregister(server)
            assert poller.poll(0) == []
        finally:
            os.close(read_end)
            os.close(write_end)
            if lease is not None:
                lease.close()


# -- ipc.AioClient: an asyncio program's requests (smtpd to cleanup and anvil),
# served by a worker thread (tests/support/served.py).

def run_aio(body) -> None:
    async def main():
        client = ipc.AioClient(EP, timeout=20)
        try:
            await body(client)
        finally:
            client.close()
    asyncio.run(main())


class TestAioClient:
    def test_an_answer_comes_back_and_its_lease_is_used_again(self, spool):
        served = ServedHandler(EP, lambda header, payload: ({"echo": header}, payload),
                               many=False)
        try:
            async def body(client):
                for n in range(3):
                    assert await client.request({"n": n}, [b"x"]) == {"echo": {"n": n}}
                assert len(client._idle) == 1
            run_aio(body)
            assert served.server.uses == 1
        finally:
            served.close()

    @staticmethod
    def holding_the_first(release: threading.Event) -> ServedHandler:
        """holding_the_first - a one-at-a-time worker whose answer to request
        n=0 waits for RELEASE."""
        def handler(header, payload):
            if header["n"] == 0:
                release.wait(20)
            return {"echo": header}, []
        return ServedHandler(EP, handler, many=False)

    @staticmethod
    async def first_in_hand(client, served: ServedHandler):
        """first_in_hand - request n=0 sent, and in the worker's hands."""
        first = asyncio.ensure_future(client.request({"n": 0}))
        async with asyncio.timeout(20):
            while served.requests == 0:
                await asyncio.sleep(0.01)
        return first

    def test_beyond_a_lease_per_core_a_request_waits_for_the_busy_lease(self, spool):
        release = threading.Event()
        served = self.holding_the_first(release)
        try:
            async def body(client):
                client.rule.CORES = 1               # as on one core
                client.rule.SPAWN_DELAY = 3600      # only the backlog could take another
                first = await self.first_in_hand(client, served)
                second = asyncio.ensure_future(client.request({"n": 1}))
                async with asyncio.timeout(20):
                    while not client._waiters:
                        await asyncio.sleep(0)
                assert client._held == 1 and client._opening == 0
                release.set()
                assert await first == {"echo": {"n": 0}}
                assert await second == {"echo": {"n": 1}}
                assert client._held == 1
            run_aio(body)
            assert served.server.uses == 1
        finally:
            release.set()
            served.close()

    def test_a_request_stalled_behind_a_busy_lease_takes_another(self, spool):
        """After SPAWN_DELAY (here none) a waiting request asks for a lease of
        its own, so that the master starts another worker, but it takes the
        first lease that comes: here the busy one, once answered."""
        release = threading.Event()
        served = self.holding_the_first(release)
        try:
            async def body(client):
                client.rule.SPAWN_DELAY = 0
                first = await self.first_in_hand(client, served)
                second = asyncio.ensure_future(client.request({"n": 1}))
                async with asyncio.timeout(20):
                    while not client._opening:
                        await asyncio.sleep(0.01)
                assert client._held == 2            # one busy, one in the listen queue
                release.set()
                assert await first == {"echo": {"n": 0}}
                assert await second == {"echo": {"n": 1}}
                assert served.requests == 2
            run_aio(body)
        finally:
            release.set()
            served.close()

    def test_concurrent_requests_to_a_service_of_many_take_a_lease_each(self, spool):
        served = ServedHandler(EP, lambda header, payload: ({"echo": header}, []), many=True)
        try:
            async def body(client):
                assert await client.request({"n": -1}) == {"echo": {"n": -1}}
                assert client.many
                replies = await asyncio.gather(*(client.request({"n": n}) for n in range(5)))
                assert [r["echo"]["n"] for r in replies] == list(range(5))
                assert len(client._idle) == client._held >= 1
            run_aio(body)
        finally:
            served.close()

    def test_notify_delivers_a_one_way_request(self, spool):
        served = ServedHandler(EP, lambda header, payload: ({}, []))
        try:
            async def body(client):
                client.notify({"op": "disconnect", "n": 1})
                client.notify({"op": "disconnect", "n": 2})
            run_aio(body)
            wait_until(lambda: len(served.triggers) == 2, 20, "the notifications")
            assert served.triggers == [{"op": "disconnect", "n": 1},
                                       {"op": "disconnect", "n": 2}]
            assert served.requests == 0
        finally:
            served.close()

    def test_a_request_without_an_answer_times_out_and_its_lease_is_dropped(self, spool):
        release = threading.Event()
        served = ServedHandler(EP, lambda header, payload: (release.wait(20), ({}, []))[1])
        try:
            async def body(client):
                client.timeout = 0.2
                with pytest.raises(ipc.IpcTimeout,
                                   match=r"^timeout after 0.2s waiting for private/svc$"):
                    await client.request({"op": "reserve"})
                assert client._idle == [] and client._held == 0
            run_aio(body)
        finally:
            release.set()
            served.close()

    def test_a_worker_that_dies_mid_request_fails_it_at_once(self, listener):
        proc = worker_process(listener)
        try:
            async def body(client):
                assert await client.request({"op": "whoami"}) == {"pid": proc.pid}
                with pytest.raises(ipc.IpcError, match="^lost connection with svc service$"):
                    await client.request({"op": "exit"}, timeout=600)
                assert client._held == 0
            run_aio(body)
            assert proc.wait(20) == 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_a_service_nobody_serves_fails_its_waiters(self, spool):
        async def body(client):
            with pytest.raises(ipc.IpcError, match="connect to private/svc"):
                await client.request({"op": "x"})
        run_aio(body)
