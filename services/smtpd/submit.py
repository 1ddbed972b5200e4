"""Handing an accepted message to cleanup, and the Received: header it carries.

As in Postfix, the queue file exists from the first accepted recipient on:
the session asks cleanup to `reserve` one and learns its queue ID, which
its Received: header and log lines carry. The `message` request at end of
data names that ID (docs/architecture.md); a transaction that ends without
a message sends a one-way `abandon`. A submitter without reservations
(sendmail -bs's maildrop submitter) leaves the session without a queue ID
until the end; its Received: header then holds QUEUE_ID_PLACEHOLDER, which
whoever writes the file replaces with the ID (`queue_id_placeholder`).

Requests go over zeromq from the asyncio loop (zmq.asyncio), one DEALER
socket per request in flight, kept in a pool. A socket whose request
timed out is closed, never reused, so a late answer is never taken for the
answer to another request.

The pool keeps every socket it made: their number is the most requests
ever in flight at once, at most one per session this process serves
(smtpd_per_process_session_limit). Closing the ones beyond a fixed size
made a new zeromq connection per message under load, and every new
connection counts as a use toward cleanup's max_use (service.UseCounter):
with 20 sessions and a pool of 16, each cleanup worker exited after about
100 messages and a new one (about 0.12 s of CPU to start) replaced it.

Interface:
    received_header(helo, peer, hostname, mail_name, protocol, recipients, when=None,
                    queue_id=QUEUE_ID_PLACEHOLDER) -> bytes
    CleanupClient(endpoint, timeout).submit(header, payload) -> dict   (awaitable)
    CleanupClient.reserve() -> dict       (awaitable) cleanup's answer to `reserve`
    CleanupClient.abandon(queue_id)       one-way: the reservation is not needed
    CleanupClient.notify(header)   a one-way request: its answer is read and dropped
    SubmitError    cleanup did not answer in time, or answered nonsense
    QUEUE_ID_PLACEHOLDER
"""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from pymaster.mail.addr import external
from pymaster.util import ipc

QUEUE_ID_PLACEHOLDER = "@QUEUE-ID-PLACEHOLDER@"
ONEWAY_CLOSE_WAIT = 1.0     # seconds close() waits for one-way requests to arrive


class SubmitError(Exception):
    """cleanup did not answer in time, or answered nonsense."""


def mail_date(when: float | None = None) -> str:
    """mail_date - RFC 5322 date with the zone name: `Sat, 28 Nov 2026 20:03:44 +0000 (UTC)`."""
    t = time.localtime(when)
    return time.strftime("%a, %d %b %Y %H:%M:%S %z (%Z)", t)


def received_header(helo: str | None, name: str, rfc_addr: str, hostname: str,
                    mail_name: str, protocol: str, recipients: list[str],
                    when: float | None = None, queue_id: str = QUEUE_ID_PLACEHOLDER) -> bytes:
    """received_header - Postfix's Received: header, folded as Postfix folds it."""
    text = (f"Received: from {helo or name} ({name} [{rfc_addr}])\n"
            f"\tby {hostname} ({mail_name}) with {protocol}")
    if queue_id:    # none when a before-queue filter takes the message
        text += f" id {queue_id}"
    # RFC 5322: the date follows a semicolon, after the "for" clause if any.
    if len(recipients) == 1:
        text += f"\n\tfor <{external(recipients[0])}>; {mail_date(when)}\n"
    else:
        text += f";\n\t{mail_date(when)}\n"
    return text.encode("utf-8", "surrogateescape")


class CleanupClient:
    """Requests to the cleanup service from an asyncio program."""

    def __init__(self, endpoint: str, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.context = zmq.asyncio.Context.shadow(ipc.context())
        self._idle: list[zmq.asyncio.Socket] = []
        self._oneway = ipc.OneWay(endpoint)

    def _socket(self) -> zmq.asyncio.Socket:
        if self._idle:
            return self._idle.pop()
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    async def submit(self, header: dict, payload: list) -> dict:
        """submit - send one request and wait for cleanup's answer."""
        sock = self._socket()
        try:
            await sock.send_multipart([b"", *ipc.pack(header, payload)], copy=False)
            # One receive under a deadline: a poll() first would build a
            # zmq poller and a future of its own for every request.
            async with asyncio.timeout(self.timeout):
                frames = await sock.recv_multipart()
            reply, _ = ipc.unpack(frames[1:])
        except TimeoutError:
            sock.close(0)
            raise SubmitError(f"timeout after {self.timeout:g}s "
                              f"waiting for {self.endpoint}") from None
        except (zmq.ZMQError, ipc.IpcError) as e:
            sock.close(0)
            raise SubmitError(str(e)) from None
        except BaseException:
            sock.close(0)
            raise
        self._idle.append(sock)
        return reply

    async def reserve(self) -> dict:
        """reserve - an incomplete queue file for the transaction: {"status", "queue_id"}."""
        return await self.submit({"op": "reserve"}, [])

    def abandon(self, queue_id: str) -> None:
        """abandon - the reserved file QUEUE_ID will not be written: cleanup removes it."""
        self.notify({"op": "abandon", "queue_id": queue_id})

    def notify(self, header: dict) -> None:
        """notify - send a request nobody waits for (anvil's disconnect).

        ipc.OneWay sends it without a wait or a wakeup of the event loop."""
        try:
            sent = self._oneway.send(header)
        except zmq.ZMQError as e:
            raise SubmitError(str(e)) from None
        if not sent:
            raise SubmitError(f"{self.endpoint}: queue full")

    def close(self) -> None:
        for sock in self._idle:
            sock.close(0)
        self._idle.clear()
        self._oneway.close(ONEWAY_CLOSE_WAIT)
