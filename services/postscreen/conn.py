"""One client connection of postscreen: raw reads with a buffer of its own.

postscreen must see input the client sends before its turn (the pregreet
test) and whether more input waits behind a command (the pipelining test),
so it reads the socket itself instead of through a line-oriented stream.
Input that postscreen only looks at (the pregreet test, the PROXY header
before it is taken) is peeked at, never taken from the socket: a client
handed to smtpd afterwards loses nothing it sent. Input is bounded: a
command line longer than the engine's limit ends the session.

Interface:
    Conn(loop, sock)
        await .fill(timeout) -> bool        more input arrived; False: end of file
        await .peek(timeout) -> bytes        input waiting, left in the socket; b"": end of file
        .consume(n)                          take N bytes that peek() showed
        .take_line() -> bytes | None         one line with its ending, if complete
        .pending() -> bool                   input waits here or in the kernel
        await .send(text)                    one reply line (CRLF added)
        .switch(sock)                        on over tlsproxy after STARTTLS
        .release()                           after the hand-off to smtpd
        .close()
"""

from __future__ import annotations

import asyncio
import select
import socket

READ_SIZE = 4096


class Conn:
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.handed_off = False
        sock.setblocking(False)

    async def fill(self, timeout: float) -> bool:
        """fill - wait up to TIMEOUT for more input (TimeoutError); False at end of file."""
        if self.eof:
            return False
        async with asyncio.timeout(max(timeout, 0.0)):
            try:
                data = await self.loop.sock_recv(self.sock, READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def _readable(self, timeout: float) -> None:
        ready = self.loop.create_future()
        fd = self.sock.fileno()
        self.loop.add_reader(fd, _wake, ready)
        try:
            async with asyncio.timeout(max(timeout, 0.0)):
                await ready
        finally:
            self.loop.remove_reader(fd)

    async def peek(self, timeout: float) -> bytes:
        """peek - the input waiting (TimeoutError when none comes), not taken."""
        if self.eof:
            return b""
        await self._readable(timeout)
        try:
            data = self.sock.recv(READ_SIZE, socket.MSG_PEEK)
        except BlockingIOError:
            return await self.peek(timeout)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.eof = True
        return data

    def consume(self, n: int) -> None:
        """consume - take N peeked bytes off the socket."""
        while n > 0:
            n -= len(self.sock.recv(n))

    def take_line(self) -> bytes | None:
        end = self.buf.find(b"\n")
        if end < 0:
            return None
        line = bytes(self.buf[:end + 1])
        del self.buf[:end + 1]
        return line

    def pending(self) -> bool:
        if self.buf:
            return True
        try:
            readable, _, _ = select.select([self.sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    async def send(self, text: str) -> bool:
        """send - TEXT and CRLF; False when the client is gone."""
        try:
            await self.loop.sock_sendall(self.sock, text.encode("utf-8", "replace") + b"\r\n")
        except (ConnectionError, OSError):
            return False
        return True

    def switch(self, sock: socket.socket) -> None:
        """switch - go on over SOCK (tlsproxy's plain side); input that came
        before it is dropped, as RFC 3207 requires after STARTTLS."""
        self.sock.close()
        self.sock = sock
        sock.setblocking(False)
        self.buf.clear()

    def release(self) -> None:
        """release - close our descriptor of a connection smtpd now serves
        (a shutdown() would end it for smtpd too)."""
        self.handed_off = True
        self.sock.close()

    def close(self) -> None:
        """close - end the connection; input left unread (a pregreeting
        zombie's) is read away first, or the kernel would answer it with a
        reset that can overtake our last reply."""
        if self.handed_off:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
            while self.sock.recv(READ_SIZE):
                pass
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
