"""One client connection as an asyncio protocol: a bounded input buffer.

smtpd needs what asyncio streams hide: how much input is already waiting
(pipelining checks, RFC 2920), reading either a line or an exact byte
count, and a hard bound on buffered input. Reading pauses while more than
INPUT_HIGH_WATER bytes wait unprocessed, so memory stays bounded whatever
the client sends; writing waits while the client does not read its replies.

A session waits for input about 7 times per message (a command, the
content), each wait bounded by smtpd_timeout from its own start, as in
Postfix. Rather than a timer per wait (asyncio.timeout: a Timeout object, a
timer started and stopped, task bookkeeping; 7% of smtpd's CPU), each
connection keeps one deadline and at most one timer: a wait only moves the
deadline, and the timer, when it fires early, re-arms itself for the
deadline it finds. The timer thus runs about once per smtpd_timeout, not
per command. drain() does not wait at all while the client reads its
replies, which is nearly always, and keeps asyncio.timeout() for when it
does.

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
# A timer that fires this close to the deadline ends the wait: the loop's
# timers are only as exact as its clock (uvloop: milliseconds).
TIMER_SLACK = 0.002


class ConnectionLost(Exception):
    """The client closed the connection, or it broke."""


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.eof = False
        self.transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future | None = None      # wait_data's, while it waits
        self._deadline = 0.0                            # when the current wait times out
        self._timer: asyncio.TimerHandle | None = None  # fires at or before _deadline
        self._timer_at = 0.0
        self._paused_reading = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = asyncio.Event()

    # -- protocol callbacks -------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._wake()
        if len(self.buf) > INPUT_HIGH_WATER and not self._paused_reading:
            self._paused_reading = True
            assert self.transport is not None  # connection_made set it
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        # Keep the transport open for writing: a client that half-closes
        # after pipelined commands still gets their replies (as from
        # Postfix); the session closes the connection when it ends.
        return True

    def connection_lost(self, exc) -> None:
        self.eof = True
        self._wake()
        self._stop_timer()
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
        """wait_data - wait until more input arrives than is buffered now;
        asyncio.TimeoutError after TIMEOUT seconds without any."""
        if self.eof:
            raise ConnectionLost()
        if self._paused_reading:
            self._paused_reading = False
            assert self.transport is not None  # connection_made set it
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout
        if self._timer is None or self._timer_at > self._deadline:
            self._arm(loop)
        self._waiter = waiter = loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        if self.eof and not self.buf:
            raise ConnectionLost()

    def _wake(self) -> None:
        """_wake - end wait_data's wait: input, end of file, or a lost connection."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_deadline(self) -> None:
        """_check_deadline - the timer: time out the wait in progress when its
        deadline has come, else wait on for the deadline a later wait set.
        Without a wait in progress it stops; the next wait starts it again."""
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        loop = asyncio.get_running_loop()
        if self._deadline - loop.time() > TIMER_SLACK:
            self._arm(loop)
            return
        waiter.set_exception(asyncio.TimeoutError())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """_arm - (re)start the timer for the current deadline."""
        self._stop_timer()
        self._timer_at = self._deadline
        self._timer = loop.call_at(self._deadline, self._check_deadline)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

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
        self._stop_timer()      # a closed connection waits no more
        if self.transport is not None:
            self.transport.close()
