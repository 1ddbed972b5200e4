"""Messages between pymaster programs: leases on the master's sockets,
requests and replies over zeromq.

The master never carries a message (Postfix's model). For every internal
service it listens on a unix stream socket, `private/NAME` or `public/NAME`
as master.cf says, and starts a worker when a connection waits there and no
worker is available. A worker accepts a connection: that connection is the
client's lease on that worker. Requests and replies then go straight between
the two over the worker's own zeromq endpoint, named in the greeting:

  private/NAME                  the master's listening socket (the lease desk)
  private/.PID-N                the worker's zeromq ROUTER (a short name:
                                a socket's path must fit 107 bytes, and a
                                worker's should fit wherever its service's does)

On the lease connection:
  worker -> client   greeting  b"<endpoint> <token> <1|*>\\n": the endpoint's
                     file name (beside the service's socket), the routing id
                     the client's zeromq socket takes, and whether the worker
                     serves this lease alone (1: cleanup, the delivery agents)
                     or many at once (*: anvil, proxymap, qmgr ...)
                     BYE b"B": the lease ends; no new request goes on it
  client -> worker   trigger frames (4-byte big-endian length, JSON header):
                     one-way requests nobody answers (wake qmgr, wake pickup)
                     end of file: the client lets the lease go
A worker that dies closes its end: the client sees end of file at once and
fails what it had in flight ("lost connection with NAME service").

On zeromq (the client's DEALER, the worker's ROUTER):
  client -> worker   b"", header, *payload
  worker -> client   b"", header, *payload

Every message is [header, *payload]: the header is a JSON object, the payload
frames are raw bytes (message content, sent without copying). Paths are
relative to the queue directory, every program's working directory, so they
work unchanged inside a chroot.

A client takes leases as Postfix's clients take connections, and waits for a
busy lease of its own before it takes another (LeaseRule): a Python worker
costs about 0.1 s of CPU to start, so a lease per waiting request would start
one per request in a burst (docs/architecture.md, "The data path").

Interface:
    endpoint(visibility, name) / service_endpoint(name)
    pack(header, payload) / unpack(frames)
    Lease(endpoint): one lease (qmgr's dispatcher drives its own)
    LeaseRule: when a client takes another lease of a one-at-a-time service
    Client(endpoint).call(header, payload, timeout) -> (header, payload)
    AioClient(endpoint, timeout): await request(header, payload), notify(header),
        for an asyncio program (smtpd: cleanup, anvil; postscreen: dnsblog)
    IpcTimeout: the IpcError of a request that got no answer in time
    lost_connection(name): the IpcError of a request whose worker went away
    Poller(): what one thread waits on (servers, leases, plain descriptors)
    trigger(endpoint, header): a one-way wakeup on a connection of its own
    OneWay(endpoint).send(header): the same over a kept lease (a trigger per message)
    Server(listener, many, max_use): the service side
    Again: nothing waits (Server.recv_request)
"""

from __future__ import annotations

import itertools
import json
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, cast

import orjson
import zmq

BYE = b"B"
ONE, MANY = b"1", b"*"
LEASE_IDLE = 2.0        # seconds a one-at-a-time lease may sit unused before its worker ends it
SHARED_LEASE_IDLE = 5.0  # the same for a lease on a worker that serves many (Postfix's ipc_idle)
LEAVE_GRACE = 0.5       # seconds a leaving worker still serves requests sent before its BYE
LEAVE_LIMIT = 5.0       # seconds a leaving worker waits for its clients at most
BYE_GRACE = 0.2         # seconds a client waits for a reply that raced its worker's exit
QUEUE_FULL_RETRY = 0.01  # seconds between connects while the service's listen queue is full
_FRAME = struct.Struct(">I")
_GREETING_MAX = 256
_TRIGGER_MAX = 65536

# Built once: json.dumps() with separators builds an encoder per call, and
# json.loads() of bytes guesses their encoding first; headers are ASCII JSON
# (ensure_ascii), so UTF-8 is all a header can be.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_DECODER = json.JSONDecoder()


class IpcError(Exception):
    """A service did not answer in time, or answered nonsense."""


class IpcTimeout(IpcError):
    """A service did not answer within the time a request allowed."""


class Again(Exception):
    """A receive that must not wait found nothing waiting."""


# Plain ints: pyzmq's send_multipart/recv_multipart combine IntFlag members
# per frame, which costs more than the frames themselves (about 4 us of
# CPU per request and reply, measured on a 3-frame message).
_SNDMORE = int(zmq.SNDMORE)
_RCVMORE = int(zmq.RCVMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)


def _send(sock: zmq.Socket, frames: list, copy: bool = True, flags: int = 0) -> None:
    """_send - FRAMES as one zeromq message; FLAGS (_NOBLOCK) on every frame."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, (_SNDMORE if i < last else 0) | flags, copy=copy)


def _recv(sock: zmq.Socket, flags: int = 0) -> list:
    """_recv - the frames of one zeromq message (bytes); FLAGS for the first."""
    frames = [sock.recv(flags)]
    while sock.getsockopt(_RCVMORE):
        frames.append(sock.recv(0))
    return frames


def _readable(sock: zmq.Socket) -> bool:
    """_readable - a whole message waits on SOCK (its own flags, no poller)."""
    return bool(cast(int, sock.get(_EVENTS)) & _POLLIN)


def endpoint(visibility: str, name: str, queue_dir: str = "") -> str:
    """endpoint - where clients reach service NAME (private/ or public/)."""
    return os.path.join(queue_dir, visibility, name)


def _path(ep: str) -> str:
    """_path - the socket path of endpoint EP (an old `ipc://` prefix is dropped)."""
    return ep[6:] if ep.startswith("ipc://") else ep


def _shortest(path: str) -> str:
    """_shortest - PATH, or the same file relative to the working directory
    when that is shorter: a socket's path must fit sun_path (107 bytes), and
    a program's working directory is the queue directory, where a deep spool
    (a test's) leaves a worker's endpoint too little room."""
    if not os.path.isabs(path):
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if len(relative) < len(path) else path


def pack(header: dict, payload: Iterable[bytes] = ()) -> list:
    """pack - [JSON header, *payload]: orjson (several times faster than json,
    a few percent of every program's CPU per message), json for what orjson
    refuses (a lone surrogate: smtpd keeps undecodable bytes as surrogateescape)."""
    try:
        encoded = orjson.dumps(header, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        encoded = _ENCODER.encode(header).encode()
    return [encoded, *payload]


def unpack(frames: list) -> tuple[dict, list]:
    if not frames:
        raise IpcError("empty message")
    try:
        try:
            header = orjson.loads(frames[0] if isinstance(frames[0], bytes)
                                  else bytes(frames[0]))
        except orjson.JSONDecodeError:      # a \udcXX escape: json takes it
            header = _DECODER.decode(bytes(frames[0]).decode("utf-8"))
    except ValueError as e:
        raise IpcError(f"malformed message header: {e}") from None
    if not isinstance(header, dict):
        raise IpcError("malformed message header: not an object")
    return header, list(frames[1:])


def trigger_frame(header: dict) -> bytes:
    """trigger_frame - HEADER as a one-way request on a lease connection."""
    data = pack(header)[0]
    return _FRAME.pack(len(data)) + data


def context() -> zmq.Context:
    return zmq.Context.instance()


# ---------------------------------------------------------------------------
# The client side.

def lost_connection(name: str) -> IpcError:
    """lost_connection - the error of a request whose worker of service NAME
    went away before answering (what a client logs and defers with)."""
    return IpcError(f"lost connection with {name} service")


class Lease:
    """The client side of one lease: the connection the worker accepted and,
    once its greeting has come, a zeromq socket to the worker's endpoint.

    Opening never blocks: connect() goes into the master's listen queue, and
    the greeting arrives when a worker accepts (open_done(), or wait_open()
    for a blocking client). One request is in flight on a lease at a time.
    `retiring` (the worker said BYE) and `gone` (end of file) are noticed by
    check(), which the owner calls when the connection is readable."""

    def __init__(self, ep: str) -> None:
        self.path = _path(ep)
        self.name = os.path.basename(self.path)
        self.sock = None            # zmq socket, after the greeting
        self.many = False
        self.retiring = False
        self.gone = False
        self.inflight: Any = None   # an asyncio owner's future for the answer in flight
        self._greeting = b""
        self.queued = True          # in the listen queue; False: the queue was full
        self.conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.conn.setblocking(False)
        self._connect()

    def _connect(self) -> None:
        try:
            self.conn.connect(_shortest(self.path))
            self.queued = True
        except BlockingIOError:
            self.queued = False     # the listen queue is full: try again later
        except OSError as e:
            self.conn.close()
            raise IpcError(f"connect to {self.path}: {e.strerror or e}") from None

    def open_done(self) -> bool:
        """open_done - read the greeting if it has come; True once open.
        IpcError when the connection ended first."""
        if self.sock is not None:
            return True
        if not self.queued:
            self._connect()
            if not self.queued:
                return False
        try:
            data = self.conn.recv(_GREETING_MAX)
        except BlockingIOError:
            return False
        except OSError as e:
            raise IpcError(f"{self.path}: {e.strerror or e}") from None
        if not data:
            raise lost_connection(self.name)
        self._greeting += data
        line, nl, rest = self._greeting.partition(b"\n")
        if not nl:
            if len(self._greeting) >= _GREETING_MAX:
                raise IpcError(f"{self.path}: malformed greeting")
            return False
        self._establish(line)
        if BYE in rest:
            self.retiring = True
        return True

    def _establish(self, line: bytes) -> None:
        try:
            name, token, mode = line.split()
        except ValueError:
            raise IpcError(f"{self.path}: malformed greeting") from None
        sock = context().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTING_ID, token)
        where = os.path.join(os.path.dirname(self.path), os.fsdecode(name))
        sock.connect("ipc://" + _shortest(where))
        self.sock = sock
        self.many = mode == MANY

    def wait_open(self, timeout: float) -> None:
        """wait_open - block until a worker has accepted (IpcTimeout after TIMEOUT)."""
        deadline = time.monotonic() + timeout
        while not self.open_done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise IpcTimeout(f"timeout after {timeout:g}s waiting for {self.path}")
            if not self.queued:     # nothing to wait on but time: the queue was full
                time.sleep(min(left, QUEUE_FULL_RETRY))
            elif not select.select([self.conn], [], [], left)[0]:
                raise IpcTimeout(f"timeout after {timeout:g}s waiting for {self.path}")

    def check(self) -> None:
        """check - note a BYE or end of file waiting on the connection."""
        while not self.gone:
            try:
                data = self.conn.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.gone = True
            elif BYE in data:
                self.retiring = True

    @property
    def usable(self) -> bool:
        """usable - open, and neither ended by its worker nor gone."""
        return self.sock is not None and not self.retiring and not self.gone

    def send(self, header: dict, payload: Iterable[bytes] = (), wait: bool = True) -> None:
        """send - the request; without WAIT, ZMQError rather than wait (an
        asyncio owner)."""
        assert self.sock is not None
        _send(self.sock, [b"", *pack(header, payload)], copy=False,
              flags=0 if wait else _NOBLOCK)

    def events_fd(self) -> int:
        """events_fd - the descriptor that stirs when the zeromq socket's state changes."""
        return cast(int, cast(zmq.Socket, self.sock).get(zmq.FD))

    def has_reply(self) -> bool:
        return self.sock is not None and _readable(self.sock)

    def recv(self) -> tuple[dict, list]:
        """recv - the answer that waits (has_reply()); IpcError if malformed."""
        assert self.sock is not None
        frames = _recv(self.sock, _NOBLOCK)
        return unpack(frames[1:])

    def lost(self) -> bool:
        """lost - the worker is gone and the answer in flight will not come:
        after end of file, BYE_GRACE for an answer written just before."""
        if not self.gone or self.has_reply():
            return False
        return self.sock is None or not self.sock.poll(int(BYE_GRACE * 1000))

    def trigger(self, header: dict) -> bool:
        """trigger - HEADER one-way on the connection; False when it would block."""
        try:
            self.conn.send(trigger_frame(header), socket.MSG_NOSIGNAL)
        except BlockingIOError:
            return False
        except OSError:
            self.gone = True
            return False
        return True

    def poll_keys(self) -> list:
        fd = self.conn.fileno()         # zmq_poll answers a descriptor, not its object
        return [fd] if self.sock is None else [fd, self.sock]

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None
        self.conn.close()


@dataclass
class LeaseRule:
    """When a client takes another lease on a one-at-a-time service, one
    rule per pool of leases. One per core at once; never while one is still
    opening; another when the waiting requests have stalled: no lease
    handed to a request for SPAWN_DELAY (a stuck worker: the 30-second smtp
    test). And when requests are slow (each took SLOW or more lately, so
    they wait on a distant peer or a disk, not on the CPU: smtp to the
    Internet, cleanup's fsync on a rotating disk) and
    the waiting would take longer than SPAWN_DELAY to drain through the
    leases held (waiting x time per request / leases held).

    Requests that wait get as many leases as there are cores at once: one
    worker per core keeps every core busy, where one worker left the other
    idle while its answer travelled back to the client and the next request
    came (2,000 messages, 1 and 2 leases in turn, two rounds each, msg/s:
    to discard over 50 sessions 494/578 and 682/647, to smtp-sink 359/425
    and 463/420, to a Maildir over 10 sessions 357/355 and 473/392; to
    discard over 10 sessions alike, 584/569 and 567/585).
    Beyond that, fast requests (cleanup, discard, a Maildir: about a
    millisecond) share the workers: a Python worker costs about 0.1 s of
    CPU to start, and more workers than cores only share the same cores.
    Measured with 3,000
    messages over 50 sessions on 2 cores (old and new rule in turn): the
    broker's rule (another while more than 4 requests wait per worker) ran
    10 cleanup and 4 virtual workers and took 13.4 s to a Maildir, this one
    1 and 1 and 9.2 s; to smtp-sink over 10 and 50 sessions 8.1 / 5.9 s with
    4 smtp and 2-10 cleanup workers, 6.3 / 5.4 s with 2 and 1; the backlog
    rule for fast requests too (time per request measured on the shared
    cores grows with the workers) 9.2 / 12.0 s with 9-13 smtp workers."""
    SPAWN_DELAY = 0.1
    CORES = os.cpu_count() or 1     # leases that waiting requests get at once
    SLOW = 0.01                 # seconds per request that mean waiting on a peer or a disk
    SMOOTHING = 0.2             # weight of the latest request in `service`
    progress: float = 0.0       # monotonic time a lease last went to a request
    service: float = 0.0        # recent seconds per request, sent to answered

    def moved(self, now: float) -> None:
        """moved - a lease was handed to a request at NOW."""
        self.progress = now

    def served(self, seconds: float) -> None:
        """served - a request took SECONDS from its sending to its answer."""
        self.service += self.SMOOTHING * (seconds - self.service)

    def stalled_at(self, oldest: float) -> float:
        """stalled_at - when requests waiting since OLDEST count as stalled."""
        return max(oldest, self.progress) + self.SPAWN_DELAY

    def wants(self, held: int, opening: int, waiting: int, oldest: float,
              now: float, many: bool) -> bool:
        if not waiting or opening:
            return False
        if many or held < self.CORES or now >= self.stalled_at(oldest):
            return True
        return self.service >= self.SLOW and waiting * self.service / held > self.SPAWN_DELAY


class Client:
    """A blocking request/reply client of one service, over one kept lease.

    A request that times out closes the lease, so a late answer to it can
    never be mistaken for the answer to the next request."""

    def __init__(self, ep: str, timeout: float = 100.0) -> None:
        self.endpoint = _path(ep)
        self.timeout = timeout
        self.lease: Lease | None = None

    def _lease(self, deadline: float) -> Lease:
        lease = self.lease
        if lease is not None:
            lease.check()
            if lease.usable:
                return lease
            self.close()
        lease = self.lease = Lease(self.endpoint)
        lease.wait_open(max(0.0, deadline - time.monotonic()))
        return lease

    def call(self, header: dict, payload: Iterable[bytes] = (),
             timeout: float | None = None) -> tuple[dict, list]:
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        try:
            lease = self._lease(deadline)
            lease.send(header, payload)
            return self._answer(lease, deadline, wait)
        except IpcError:
            self.close()
            raise

    def _answer(self, lease: Lease, deadline: float, wait: float) -> tuple[dict, list]:
        poller = zmq.Poller()
        poller.register(lease.sock, zmq.POLLIN)
        poller.register(lease.conn, zmq.POLLIN)
        while not lease.has_reply():
            left = deadline - time.monotonic()
            if left <= 0:
                raise IpcTimeout(f"timeout after {wait:g}s waiting for {self.endpoint}")
            poller.poll(int(left * 1000) + 1)
            lease.check()
            if lease.lost():
                raise lost_connection(lease.name)
        return lease.recv()

    def close(self) -> None:
        if self.lease is not None:
            self.lease.close()
            self.lease = None


def trigger(ep: str, header: dict | None = None) -> None:
    """trigger - a one-way request (wake qmgr, wake pickup) on a connection
    of its own, written before the master's listen queue hands it to a
    worker: the sender never waits for one, and the request is not lost when
    the sender exits at once (sendmail, postsuper). Dropped when nobody
    listens or the listen queue is full, as Postfix's triggers are."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.connect(_shortest(_path(ep)))
        sock.send(trigger_frame(header or {"op": "wakeup"}), socket.MSG_NOSIGNAL)
    except OSError:
        pass
    finally:
        sock.close()


class OneWay:
    """One-way requests to one service over a lease kept for the process's
    life: trigger() connects anew each time, which costs more than the
    request itself when it happens per message (cleanup's qmgr wakeup,
    smtpd's anvil disconnect). The frames go on the lease connection, so
    they wait in the kernel until a worker has accepted; none is answered.
    A request that cannot be written without waiting is dropped: only
    requests whose loss is harmless (a wakeup; qmgr also scans on its own)
    belong here, unless the caller checks send()'s result."""

    def __init__(self, ep: str) -> None:
        self.endpoint = _path(ep)
        self.lease: Lease | None = None

    def send(self, header: dict) -> bool:
        """send - HEADER to the service; False when it had to be dropped."""
        lease = self.lease
        if lease is not None:
            lease.check()
            if lease.gone or lease.retiring:
                self.close()
                lease = None
        if lease is None:
            try:
                lease = self.lease = Lease(self.endpoint)
            except IpcError:
                return False
        return lease.trigger(header)

    def close(self) -> None:
        """close - let the lease go; what was written stays for the worker."""
        if self.lease is not None:
            self.lease.close()
            self.lease = None


class AioClient:
    """Requests to one service from an asyncio program (smtpd's cleanup and
    anvil, postscreen's dnsblog).

    A pool of leases, one request in flight on each: the answer on a lease
    belongs to the one request sent on it, and a lease whose request timed
    out is closed, never reused. A request waits for a busy lease of the pool
    rather than take a new one, as LeaseRule says. One-way requests (notify)
    go over an OneWay lease, without a wait or a wakeup of the event loop.

    The event loop watches each lease's zeromq descriptor itself, with a
    future per request, rather than through zmq.asyncio: its futures and
    flag arithmetic were 15-19% of smtpd's CPU. The descriptor only says
    that the socket's state may have changed (edge-triggered): whether an
    answer waits is asked of ZMQ_EVENTS each time, and once right after the
    request is sent."""

    def __init__(self, ep: str, timeout: float) -> None:
        self.endpoint = _path(ep)
        self.name = os.path.basename(self.endpoint)
        self.timeout = timeout
        self.rule = LeaseRule()
        self.many = False
        self._idle: list[Lease] = []
        self._held = 0              # leases open or opening, idle or not
        self._opening = 0
        self._waiters: list = []    # (future, arrival) of requests without a lease
        self._tasks: set = set()    # leases being opened
        self._stall_check: Any = None   # the timer that looks at the waiting again
        self._oneway = OneWay(self.endpoint)

    async def request(self, header: dict, payload: Iterable[bytes] = (),
                      timeout: float | None = None) -> dict:
        """request - send HEADER and PAYLOAD, wait for the answer's header.
        IpcTimeout (an IpcError) when none comes within TIMEOUT (default: the
        client's); IpcError on a transport error or a malformed answer."""
        import asyncio  # loaded already: the caller runs in its event loop
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                lease = await self._take()
                return await self._exchange(lease, header, payload)
        except TimeoutError:
            raise IpcTimeout(f"timeout after {wait:g}s waiting for {self.endpoint}") from None

    async def _exchange(self, lease: Lease, header: dict, payload: Iterable[bytes]) -> dict:
        ok = False
        try:
            lease.send(header, payload, wait=False)
            sent = time.monotonic()
            frames = await self._reply(lease)
            self.rule.served(time.monotonic() - sent)
            reply, _ = unpack(frames[1:])
            ok = True
            return reply
        except zmq.ZMQError as e:
            raise IpcError(str(e)) from None
        finally:
            self._give_back(lease, ok)

    @staticmethod
    def _poke(lease: Lease) -> None:
        """_poke - LEASE's zeromq descriptor stirred: wake its request if the
        answer is there."""
        waiting = lease.inflight
        if waiting is not None and not waiting.done() and lease.has_reply():
            waiting.set_result(None)

    async def _reply(self, lease: Lease) -> list:
        """_reply - the answer on LEASE, or IpcError when its worker dies
        first (_watched cancels the receive then)."""
        import asyncio
        loop = asyncio.get_running_loop()
        received = lease.inflight = loop.create_future()
        self._poke(lease)
        if lease.gone:      # it ended while the request was being sent
            loop.call_later(BYE_GRACE, _cancel, received)
        try:
            await received
            return _recv(cast(zmq.Socket, lease.sock), _NOBLOCK)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if lease.gone and not (task and task.cancelling()):
                raise lost_connection(self.name) from None
            raise
        finally:
            lease.inflight = None

    def _watched(self, lease: Lease) -> None:
        """_watched - LEASE's connection is readable: its worker said BYE or
        died. An idle lease leaves the pool; a receive in flight is given
        BYE_GRACE for an answer written just before the end, then cancelled."""
        lease.check()
        if lease.usable:
            return
        if lease in self._idle:
            self._idle.remove(lease)
            self._drop(lease)
            return
        if lease.gone:
            import asyncio
            loop = asyncio.get_running_loop()
            loop.remove_reader(lease.conn)
            received = lease.inflight
            if received is not None:
                loop.call_later(BYE_GRACE, _cancel, received)

    async def _take(self) -> Lease:
        """_take - an idle lease, a new one, or the first to come back."""
        import asyncio
        while self._idle:
            lease = self._idle.pop()
            lease.check()
            if lease.usable:
                return lease
            self._drop(lease)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append((waiter, time.monotonic()))
        try:
            self._maybe_open()
            return await waiter
        except BaseException:
            # Timed out just as a lease came: it goes back, not astray.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(waiter.result(), True)
            raise
        finally:
            self._waiters = [w for w in self._waiters if w[0] is not waiter]

    def _maybe_open(self) -> None:
        """_maybe_open - another lease if the rule says so; otherwise look
        again when the waiting would count as stalled."""
        import asyncio
        waiting = [w for w in self._waiters if not w[0].done()]
        if not waiting:
            return
        now = time.monotonic()
        if not self.rule.wants(self._held, self._opening, len(waiting), waiting[0][1],
                               now, self.many):
            if self._stall_check is None:
                due = self.rule.stalled_at(waiting[0][1]) - now + 0.005
                self._stall_check = asyncio.get_running_loop().call_later(
                    max(0.0, due), self._stall_checked)
            return
        self._opening += 1
        self._held += 1
        task = asyncio.get_running_loop().create_task(self._open())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stall_checked(self) -> None:
        self._stall_check = None
        self._maybe_open()

    async def _open(self) -> None:
        import asyncio
        loop = asyncio.get_running_loop()
        lease = None
        try:
            lease = Lease(self.endpoint)
            while not lease.open_done():
                if not lease.queued:    # the listen queue was full
                    await asyncio.sleep(QUEUE_FULL_RETRY)
                    continue
                ready = loop.create_future()
                loop.add_reader(lease.conn, _set_result, ready)
                try:
                    await ready
                finally:
                    loop.remove_reader(lease.conn)
            self.many = lease.many
        except BaseException as e:
            if lease is not None:
                lease.close()
            self._opening -= 1
            self._held -= 1
            if isinstance(e, IpcError):
                self._fail_waiters(e)
                return
            raise
        self._opening -= 1
        loop.add_reader(lease.conn, self._watched, lease)
        loop.add_reader(lease.events_fd(), self._poke, lease)
        self._give_back(lease, True)
        self._maybe_open()

    def _fail_waiters(self, error: IpcError) -> None:
        """_fail_waiters - no lease could be had: the waiters that no
        lease of ours will serve learn why now, not at their timeout."""
        if self._held:
            return
        for waiter, _ in self._waiters:
            if not waiter.done():
                waiter.set_exception(IpcError(str(error)))

    def _give_back(self, lease: Lease, ok: bool) -> None:
        """_give_back - LEASE to the first waiter, or to the pool; a lease
        that failed or that its worker ended is closed."""
        lease.check()
        if not ok or not lease.usable:
            self._drop(lease)
            self._maybe_open()
            return
        for waiter, _ in self._waiters:
            if not waiter.done():
                waiter.set_result(lease)
                self.rule.moved(time.monotonic())
                return
        self._idle.append(lease)

    def _drop(self, lease: Lease) -> None:
        import asyncio
        try:
            loop = asyncio.get_running_loop()
            loop.remove_reader(lease.conn)
            if lease.sock is not None:
                loop.remove_reader(lease.events_fd())
        except (RuntimeError, ValueError):
            pass
        lease.close()
        self._held -= 1

    def notify(self, header: dict) -> None:
        """notify - a request nobody waits for; IpcError when it cannot be written."""
        if not self._oneway.send(header):
            raise IpcError(f"{self.endpoint}: cannot send")

    def close(self) -> None:
        """close - let every lease go; one-way requests written stay for the worker."""
        for task in list(self._tasks):
            task.cancel()
        if self._stall_check is not None:
            self._stall_check.cancel()
            self._stall_check = None
        for lease in list(self._idle):
            self._drop(lease)
        self._idle.clear()
        self._held = 0
        self._oneway.close()


def _set_result(future) -> None:
    if not future.done():
        future.set_result(None)


def _cancel(future) -> None:
    if not future.done():
        future.cancel()


class Poller:
    """What one thread waits on: servers, leases and plain descriptors.
    poll() answers the registered objects themselves, so callers never see
    a zeromq socket. An object answers its descriptors and sockets through
    poll_keys(), asked at every poll (a lease gains its zeromq socket once
    it is open, a server its connections)."""

    def __init__(self) -> None:
        self._items: dict = {}      # registered object -> None (ordered)

    def register(self, item) -> None:
        """register - wait for ITEM to be readable: an int descriptor, or an
        object with poll_keys() (Server, Lease)."""
        self._items[item] = None

    def unregister(self, item) -> None:
        self._items.pop(item, None)

    def poll(self, timeout_ms: int | None) -> list:
        """poll - the registered objects that are readable, waiting up to
        TIMEOUT_MS milliseconds (None: without a limit)."""
        owner: dict = {}
        keys = []
        for item in self._items:
            for key in ((item,) if isinstance(item, int) else item.poll_keys()):
                owner[key] = item
                keys.append((key, _POLLIN))
        ready = zmq.zmq_poll(keys, -1 if timeout_ms is None else timeout_ms)
        seen: dict = {}
        for key, _ in ready:
            seen[owner[key]] = None
        return list(seen)


# ---------------------------------------------------------------------------
# The service side.

_instances = itertools.count()


@dataclass(eq=False)
class _Held:
    """A lease as its worker sees it."""
    conn: socket.socket
    token: bytes
    last: float                 # monotonic time of its last request
    retired: bool = False
    buffer: bytes = b""


@dataclass(eq=False)
class _Uses:
    """The uses of a worker toward max_use, as Postfix counts them: one per
    lease (a client's connection), and again every MAX_USE requests on one
    lease, since our clients keep a lease while work flows where Postfix's
    reconnect per message (docs/architecture.md, "max_use")."""
    max_use: int
    uses: int = 0
    since: dict = field(default_factory=dict)

    def lease(self, token: bytes) -> None:
        self.uses += 1
        self.since[token] = 0

    def request(self, token: bytes) -> None:
        served = self.since.get(token, 0) + 1
        if self.max_use and served > self.max_use:
            self.uses += 1
            served = 1
        self.since[token] = served

    def released(self, token: bytes) -> None:
        self.since.pop(token, None)


class Server:
    """The service side of a lease desk: accepts leases on LISTENER (the
    master's socket, descriptor 3), answers requests on its own zeromq
    endpoint beside it, reads one-way requests from the lease connections.

    One-at-a-time (MANY false): it takes no new lease while it holds one,
    and ends a lease left unused for LEASE_IDLE, so that a client's idle
    lease does not keep others waiting; a worker that serves many ends a
    lease unused for SHARED_LEASE_IDLE, as Postfix's clients let go after
    ipc_idle, so that max_idle can end the worker. leave() ends every lease with BYE
    and takes no more; finished() says when the clients have let go (or
    LEAVE_GRACE has passed without a request since)."""

    def __init__(self, listener: socket.socket, many: bool = False, max_use: int = 0) -> None:
        self.listener = listener
        listener.setblocking(False)
        where = listener.getsockname()
        where = os.fsdecode(where) if isinstance(where, bytes) else str(where)
        self.many = many
        self.file = f".{os.getpid()}-{next(_instances)}"
        self.path = os.path.join(os.path.dirname(where), self.file)
        self.router = context().socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 1000)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.bind("ipc://" + self.path)
        try:
            os.chmod(self.path, 0o666)      # the directory, not the socket, guards access
        except OSError:
            pass
        self.epoll = select.epoll()
        self.held: dict[int, _Held] = {}
        self.by_token: dict[bytes, _Held] = {}
        self.counter = _Uses(max_use)
        self.leaving = 0.0          # monotonic time of leave(), 0 while serving
        self.last_request = 0.0
        self._tokens = itertools.count(1)
        self._accepting = False
        self._triggers: list[dict] = []
        self._update_accepting()

    # -- state ---------------------------------------------------------------
    @property
    def uses(self) -> int:
        return self.counter.uses

    @property
    def active(self) -> int:
        """active - leases held and not ended by us."""
        return sum(1 for h in self.held.values() if not h.retired)

    def available(self) -> bool:
        """available - another lease would be taken now."""
        return not self.leaving and (self.many or not self.active)

    def _update_accepting(self) -> None:
        want = self.available()
        if want != self._accepting:
            if want:
                self.epoll.register(self.listener.fileno(), select.EPOLLIN)
            else:
                self.epoll.unregister(self.listener.fileno())
            self._accepting = want

    def poll_keys(self) -> list:
        return [self.epoll.fileno(), self.router]

    # -- leases ----------------------------------------------------------------
    def events(self) -> list[tuple[bytes | None, dict, list]]:
        """events - accept what waits, read the lease connections, and return
        the requests that wait: (token, header, payload), token None for a
        one-way request (no reply)."""
        for fd, _ in self.epoll.poll(0):
            if fd == self.listener.fileno():
                self._accept()
            else:
                held = self.held.get(fd)
                if held is not None:
                    self._read(held)
        out: list = [(None, h, []) for h in self._triggers]
        self._triggers.clear()
        while True:
            try:
                out.append(self.recv_request())
            except Again:
                return out
            except IpcError:
                continue

    def _accept(self) -> None:
        while self.available():
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return      # another worker took it
            token = str(next(self._tokens)).encode()
            held = _Held(conn, token, time.monotonic())
            mode = MANY if self.many else ONE
            conn.setblocking(False)
            try:
                conn.send(self.file.encode() + b" " + token + b" " + mode + b"\n",
                          socket.MSG_NOSIGNAL)
            except OSError:
                pass    # a trigger's sender has gone already: its request is read below
            self.held[conn.fileno()] = held
            self.by_token[token] = held
            self.epoll.register(conn.fileno(), select.EPOLLIN)
            self.counter.lease(token)
            self._update_accepting()
            self._read(held)

    def _read(self, held: _Held) -> None:
        """_read - one-way requests on HELD's connection, or its end."""
        try:
            data = held.conn.recv(_TRIGGER_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._release(held)
            return
        held.buffer += data
        while len(held.buffer) >= 4:
            size = _FRAME.unpack_from(held.buffer)[0]
            if size > _TRIGGER_MAX:
                self._release(held)
                return
            if len(held.buffer) < 4 + size:
                break
            frame, held.buffer = held.buffer[4:4 + size], held.buffer[4 + size:]
            try:
                self._triggers.append(unpack([frame])[0])
            except IpcError:
                continue
            held.last = time.monotonic()

    def _release(self, held: _Held) -> None:
        """_release - the client let the lease go (or died)."""
        fd = held.conn.fileno()
        self.held.pop(fd, None)
        self.by_token.pop(held.token, None)
        self.counter.released(held.token)
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        held.conn.close()
        self._update_accepting()

    def _retire(self, held: _Held) -> None:
        """_retire - end HELD with BYE; its requests sent before it are still served."""
        if held.retired:
            return
        held.retired = True
        try:
            held.conn.send(BYE, socket.MSG_NOSIGNAL)
        except OSError:
            self._release(held)
            return
        self._update_accepting()

    def retire_idle(self, now: float) -> float | None:
        """retire_idle - end the leases left unused too long; when the next
        may be due (monotonic), None when none is held."""
        idle = SHARED_LEASE_IDLE if self.many else LEASE_IDLE
        due = None
        for held in list(self.held.values()):
            if held.retired:
                continue
            at = held.last + idle
            if at <= now:
                self._retire(held)
            else:
                due = at if due is None else min(due, at)
        return due

    def leave(self) -> None:
        """leave - end every lease and take no more (max_use, max_idle, reload, stop)."""
        if not self.leaving:
            self.leaving = time.monotonic()
        for held in list(self.held.values()):
            self._retire(held)
        self._update_accepting()

    def finished(self, now: float) -> bool:
        """finished - after leave(): every client has let go, or none has
        sent a request for LEAVE_GRACE (a blocking client reads our BYE only
        at its next call), or LEAVE_LIMIT has passed."""
        if not self.leaving:
            return False
        if not self.held:
            return True
        quiet = now - max(self.leaving, self.last_request)
        return quiet >= LEAVE_GRACE or now - self.leaving >= LEAVE_LIMIT

    # -- requests -------------------------------------------------------------
    def recv_request(self) -> tuple[bytes, dict, list]:
        """recv_request - (token, header, payload) of the next request; Again
        when none waits; IpcError for a malformed one."""
        if not _readable(self.router):
            raise Again()
        frames = _recv(self.router, _NOBLOCK)
        token = frames[0]
        now = time.monotonic()
        self.last_request = now
        held = self.by_token.get(token)
        if held is not None:
            held.last = now
        self.counter.request(token)
        if len(frames) < 3:
            raise IpcError("short request")
        header, payload = unpack(frames[2:])
        return token, header, payload

    def reply(self, token: bytes, header: dict, payload: Iterable[bytes] = ()) -> None:
        _send(self.router, [token, b"", *pack(header, payload)], copy=False)

    def close(self) -> None:
        for held in list(self.held.values()):
            held.conn.close()
        self.held.clear()
        self.epoll.close()
        self.router.close(1000)     # replies already written still reach their clients
        try:
            os.unlink(self.path)
        except OSError:
            pass


def service_endpoint(name: str, queue_dir: str = "") -> str:
    """service_endpoint - NAME's endpoint, public or private as master.cf made it.

    The master binds public/NAME or private/NAME as master.cf's private
    column says; follow whichever socket exists, public first (Postfix ships
    cleanup, qmgr and pickup public), and public/NAME when neither exists yet."""
    for visibility in ("public", "private"):
        if os.path.exists(os.path.join(queue_dir, visibility, name)):
            return endpoint(visibility, name, queue_dir)
    return endpoint("public", name, queue_dir)

