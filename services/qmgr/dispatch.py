"""qmgr's requests to other services: delivery agents and the bounce service.

Each request travels on its own ipc.AsyncClient connection, taken from a
pool per service, so the answer that comes back on a connection belongs to
the one request in flight on it, whatever order agents finish in. A request
not answered within the timeout (an agent that died mid-request) is given
up: its connection is closed, so a late answer can never be mistaken for
another's, and the caller is told with header None.

Interface:
    Dispatcher(poller, timeout)
    .available(service) -> bool          the master listens for SERVICE
    .send(service, header, on_reply)     on_reply(header | None, reason)
    .owns(item) / .receive(client)       for the event loop (items the poller answered)
    .expire(now)                         time out overdue requests
    .next_deadline() -> float | None
    .in_flight -> int
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

from pymaster.util import ipc, log

OnReply = Callable[[dict | None, str], None]


@dataclass
class Pending:
    service: str
    client: ipc.AsyncClient
    deadline: float
    on_reply: OnReply


class Dispatcher:
    """Request connections per service, with timeouts."""

    def __init__(self, poller: ipc.Poller, timeout: float) -> None:
        self.poller = poller
        self.timeout = timeout
        self.idle: dict[str, list[ipc.AsyncClient]] = {}
        self.pending: dict[ipc.AsyncClient, Pending] = {}

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    def available(self, service: str) -> bool:
        """available - whether the master has an endpoint for SERVICE."""
        return os.path.exists(os.path.join("private", service))

    def send(self, service: str, header: dict, on_reply: OnReply) -> None:
        """send - HEADER to private/SERVICE; ON_REPLY gets the answer later."""
        pool = self.idle.setdefault(service, [])
        if pool:
            client = pool.pop()
        else:
            client = ipc.AsyncClient(ipc.endpoint("private", service))
            self.poller.register(client)
        client.send(header)
        self.pending[client] = Pending(service, client, time.monotonic() + self.timeout,
                                            on_reply)

    def owns(self, item) -> bool:
        return item in self.pending

    def receive(self, client: ipc.AsyncClient) -> None:
        """receive - hand the answer waiting on CLIENT to its request's callback."""
        p = self.pending.pop(client)
        try:
            header, _ = p.client.recv()
        except ipc.IpcError as e:
            self._drop(p)
            p.on_reply(None, f"bad answer from {p.service} service: {e}")
            return
        self.idle[p.service].append(p.client)
        p.on_reply(header, "")

    def expire(self, now: float | None = None) -> None:
        """expire - give up on requests past their deadline."""
        now = time.monotonic() if now is None else now
        overdue = [c for c, p in self.pending.items() if p.deadline <= now]
        for client in overdue:
            p = self.pending.pop(client)
            log.warning(f"timeout after {self.timeout:g}s waiting for "
                        f"private/{p.service}; request given up")
            self._drop(p)
            p.on_reply(None, "unknown mail transport error")

    def next_deadline(self) -> float | None:
        """next_deadline - monotonic time of the earliest timeout, if any."""
        if not self.pending:
            return None
        return min(p.deadline for p in self.pending.values())

    def _drop(self, p: Pending) -> None:
        self.poller.unregister(p.client)
        p.client.close()

    def close(self) -> None:
        for p in list(self.pending.values()):
            self._drop(p)
        self.pending.clear()
        for pool in self.idle.values():
            for client in pool:
                self.poller.unregister(client)
                client.close()
        self.idle.clear()
