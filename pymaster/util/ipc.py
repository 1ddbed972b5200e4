"""Messages between pymaster programs, over zeromq.

Every internal service has two endpoints, both bound by the master:

  frontend  ipc://QUEUE_DIR/{private|public}/NAME          clients connect here
  backend   ipc://QUEUE_DIR/{private|public}/.NAME.workers  the service's workers connect here

The master brokers between them (the load-balancing broker pattern): a worker
announces how many requests it can take (READY, with a credit count), the
master hands each client request to a worker that has credit, and the
worker's reply both goes back to the client and returns one credit. When a
request waits and no worker has credit, the master knows another worker is
wanted. See pymaster.master.broker for the master's side.

Every message is [header, *payload]: the header is a JSON object (small,
attributes), the payload frames are raw bytes (message content; sent
without copying). Endpoint paths are relative to the queue directory, which
is every program's working directory, so they work unchanged inside a chroot.

Frames on the wire:
  client  -> frontend : b"", header, *payload
  master  -> worker   : b"", client_id, b"", header, *payload
  worker  -> master   : b"", client_id, b"", header, *payload   (a reply)
                        b"", b"READY", b"<credits>"
                        b"", b"BYE"                             (worker leaves)

Interface:
    endpoint(visibility, name) / worker_endpoint(visibility, name)
    pack(header, payload) / unpack(frames)
    Client(endpoint).call(header, payload, timeout) -> (header, payload)
    AsyncClient(endpoint): send / recv for many requests in flight (qmgr)
    AioClient(endpoint, timeout): await request(header, payload), notify(header),
        for an asyncio program (smtpd: cleanup, anvil; postscreen: dnsblog)
    IpcTimeout: the IpcError of a request that got no answer in time
    Poller(): what one thread waits on (workers, clients, plain descriptors)
    trigger(endpoint, header): a one-way wakeup; nobody waits for the answer
    OneWay(endpoint).send(header): the same over a kept socket (a trigger per message)
    Worker(endpoint, credits): the service side
    Again: nothing waits (Worker.recv_request(block=False))
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterable, cast

import orjson
import zmq

READY = b"READY"
BYE = b"BYE"

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


def _send(sock: zmq.Socket, frames: list, copy: bool = True) -> None:
    """_send - FRAMES as one zeromq message."""
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        sock.send(frame, _SNDMORE if i < last else 0, copy=copy)


def _recv(sock: zmq.Socket, flags: int = 0) -> list:
    """_recv - the frames of one zeromq message (bytes); FLAGS for the first."""
    frames = [sock.recv(flags)]
    while sock.getsockopt(_RCVMORE):
        frames.append(sock.recv(0))
    return frames


def endpoint(visibility: str, name: str, queue_dir: str = "") -> str:
    """endpoint - where clients reach service NAME (private/ or public/)."""
    return "ipc://" + os.path.join(queue_dir, visibility, name)


def worker_endpoint(visibility: str, name: str, queue_dir: str = "") -> str:
    """worker_endpoint - where the workers of service NAME reach the master."""
    return "ipc://" + os.path.join(queue_dir, visibility, f".{name}.workers")


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


def context() -> zmq.Context:
    return zmq.Context.instance()


def _socket(kind: int, ep: str, identity: bytes | None = None) -> zmq.Socket:
    sock = context().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if identity:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(ep)
    return sock


class Client:
    """A blocking request/reply client of one service.

    A request that times out closes the socket, so a late answer to it can
    never be mistaken for the answer to the next request."""

    def __init__(self, ep: str, timeout: float = 100.0) -> None:
        self.endpoint = ep
        self.timeout = timeout
        self.sock: zmq.Socket | None = None

    def call(self, header: dict, payload: Iterable[bytes] = (),
             timeout: float | None = None) -> tuple[dict, list]:
        if self.sock is None:
            self.sock = _socket(zmq.DEALER, self.endpoint)
        _send(self.sock, [b"", *pack(header, payload)], copy=False)
        wait = self.timeout if timeout is None else timeout
        if not self.sock.poll(int(wait * 1000)):
            self.close()
            raise IpcError(f"timeout after {wait:g}s waiting for {self.endpoint}")
        frames = _recv(self.sock)
        return unpack(frames[1:])

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None


class AsyncClient:
    """Many requests in flight to one service; answers matched by header id."""

    def __init__(self, ep: str) -> None:
        self.endpoint = ep
        self.sock = _socket(zmq.DEALER, ep)

    def send(self, header: dict, payload: Iterable[bytes] = ()) -> None:
        _send(self.sock, [b"", *pack(header, payload)], copy=False)

    def recv(self) -> tuple[dict, list]:
        frames = _recv(self.sock)
        return unpack(frames[1:])

    def close(self) -> None:
        self.sock.close(0)


def trigger(ep: str, header: dict | None = None) -> None:
    """trigger - send a one-way request (wake qmgr, wake pickup).

    A context of its own, terminated before returning: send() only queues
    the message for zeromq's I/O thread, and a command that exits right
    after (sendmail, postsuper) would otherwise take the unsent trigger
    with it. term() waits until it is written, or the linger time ends."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDTIMEO, 1000)
    sock.setsockopt(zmq.LINGER, 1000)
    try:
        sock.connect(ep)
        sock.send_multipart([b"", *pack(header or {"op": "wakeup"})])
    except zmq.ZMQError:
        pass
    finally:
        sock.close()
        ctx.term()


class OneWay:
    """One-way requests to one service over a socket kept for the process's
    life: trigger() connects anew each time, which costs the sender and the
    master more than the request itself when it happens per message
    (cleanup's qmgr wakeup, smtpd's anvil disconnect).

    The service answers anyway (the answer returns its worker's credit); the
    answers gather here and are dropped at the next send. A request that
    cannot be queued without waiting is dropped: only requests whose loss
    is harmless (a wakeup; qmgr also scans on its own) belong here, unless
    the caller checks send()'s result. close(wait) waits up to WAIT seconds
    for the answers still due, so no request is lost when the process ends."""

    def __init__(self, ep: str) -> None:
        self.endpoint = ep
        self.sock: zmq.Socket | None = None
        self.unanswered = 0

    def send(self, header: dict) -> bool:
        """send - queue HEADER for the service; False when it had to be dropped."""
        if self.sock is None:
            self.sock = _socket(zmq.DEALER, self.endpoint)
        self._drain(0)
        try:
            self.sock.send_multipart([b"", *pack(header)], zmq.NOBLOCK)
        except zmq.Again:
            return False
        self.unanswered += 1
        return True

    def _drain(self, wait: float) -> None:
        assert self.sock is not None  # send() opened it, close() checks
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic() if self.unanswered else 0
            if left <= 0:
                # No wait: the socket's own flags, without a poller per send.
                if not cast(int, self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
                    return
            elif not self.sock.poll(int(left * 1000), zmq.POLLIN):
                return
            self.sock.recv_multipart(zmq.NOBLOCK)
            self.unanswered = max(0, self.unanswered - 1)

    def close(self, wait: float = 0.0) -> None:
        if self.sock is None:
            return
        try:
            self._drain(wait)
        except zmq.ZMQError:
            pass
        self.sock.close(0)
        self.sock = None


class AioClient:
    """Requests to one service from an asyncio program (smtpd's cleanup and anvil).

    One socket per request in flight, kept in a pool: the answer on a socket
    belongs to the one request sent on it, and a socket whose request timed
    out is closed, never reused, so a late answer is never taken for the
    answer to another request. The pool keeps every socket it made (at most
    the requests ever in flight at once): a new connection per request would
    count as a new use toward the service's max_use (service.UseCounter).
    One-way requests (notify) go over an OneWay socket, without a wait or a
    wakeup of the event loop."""

    ONEWAY_CLOSE_WAIT = 1.0     # seconds close() waits for one-way requests to arrive

    def __init__(self, ep: str, timeout: float) -> None:
        self.endpoint = ep
        self.timeout = timeout
        self.context = _aio_context()
        self._idle: list = []
        self._oneway = OneWay(ep)

    def _socket(self):
        if self._idle:
            return self._idle.pop()
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    async def request(self, header: dict, payload: Iterable[bytes] = (),
                      timeout: float | None = None) -> dict:
        """request - send HEADER and PAYLOAD, wait for the answer's header.
        IpcTimeout (an IpcError) when none comes within TIMEOUT (default: the
        client's); IpcError on a transport error or a malformed answer."""
        import asyncio  # loaded already: the caller runs in its event loop
        wait = self.timeout if timeout is None else timeout
        sock = self._socket()
        try:
            await sock.send_multipart([b"", *pack(header, payload)], copy=False)
            # One receive under a deadline: a poll() first would build a
            # zmq poller and a future of its own for every request.
            async with asyncio.timeout(wait):
                frames = await sock.recv_multipart()
            reply, _ = unpack(frames[1:])
        except TimeoutError:
            sock.close(0)
            raise IpcTimeout(f"timeout after {wait:g}s waiting for {self.endpoint}") from None
        except (zmq.ZMQError, IpcError) as e:
            sock.close(0)
            raise IpcError(str(e)) from None
        except BaseException:
            sock.close(0)
            raise
        self._idle.append(sock)
        return reply

    def notify(self, header: dict) -> None:
        """notify - a request nobody waits for; IpcError when it cannot be queued."""
        try:
            sent = self._oneway.send(header)
        except zmq.ZMQError as e:
            raise IpcError(str(e)) from None
        if not sent:
            raise IpcError(f"{self.endpoint}: queue full")

    def close(self) -> None:
        """close - drop the pool; wait briefly until the one-way requests are out."""
        for sock in self._idle:
            sock.close(0)
        self._idle.clear()
        self._oneway.close(self.ONEWAY_CLOSE_WAIT)


def load_asyncio() -> None:
    """load_asyncio - import zeromq's asyncio support now, before a chroot
    or a privilege drop may hide the interpreter's library."""
    import zmq.asyncio  # noqa: F401


def _aio_context():
    # Imported on first use: most programs never run an event loop.
    import zmq.asyncio
    return zmq.asyncio.Context.shadow(context())


class Poller:
    """What one thread waits on: ipc sockets (a Worker, an AsyncClient) and
    plain descriptors (the master-alive pipe). poll() answers the registered
    objects themselves, so callers never see a zeromq socket."""

    def __init__(self) -> None:
        self._poller = zmq.Poller()
        self._owner: dict = {}      # zmq socket or descriptor -> registered object

    def register(self, item) -> None:
        """register - wait for ITEM to be readable: an int descriptor, or an
        object with a `sock` (Worker, AsyncClient)."""
        key = item if isinstance(item, int) else item.sock
        self._owner[key] = item
        self._poller.register(key, zmq.POLLIN)

    def unregister(self, item) -> None:
        key = item if isinstance(item, int) else item.sock
        if self._owner.pop(key, None) is not None:
            self._poller.unregister(key)

    def poll(self, timeout_ms: int) -> list:
        """poll - the registered objects that are readable, waiting up to
        TIMEOUT_MS milliseconds (None: without a limit)."""
        owner = self._owner
        return [owner[key] for key, _ in self._poller.poll(timeout_ms)]


class Worker:
    """The service side of a brokered endpoint.

    The worker's zeromq identity is its pid, so the master can forget the
    credits of a worker that died without saying BYE.

    Leaving is a handshake: `bye()` tells the master to stop routing
    requests here, and the master answers BYE. Requests routed before the
    answer still arrive before it, so `leave()` serves them, then returns."""

    def __init__(self, ep: str) -> None:
        self.endpoint = ep
        self.sock = _socket(zmq.DEALER, ep, identity=str(os.getpid()).encode())
        self.released = False       # the master has answered our BYE

    def ready(self, credits: int = 1) -> None:
        _send(self.sock, [b"", READY, str(credits).encode()])

    def recv_request(self, block: bool = True) -> tuple[bytes, dict, list] | None:
        """recv_request - the next request, or None for the master's BYE answer;
        without BLOCK, Again when nothing waits."""
        try:
            frames = _recv(self.sock, 0 if block else _NOBLOCK)
        except zmq.Again:
            raise Again() from None
        if len(frames) == 2 and frames[1] == BYE:
            self.released = True
            return None
        if len(frames) < 4:
            raise IpcError("short request from master")
        header, payload = unpack(frames[3:])
        return frames[1], header, payload

    def recv(self) -> tuple[bytes, dict, list]:
        """recv - (client_id, header, payload) of the next request."""
        while True:
            request = self.recv_request()
            if request is not None:
                return request

    def reply(self, client_id: bytes, header: dict, payload: Iterable[bytes] = ()) -> None:
        _send(self.sock, [b"", client_id, b"", *pack(header, payload)], copy=False)

    def bye(self) -> None:
        try:
            self.sock.send_multipart([b"", BYE], flags=zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def leave(self, handle=None, timeout: float = 2.0) -> None:
        """leave - say BYE, serve what was already routed here, until the answer.

        HANDLE(client_id, header, payload) serves a late request; without one
        a late request is answered with a deferral, never silently dropped.
        TIMEOUT bounds the wait when the master has gone."""
        self.bye()
        while not self.released and self.sock.poll(int(timeout * 1000)):
            try:
                request = self.recv_request(block=False)
            except (Again, IpcError):
                continue
            if request is None:
                break
            if handle is not None:
                handle(*request)
            else:
                self.reply(request[0], {"status": "defer", "reason": "service is stopping"})

    def close(self) -> None:
        self.sock.close(100)


def service_endpoint(name: str, queue_dir: str = "") -> str:
    """service_endpoint - NAME's endpoint, public or private as master.cf made it.

    The master binds public/NAME or private/NAME as master.cf's private
    column says; follow whichever socket exists, public first (Postfix ships
    cleanup, qmgr and pickup public), and public/NAME when neither exists yet."""
    for visibility in ("public", "private"):
        if os.path.exists(os.path.join(queue_dir, visibility, name)):
            return endpoint(visibility, name, queue_dir)
    return endpoint("public", name, queue_dir)
