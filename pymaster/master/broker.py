"""The master's side of one brokered service endpoint (load-balancing broker).

A Broker binds the two zeromq endpoints of an internal service (see
pymaster.util.ipc for the frame layout):

  frontend  ipc://{private|public}/NAME           clients' requests come in here
  backend   ipc://{private|public}/.NAME.workers  the service's workers connect here

Workers announce credit (READY n); the broker hands each waiting request to
the worker with credit that has waited longest, and a worker's reply both
goes back to its client and returns one credit. Requests that find no credit
wait in the broker, and `wanted()` tells the master how many more workers
would help, which is how services start on demand.

Workers start one at a time, never while another is starting: waiting
requests want a first worker at once, and one more when more than BACKLOG
requests wait per running worker, or when no request has been handed to a
worker (and no worker has announced itself) for SPAWN_DELAY while requests
wait. A busy Python worker usually answers within a millisecond or two
(cleanup, discard, local) and costs about 0.1 s of CPU to start: one new
worker per waiting request made a burst of 20 SMTP sessions start 20
cleanup and 13 discard workers, more CPU than the messages themselves
(docs/architecture.md has the figures). Slow agents (smtp to remote sites)
still get their parallel workers, one per start-up time. `spawn_due()` says
when the stall rule may want another worker, so the master wakes up for it
even when nothing else happens.

A worker leaves by sending BYE (max_use, max_idle, reload, stop). The broker
forgets its credit and answers BYE, so the worker knows that nothing more can
be on its way and can exit without dropping a request. A worker that died
without saying goodbye is forgotten with `forget(pid)`, and each request it
held is answered for it with an error ("lost connection with SERVICE"), so the
client (qmgr) defers at once instead of waiting for its timeout. Nothing is
lost either way: nothing is acknowledged before it is on disk.

The master's own wakeup triggers enter through `inject()`; their replies are
dropped.

Routing is the master's hot path, so it does as little Python per frame as
it can: a request is kept as the list of zmq Frames it arrived in and goes
to the worker unchanged behind the worker's id; a reply goes to its client
as the frames after the worker's id. Frames are never copied, and nothing
is decoded but the ids (the wire format is pymaster.util.ipc's).

Interface:
    Broker(visibility, name)          binds both endpoints (relative paths)
    broker.frontend / broker.backend  the zmq sockets, for the master's poller
    broker.on_frontend() / on_backend()   handle what is readable
    broker.inject(header)             a request from the master (wakeup)
    broker.wanted(starting) -> int    how many more workers pending requests need
    broker.spawn_due() -> float|None  when wanted() may grow without any traffic
    broker.retire(pid) / forget(pid)  stop routing to a worker (reload) / it died
    broker.has_started(pid)           the worker has said READY
    broker.used                       set when any request came through
    broker.close()
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from typing import cast

import zmq

from pymaster.util import ipc

MASTER_CLIENT = b"\x00master"      # the client id of injected requests
SOCKET_MODE = 0o666                # the directory, not the socket, guards access
SPAWN_DELAY = 0.1                  # seconds a request waits for a busy worker first
BACKLOG = 4                        # requests that may wait per busy worker

# Plain ints: zmq's flag enums cost more per `|` than the send they decorate.
_MORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


class Broker:
    """Requests for one service, queued until a worker has credit."""

    def __init__(self, visibility: str, name: str) -> None:
        self.name = name
        self.visibility = visibility
        ctx = ipc.context()
        self.frontend = ctx.socket(zmq.ROUTER)
        self.backend = ctx.socket(zmq.ROUTER)
        for sock in (self.frontend, self.backend):
            sock.setsockopt(zmq.LINGER, 0)
            # A reply for a client that has gone is dropped, not an error.
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.front_path = os.path.join(visibility, name)
        self.back_path = os.path.join(visibility, f".{name}.workers")
        _bind(self.frontend, self.front_path)
        _bind(self.backend, self.back_path)
        self.credits: OrderedDict[bytes, int] = OrderedDict()
        self.pending: deque[tuple[bytes, list]] = deque()
        self.arrivals: deque[float] = deque()   # monotonic arrival of each pending
        self.progress = 0.0         # last hand-out, worker start or spawn (monotonic)
        self.retired: set[bytes] = set()
        self.seen: set[bytes] = set()     # workers that have said READY
        # Requests each worker holds: (client id, header frame), oldest first.
        self.inflight: dict[bytes, list[tuple[bytes, object]]] = {}
        self.used = False
        self.requests = 0

    # -- traffic -----------------------------------------------------------
    def on_frontend(self) -> None:
        """on_frontend - queue every request that has arrived, then dispatch."""
        sock = self.frontend
        while True:
            frames = _recv(sock)
            if frames is None:
                break
            # [client_id, b"", header, *payload], kept as received for the worker.
            if len(frames) < 3:
                continue
            self.pending.append((frames[0].bytes, frames))
            self.arrivals.append(time.monotonic())
            self.used = True
        if self.credits:
            self.dispatch()

    def on_backend(self) -> None:
        """on_backend - replies, READY credits and BYEs from workers."""
        sock = self.backend
        while True:
            frames = _recv(sock)
            if frames is None:
                break
            self._from_worker(frames)
        if self.pending:
            self.dispatch()

    def _from_worker(self, frames: list) -> None:
        # [worker_id, b"", client, b"", header, *payload] | [worker_id, b"", READY, n]
        # | [worker_id, b"", BYE]
        if len(frames) >= 5:
            self._reply(frames)
        elif len(frames) >= 3:
            self._control(frames[0].bytes, frames)

    def _reply(self, frames: list) -> None:
        """_reply - a worker's answer: one credit back, the frames on to the client."""
        worker, client = frames[0].bytes, frames[2].bytes
        self._answered(worker, client)
        credits = self.credits
        if worker in self.seen and worker not in self.retired:
            # Back of the line: the longest-waiting worker gets the next request.
            credits[worker] = credits.pop(worker, 0) + 1
        if client != MASTER_CLIENT:
            # [client, b"", header, *payload]: exactly what the client's DEALER expects.
            try:
                _send(self.frontend, frames, 2)
            except zmq.ZMQError:
                pass

    def _control(self, worker: bytes, frames: list) -> None:
        """_control - READY (credit) or BYE (leaving) from WORKER."""
        kind = frames[2].bytes
        if kind == ipc.READY:
            count = int(frames[3].bytes) if len(frames) > 3 else 1
            self.seen.add(worker)
            self.progress = time.monotonic()
            if worker not in self.retired:
                self.credits[worker] = self.credits.get(worker, 0) + count
        elif kind == ipc.BYE:
            self.credits.pop(worker, None)
            self.retired.add(worker)        # until it is reaped: no more credit
            self._send_worker(worker, [ipc.BYE])

    def dispatch(self) -> None:
        """dispatch - give waiting requests to workers with credit, oldest first."""
        pending, credits, inflight = self.pending, self.credits, self.inflight
        while pending and credits:
            worker = next(iter(credits))
            left = credits[worker] - 1
            if left > 0:
                credits[worker] = left
            else:
                del credits[worker]
            client, frames = pending.popleft()
            self.arrivals.popleft()
            # [client, b"", header, *payload] goes on as received, behind the worker's id.
            self._send_worker(worker, frames)
            held = inflight.get(worker)
            if held is None:
                inflight[worker] = [(client, frames[2])]
            else:
                held.append((client, frames[2]))
            self.requests += 1
            self.progress = time.monotonic()

    def _answered(self, worker: bytes, client: bytes) -> None:
        """_answered - WORKER replied to CLIENT: that request is no longer held."""
        held = self.inflight.get(worker)
        if not held:
            return
        for i, (holder, _) in enumerate(held):
            if holder == client:
                del held[i]
                break
        if not held:
            del self.inflight[worker]

    def _fail_held(self, worker: bytes) -> None:
        """_fail_held - answer the requests a dead WORKER held, with an error."""
        for client, header_frame in self.inflight.pop(worker, []):
            if client == MASTER_CLIENT:
                continue
            try:
                request, _ = ipc.unpack([header_frame])
            except ipc.IpcError:
                request = {}
            reply = {"status": "error", "reason": f"lost connection with {self.name} service"}
            if "id" in request:
                reply["id"] = request["id"]
            try:
                self.frontend.send_multipart([client, b"", *ipc.pack(reply)])
            except zmq.ZMQError:
                pass

    def _send_worker(self, worker: bytes, frames: list) -> None:
        """_send_worker - [worker, b"", *FRAMES] on the backend."""
        sock = self.backend
        try:
            sock.send(worker, _MORE)
            sock.send(b"", _MORE)
            _send(sock, frames, 0)
        except zmq.ZMQError:
            pass

    def inject(self, header: dict) -> None:
        """inject - a request from the master itself (a wakeup trigger)."""
        self.pending.append((MASTER_CLIENT, [MASTER_CLIENT, b"", *ipc.pack(header)]))
        self.arrivals.append(time.monotonic())
        self.dispatch()

    def injected_pending(self) -> bool:
        """injected_pending - a trigger of ours still waits for a worker."""
        return any(client == MASTER_CLIENT for client, _ in self.pending)

    # -- workers -----------------------------------------------------------
    def free_credit(self) -> int:
        return sum(self.credits.values())

    def wanted(self, starting: int) -> int:
        """wanted - workers to start now for the waiting requests (0 or 1):
        the first one at once, another for a backlog or after a stall.

        The master starts what this answers, so an answer of 1 counts as
        progress: the next one is due SPAWN_DELAY later at the earliest."""
        if not self.pending or starting or self.free_credit():
            return 0
        now = time.monotonic()
        if self._serving() and now < self._stalled_at() \
                and len(self.pending) <= BACKLOG * self._workers():
            return 0
        self.progress = now
        return 1

    def spawn_due(self) -> float | None:
        """spawn_due - monotonic time wanted() may want a worker, when that
        is still to come; None when nothing waits for it."""
        if not self.pending or not self._serving():
            return None
        due = self._stalled_at()
        return due if due > time.monotonic() else None

    def _workers(self) -> int:
        """_workers - workers that have started and still take requests."""
        return len(self.seen - self.retired)

    def _stalled_at(self) -> float:
        """_stalled_at - when the waiting requests count as stalled."""
        return max(self.progress, self.arrivals[0]) + SPAWN_DELAY

    def _serving(self) -> bool:
        """_serving - a worker that still takes requests holds some or has credit."""
        if self.credits:
            return True
        return any(w not in self.retired for w in self.inflight)

    def retire(self, pid: int) -> None:
        """retire - route nothing more to worker PID (its generation ended)."""
        worker = str(pid).encode()
        self.credits.pop(worker, None)
        self.retired.add(worker)

    def forget(self, pid: int) -> None:
        """forget - worker PID is dead: answer what it held, drop its credit."""
        worker = str(pid).encode()
        self._fail_held(worker)
        self.credits.pop(worker, None)
        self.retired.discard(worker)
        self.seen.discard(worker)

    def has_started(self, pid: int) -> bool:
        """has_started - worker PID has announced itself."""
        return str(pid).encode() in self.seen

    def close(self) -> None:
        for sock, path in ((self.frontend, self.front_path), (self.backend, self.back_path)):
            sock.close(0)
            try:
                os.unlink(path)
            except OSError:
                pass


def _recv(sock: zmq.Socket) -> list | None:
    """_recv - the next whole message on SOCK as zmq Frames (never copied),
    or None when none waits. Asking first is cheaper than zmq.Again, and the
    rest of a multipart message is always there once its first frame is."""
    if not cast(int, sock.get(_EVENTS)) & _POLLIN:
        return None
    frame = sock.recv(_NOBLOCK, copy=False)
    frames = [frame]
    while frame.more:
        frame = sock.recv(_NOBLOCK, copy=False)
        frames.append(frame)
    return frames


def _send(sock: zmq.Socket, frames: list, first: int) -> None:
    """_send - FRAMES[FIRST:] as the rest of one message, each frame as it is
    (a received Frame goes on without a copy of its data)."""
    last = len(frames) - 1
    send = sock.send
    for i in range(first, last):
        send(frames[i], _MORE, copy=False)
    send(frames[last], 0, copy=False)


def _bind(sock: zmq.Socket, path: str) -> None:
    """_bind - bind an ipc endpoint at PATH (relative: ipc paths are short)."""
    sock.bind("ipc://" + path)
    try:
        os.chmod(path, SOCKET_MODE)
    except OSError:
        pass
