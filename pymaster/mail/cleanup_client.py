"""Submitting new mail to the cleanup service: the `message` request.

Every program that makes a message (smtpd, pickup, bounce notices, local's
forwarding) sends cleanup the same request (docs/architecture.md):

    header  {"op": "message", "sender", "recipients": [{"address", "orig",
             "notify", "orcpt"}], "attrs": {...}, "flags": [...], ...extra}
    payload the content frames, LF line ends
    reply   {"status": "ok" | "reject" | "defer", "queue_id", "dsn", "reason"}

This module builds that header, finds cleanup's endpoint (public or private,
as master.cf's private column made it) and reads the reply; each caller
decides what a refusal means for it (a bounce, a retry, an SMTP reply).
smtpd talks to cleanup from asyncio (services/smtpd/submit.py) and shares
the header and the endpoint from here.

Interface:
    endpoint(cfg) -> str                     cleanup_service_name's endpoint
    client(cfg, timeout) -> ipc.Client       a blocking client of that endpoint
    recipient(address, orig="", notify="", orcpt="") -> dict
    message_request(sender, recipients, attrs, flags=(), **extra) -> dict
    Reply.of(reply_header) -> Reply          .ok .status .queue_id .dsn .reason .text
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from pymaster.mail import endpoints
from pymaster.mail.config import Config
from pymaster.util import ipc


def endpoint(cfg: Config) -> str:
    """endpoint - where cleanup_service_name listens, public first as Postfix ships it."""
    return endpoints.endpoint(cfg, "cleanup")


def client(cfg: Config, timeout: float = 100.0) -> ipc.Client:
    """client - a blocking request client of cleanup; a timed-out request closes its socket."""
    return ipc.Client(endpoint(cfg), timeout)


def recipient(address: str, orig: str = "", notify: str = "", orcpt: str = "") -> dict:
    """recipient - one envelope recipient of a `message` request."""
    return {"address": address, "orig": orig, "notify": notify, "orcpt": orcpt}


def message_request(sender: str, recipients: list[dict], attrs: dict,
                    flags: Iterable[str] = (), **extra) -> dict:
    """message_request - the `message` request header; EXTRA adds top-level keys
    (arrival_time, queue_id_placeholder, actions)."""
    return {"op": "message", "sender": sender, "recipients": recipients,
            "attrs": attrs, "flags": list(flags), **extra}


@dataclass(frozen=True)
class Reply:
    """cleanup's answer to a `message` request."""
    status: str
    queue_id: str
    dsn: str
    reason: str

    @classmethod
    def of(cls, header: dict) -> "Reply":
        """of - the reply header as received; absent fields are empty."""
        return cls(str(header.get("status") or ""), str(header.get("queue_id") or ""),
                   str(header.get("dsn") or ""), str(header.get("reason") or ""))

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def text(self) -> str:
        """text - `DSN reason` for log lines, either part may be missing."""
        return f"{self.dsn} {self.reason}".strip()
