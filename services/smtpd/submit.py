"""Handing an accepted message to cleanup, and the Received: header it carries.

As in Postfix, the queue file exists from the first accepted recipient on:
the session asks cleanup to `reserve` one and learns its queue ID, which
its Received: header and log lines carry. The `message` request at end of
data names that ID (docs/architecture.md); a transaction that ends without
a message sends a one-way `abandon`. A submitter without reservations
(sendmail -bs's maildrop submitter) leaves the session without a queue ID
until the end; its Received: header then holds QUEUE_ID_PLACEHOLDER, which
whoever writes the file replaces with the ID (`queue_id_placeholder`).

Cleanup names those three requests; they travel over an ipc.AioClient
(pymaster/util/ipc.py), the asyncio client smtpd uses for every service it
calls (cleanup, anvil). A failure to get an answer is an ipc.IpcError.

Interface:
    received_header(helo, peer, hostname, mail_name, protocol, recipients, when=None,
                    queue_id=QUEUE_ID_PLACEHOLDER) -> bytes
    Cleanup(client): await reserve() -> dict, await submit(header, payload) -> dict,
        abandon(queue_id) (one-way), close()
    QUEUE_ID_PLACEHOLDER
"""

from __future__ import annotations

import math
import time

from pymaster.mail.addr import external
from pymaster.util import ipc

QUEUE_ID_PLACEHOLDER = "@QUEUE-ID-PLACEHOLDER@"


_last_date: tuple[int, str] = (-1, "")     # mail_date's last second and its text


def mail_date(when: float | None = None) -> str:
    """mail_date - RFC 5322 date with the zone name: `Sat, 28 Nov 2026 20:03:44 +0000 (UTC)`.
    The text of the last second asked is kept: the messages of one second
    share it instead of a localtime() and strftime() each."""
    global _last_date
    second = math.floor(time.time() if when is None else when)     # as localtime() rounds
    if second != _last_date[0]:
        text = time.strftime("%a, %d %b %Y %H:%M:%S %z (%Z)", time.localtime(second))
        _last_date = (second, text)
    return _last_date[1]


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


class Cleanup:
    """smtpd's requests to the cleanup service, over CLIENT."""

    def __init__(self, client: ipc.AioClient) -> None:
        self.client = client

    async def reserve(self) -> dict:
        """reserve - an incomplete queue file for the transaction: {"status", "queue_id"}."""
        return await self.client.request({"op": "reserve"})

    async def submit(self, header: dict, payload: list) -> dict:
        """submit - the `message` request; cleanup's answer."""
        return await self.client.request(header, payload)

    def abandon(self, queue_id: str) -> None:
        """abandon - the reserved file QUEUE_ID will not be written: cleanup removes it."""
        self.client.notify({"op": "abandon", "queue_id": queue_id})

    def close(self) -> None:
        self.client.close()
