"""qmgr's requests to other services: delivery agents and the bounce service.

qmgr holds leases on the agents' workers (pymaster.util.ipc), a pool per
service, as Postfix's qmgr holds connections to them: one request in flight
on each, so the answer that comes back on a lease belongs to the one request
sent on it, whatever order agents finish in. A request waits for a lease of
its service's pool to come back rather than take another, as ipc.LeaseRule
says: a busy agent usually answers within milliseconds, and a new lease on a
one-at-a-time service may start a process (0.1 s of CPU). A request that
waits longer than LeaseRule.SPAWN_DELAY gets a lease of its own, so nothing
waits long behind an agent stuck on a slow peer.

A request not answered within the timeout (an agent that died mid-request
without closing, or one stuck) is given up: its lease is closed, so a late
answer can never be mistaken for another's, and the caller is told with
header None. An agent that dies closes its lease: the request in flight on
it fails at once ("lost connection with SERVICE service").

Interface:
    Dispatcher(poller, timeout)
    .available(service) -> bool          the master listens for SERVICE
    .send(service, header, on_reply)     on_reply(header | None, reason)
    .owns(item) / .receive(lease)        for the event loop (items the poller answered)
    .expire(now)                         time out overdue requests, open stalled leases
    .next_deadline() -> float | None
    .in_flight -> int
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pymaster.util import ipc, log

OnReply = Callable[[dict | None, str], None]
ENDPOINT_RECHECK = 1.0      # seconds a service's endpoint is known to exist (or not)


@dataclass
class Request:
    header: dict
    on_reply: OnReply
    arrival: float              # monotonic
    deadline: float             # monotonic
    sent: float = 0.0           # monotonic


@dataclass(eq=False)
class Pool:
    """The leases qmgr holds on one service's workers."""
    service: str
    idle: list[ipc.Lease] = field(default_factory=list)
    opening: set[ipc.Lease] = field(default_factory=set)
    busy: dict[ipc.Lease, Request] = field(default_factory=dict)
    waiting: deque[Request] = field(default_factory=deque)
    many: bool = False
    rule: ipc.LeaseRule = field(default_factory=ipc.LeaseRule)

    @property
    def held(self) -> int:
        return len(self.idle) + len(self.opening) + len(self.busy)


class Dispatcher:
    """Leases per service, requests waiting for them, with timeouts."""

    def __init__(self, poller: ipc.Poller, timeout: float) -> None:
        self.poller = poller
        self.timeout = timeout
        self.pools: dict[str, Pool] = {}
        self.owner: dict[ipc.Lease, Pool] = {}
        self.endpoints: dict[str, tuple[float, bool]] = {}     # service -> (checked, exists)

    @property
    def in_flight(self) -> int:
        return sum(len(p.busy) + len(p.waiting) for p in self.pools.values())

    def available(self, service: str) -> bool:
        """available - whether the master has an endpoint for SERVICE; asked
        of the file system at most once a second per service, not for every
        request (a stat per message)."""
        now = time.monotonic()
        known = self.endpoints.get(service)
        if known is None or now - known[0] >= ENDPOINT_RECHECK:
            exists = os.path.exists(os.path.join("private", service))
            known = self.endpoints[service] = (now, exists)
        return known[1]

    def send(self, service: str, header: dict, on_reply: OnReply) -> None:
        """send - HEADER to private/SERVICE; ON_REPLY gets the answer later."""
        pool = self.pools.get(service)
        if pool is None:
            pool = self.pools[service] = Pool(service)
        now = time.monotonic()
        pool.waiting.append(Request(header, on_reply, now, now + self.timeout))
        self._pump(pool, now)

    def _pump(self, pool: Pool, now: float) -> None:
        """_pump - waiting requests onto idle leases; another lease if the rule says so."""
        while pool.waiting and pool.idle:
            lease = pool.idle.pop()
            lease.check()
            if not lease.usable:
                self._drop(pool, lease)
                continue
            self._start(pool, lease, pool.waiting.popleft(), now)
            pool.rule.moved(now)
        if pool.waiting and pool.rule.wants(pool.held, len(pool.opening), len(pool.waiting),
                                            pool.waiting[0].arrival, now, pool.many):
            self._open(pool)

    def _start(self, pool: Pool, lease: ipc.Lease, request: Request, now: float) -> None:
        request.sent = now
        try:
            lease.send(request.header)
        except Exception as e:      # the transport refuses: the lease is no good
            self._drop(pool, lease)
            request.on_reply(None, f"{ipc.lost_connection(pool.service)}: {e}")
            return
        pool.busy[lease] = request

    def _open(self, pool: Pool) -> None:
        try:
            lease = ipc.Lease(os.path.join("private", pool.service))
        except ipc.IpcError as e:
            if not pool.held:
                self._fail_waiting(pool, str(e))
            return
        pool.opening.add(lease)
        self.owner[lease] = pool
        self.poller.register(lease)

    def owns(self, item) -> bool:
        return item in self.owner

    def receive(self, lease: ipc.Lease) -> None:
        """receive - what the poller saw on LEASE: its greeting, an answer,
        its worker's BYE or end."""
        pool = self.owner[lease]
        if lease in pool.opening:
            self._opened(pool, lease)
        else:
            self._answered(pool, lease)
        self._pump(pool, time.monotonic())

    def _opened(self, pool: Pool, lease: ipc.Lease) -> None:
        try:
            if not lease.open_done():
                return
        except ipc.IpcError as e:
            self._drop(pool, lease)
            if not pool.held:
                self._fail_waiting(pool, str(e))
            return
        pool.opening.discard(lease)
        pool.many = lease.many
        pool.idle.append(lease)

    def _answered(self, pool: Pool, lease: ipc.Lease) -> None:
        lease.check()
        request = pool.busy.get(lease)
        if request is None:
            if not lease.usable:
                self._drop(pool, lease)
            return
        if not lease.has_reply():
            if lease.lost():
                del pool.busy[lease]
                self._drop(pool, lease)
                request.on_reply(None, str(ipc.lost_connection(pool.service)))
            return
        del pool.busy[lease]
        pool.rule.served(time.monotonic() - request.sent)
        try:
            header, _ = lease.recv()
        except ipc.IpcError as e:
            self._drop(pool, lease)
            request.on_reply(None, f"bad answer from {pool.service} service: {e}")
            return
        if lease.usable:
            pool.idle.append(lease)
        else:
            self._drop(pool, lease)
        request.on_reply(header, "")

    def expire(self, now: float | None = None) -> None:
        """expire - give up on requests past their deadline; a request that
        has waited for a lease long enough gets one of its own."""
        now = time.monotonic() if now is None else now
        for pool in list(self.pools.values()):
            for lease, request in list(pool.busy.items()):
                if request.deadline <= now:
                    del pool.busy[lease]
                    self._drop(pool, lease)
                    self._timed_out(pool, request)
            while pool.waiting and pool.waiting[0].deadline <= now:
                self._timed_out(pool, pool.waiting.popleft())
            if pool.waiting:
                self._pump(pool, now)

    def _timed_out(self, pool: Pool, request: Request) -> None:
        log.warning(f"timeout after {self.timeout:g}s waiting for "
                    f"private/{pool.service}; request given up")
        request.on_reply(None, "unknown mail transport error")

    def next_deadline(self) -> float | None:
        """next_deadline - monotonic time of the next timeout or lease decision."""
        due = None
        now = time.monotonic()
        for pool in self.pools.values():
            times = [r.deadline for r in pool.busy.values()]
            if pool.waiting:
                times.append(pool.waiting[0].deadline)
                stalled = pool.rule.stalled_at(pool.waiting[0].arrival)
                if stalled > now:
                    times.append(stalled)
            if times:
                first = min(times)
                due = first if due is None else min(due, first)
        return due

    def _fail_waiting(self, pool: Pool, reason: str) -> None:
        """_fail_waiting - no lease can be had: the waiting requests learn why now."""
        while pool.waiting:
            pool.waiting.popleft().on_reply(None, reason)

    def _drop(self, pool: Pool, lease: ipc.Lease) -> None:
        pool.opening.discard(lease)
        if lease in pool.idle:
            pool.idle.remove(lease)
        self.owner.pop(lease, None)
        self.poller.unregister(lease)
        lease.close()

    def close(self) -> None:
        for pool in self.pools.values():
            for lease in list(pool.idle) + list(pool.opening) + list(pool.busy):
                self.poller.unregister(lease)
                lease.close()
        self.pools.clear()
        self.owner.clear()
