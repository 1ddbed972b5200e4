"""One client connection as an asyncio protocol: a bounded input buffer.

smtpd needs what asyncio streams hide: how much input is already waiting
(pipelining checks, RFC 2920), reading either a line or an exact byte
count, and a hard bound on buffered input. Reading pauses while more than
INPUT_HIGH_WATER bytes wait unprocessed, so memory stays bounded whatever
the client sends; writing waits while the client does not read its replies.

The waits use asyncio.timeout() rather than asyncio.wait_for(): wait_for
wraps each wait in a new task, and a session waits about 15 times per
message (a command, a reply); drain() does not wait at all while the
client reads its replies, which is nearly always.

Interface:
    Connection()           protocol factory for loop.connect_accepted_socket
    await conn.wait_data(timeout)      raises asyncio.TimeoutError, ConnectionLost
    conn.buf, conn.take(n) -> bytes, conn.pending() -> int
    conn.write(bytes); await conn.drain(); conn.close()
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import termios

INPUT_HIGH_WATER = 256 * 1024


class ConnectionLost(Exception):
    """The client closed the connection, or it broke."""


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self._data = asyncio.Event()
        self._paused_reading = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()

    # -- protocol callbacks -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._data.set()
        if len(self.buf) > INPUT_HIGH_WATER and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None  # connection_made set it
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._data.set()
        # Keep the transport open for writing: a client that half-closes
        # after pipelined commands still gets their replies (as from
        # Postfix); the session closes the connection when it ends.
        return True

    def connection_lost(self, exc) -> None:
        self.eof = True
        self._data.set()
        self._writable.set()
        self.closed.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- what the session uses -------------------------------------------------
    def pending(self) -> int:
        return len(self.buf)

    def input_waiting(self) -> bool:
        """input_waiting - bytes buffered here or still in the kernel's socket buffer.

        Checking the socket itself does not depend on how many event loop
        turns have passed since the connection was accepted."""
        if self.buf:
            return True
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return False
        # The count of unread bytes, not readability: a client that closed at
        # once is readable (end of file) and has said nothing, so it gets the
        # greeting and is logged as "lost connection after CONNECT".
        count = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
        except (OSError, ValueError):
            return False
        return count[0] > 0

    def take(self, n: int) -> bytes:
        data = bytes(self.buf[:n])
        del self.buf[:n]
        if self._paused_reading and len(self.buf) <= INPUT_HIGH_WATER // 2:
            self._paused_reading = False
            assert self.transport is not None  # connection_made set it
            self.transport.resume_reading()
        return data

    async def wait_data(self, timeout: float) -> None:
        """wait_data - wait until more input arrives than is buffered now."""
        if self.eof:
            raise ConnectionLost()
        self._data.clear()
        if self._paused_reading:
            self._paused_reading = False
            assert self.transport is not None  # connection_made set it
            self.transport.resume_reading()
        async with asyncio.timeout(timeout):
            await self._data.wait()
        if self.eof and not self.buf:
            raise ConnectionLost()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self, timeout: float) -> None:
        if self.eof and self.transport is not None and self.transport.is_closing():
            raise ConnectionLost()
        if self._writable.is_set():
            return
        async with asyncio.timeout(timeout):
            await self._writable.wait()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
