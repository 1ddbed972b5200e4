"""Messages with open descriptors over a unix stream socket (SCM_RIGHTS).

zeromq carries bytes only; a program that hands an open connection to
another (the scache connection cache, pass services) sends it here, on a
plain AF_UNIX stream socket beside zeromq. A message is a JSON header
with any number of descriptors attached:

    4 bytes   length of the header, big-endian
    N bytes   the header, JSON (an object)

The descriptors travel as SCM_RIGHTS ancillary data with the first byte of
the message, so a reader that takes the length prefix in one recvmsg()
also takes the descriptors (the kernel never hands over a message's
descriptors with another message's bytes). Received descriptors are
close-on-exec. The sender keeps its own copies: it closes them when it no
longer needs them, the receiver owns the new ones.

Errors: a peer that closes between messages is EOFError; one that closes
inside a message, a header that is not a JSON object, or more descriptors
than asked for (their excess is closed) is FdPassError; OSError (timeouts
included) passes through. Descriptors received with a message that then
turns out broken are closed before the error is raised.

Interface:
    send(sock, header: dict, fds=()) -> None
    recv(sock, max_fds=MAX_FDS) -> (header: dict, fds: list[int])
    connect(path, timeout) -> socket.socket       a client of a stream service
    close_fds(fds)
    FdPassError
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct
from typing import Iterable

LENGTH = struct.Struct(">I")
MAX_HEADER = 1 << 20              # a header is small; anything bigger is garbage
MAX_FDS = 16
CLOEXEC = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


class FdPassError(Exception):
    """The peer broke the message format."""


def send(sock: socket.socket, header: dict, fds: Iterable[int] = ()) -> None:
    """send - HEADER as one message, FDS attached (copies: ours stay open)."""
    body = json.dumps(header, separators=(",", ":")).encode()
    data = LENGTH.pack(len(body)) + body
    fd_list = list(fds)
    if fd_list:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fd_list))]
        sent = sock.sendmsg([data], ancillary)
    else:
        sent = sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def recv(sock: socket.socket, max_fds: int = MAX_FDS) -> tuple[dict, list[int]]:
    """recv - the next message: its header and the descriptors that came with it."""
    space = socket.CMSG_SPACE(max_fds * array.array("i").itemsize)
    prefix, ancillary, flags, _ = sock.recvmsg(LENGTH.size, space, CLOEXEC)
    fds = _descriptors(ancillary)
    try:
        if flags & socket.MSG_CTRUNC:
            raise FdPassError(f"more than {max_fds} descriptors in one message")
        if not prefix:
            if fds:
                raise FdPassError("descriptors without a message")
            raise EOFError("connection closed")
        prefix += _exactly(sock, LENGTH.size - len(prefix))
        (size,) = LENGTH.unpack(prefix)
        if size > MAX_HEADER:
            raise FdPassError(f"message header too long: {size} bytes")
        try:
            header = json.loads(_exactly(sock, size))
        except ValueError as e:
            raise FdPassError(f"malformed message header: {e}") from None
        if not isinstance(header, dict):
            raise FdPassError("message header is not an object")
        return header, fds
    except BaseException:
        close_fds(fds)
        raise


def connect(path: str, timeout: float | None) -> socket.socket:
    """connect - a stream socket connected to the service at PATH."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


def close_fds(fds: Iterable[int]) -> None:
    """close_fds - close every descriptor, ignoring those already gone."""
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _descriptors(ancillary: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[:len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    """_exactly - SIZE more bytes of the current message."""
    chunks, left = [], size
    while left > 0:
        chunk = sock.recv(left)
        if not chunk:
            raise FdPassError("connection closed inside a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
