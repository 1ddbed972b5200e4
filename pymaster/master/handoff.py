"""Handing an accepted client connection to a pass service (master.cf type `pass`).

postscreen(8) accepts SMTP clients itself and, once a client has passed its
tests, gives the open connection to smtpd, which serves it as if it had
accepted it. The master listens on the pass service's `private/NAME` as a
plain unix stream socket (zeromq cannot carry descriptors) and starts
children when it is readable, as for inet services. The sender connects,
sends one pymaster.util.fdpass message whose header holds the attributes
below and whose one descriptor is the client's socket, and closes; the
kernel keeps the descriptor alive in the socket buffer until a child takes
it, so the sender does not wait for one to start.

Attributes (strings): client_address, client_port, server_address,
server_port (what the client connected to, or what a PROXY header said).

The same message opens a session of the tlsproxy service (postscreen's
STARTTLS): there the sender keeps the unix connection, tlsproxy answers
`{"status": "ok"}` (or `{"status": "fail", "reason": ...}`) and then carries
the client's data, decrypted, over it.

Interface:
    send(path, conn, attrs, timeout)             the sender, blocking
    async send_async(path, conn, attrs, timeout) the sender on an event loop
    async receive(loop, conn, timeout, keep=False) -> (socket, attrs)   a pass child
    take(conn, timeout, keep=False) -> (socket, attrs)   the same, blocking
    open_proxy(path, conn, attrs, timeout) -> socket   the sender of a proxied session
    HandoffError
"""

from __future__ import annotations

import asyncio
import socket

from pymaster.util import fdpass

ATTRS = ("client_address", "client_port", "server_address", "server_port")
OP = "connection"


class HandoffError(Exception):
    """The hand-over message was missing, malformed or had no descriptor."""


def _header(attrs: dict) -> dict:
    header = {"op": OP}
    header.update({name: str(attrs.get(name, "")) for name in ATTRS})
    return header


def send(path: str, conn: socket.socket, attrs: dict, timeout: float) -> None:
    """send - pass CONN with ATTRS to the pass service at PATH; ours stays open."""
    with fdpass.connect(path, timeout) as sock:
        fdpass.send(sock, _header(attrs), [conn.fileno()])


async def send_async(path: str, conn: socket.socket, attrs: dict, timeout: float) -> None:
    """send_async - send() without blocking the event loop: the connect is
    to a listening unix socket and the message fits its buffer, so only the
    connect can wait (a full listen queue), and it is done in a thread."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, send, path, conn, attrs, timeout)


def open_proxy(path: str, conn: socket.socket, attrs: dict, timeout: float) -> socket.socket:
    """open_proxy - pass CONN to the proxy service at PATH and keep the
    connection to it, once it said yes (HandoffError when it did not)."""
    sock = fdpass.connect(path, timeout)
    try:
        fdpass.send(sock, _header(attrs), [conn.fileno()])
        reply, fds = fdpass.recv(sock, max_fds=1)
        fdpass.close_fds(fds)
    except BaseException as e:
        sock.close()
        if isinstance(e, (OSError, EOFError, fdpass.FdPassError)):
            raise HandoffError(f"{path}: {e}") from None
        raise
    if reply.get("status") != "ok":
        sock.close()
        raise HandoffError(f"{path}: {reply.get('reason', 'refused')}")
    return sock


async def receive(loop: asyncio.AbstractEventLoop, conn: socket.socket,
                  timeout: float, keep: bool = False) -> tuple[socket.socket, dict]:
    """receive - the client socket and attributes a sender passed on CONN
    (a connection accepted on the pass socket, closed here unless KEEP)."""
    ready = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, _wake, ready)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except asyncio.TimeoutError:
        loop.remove_reader(fd)
        conn.close()
        raise HandoffError("receive connection: timeout") from None
    loop.remove_reader(fd)
    return take(conn, timeout, keep)


def take(conn: socket.socket, timeout: float, keep: bool = False) -> tuple[socket.socket, dict]:
    """take - receive() for a thread: waits up to TIMEOUT for the message."""
    try:
        conn.setblocking(True)
        conn.settimeout(timeout)
        header, fds = fdpass.recv(conn, max_fds=1)
    except (EOFError, fdpass.FdPassError, OSError) as e:
        conn.close()
        raise HandoffError(f"receive connection: {e}") from None
    if header.get("op") != OP or len(fds) != 1:
        fdpass.close_fds(fds)
        conn.close()
        raise HandoffError("receive connection: no connection in the message")
    if not keep:
        conn.close()
    client = socket.socket(fileno=fds[0])
    client.setblocking(False)
    return client, {name: str(header.get(name, "")) for name in ATTRS}


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
