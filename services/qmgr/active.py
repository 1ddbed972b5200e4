"""qmgr's active messages: one queue file being delivered, and its accounting.

A message enters the active queue (moved there from incoming or deferred),
its envelope is read once, and every recipient not yet done is handed to
the scheduler. `outstanding` counts recipients queued or in flight; when it
reaches zero the message is finished: removed, deferred, or expired.

Interface:
    ActiveMessage.load(queue_id, path) -> ActiveMessage   raises CorruptQueueFile
    msg.request(transport, job) -> delivery.DeliveryRequest
    msg.status(cfg) -> delivery.Status   for outcomes qmgr decides itself
    msg.apply_results(job, header) -> list of recipients left without an outcome
    msg.entered_line() -> "from=<…>, size=N, nrcpt=M (queue active)"
    msg.content_filter() -> "transport:nexthop" | ""   the queue file's content filter
    filter_resolution(content_filter, address, cfg) -> Resolution
    last_defer_reasons(queue_id) -> {address: (dsn, reason)}
"""

from __future__ import annotations

import time

from pymaster import delivery, queue, records
from pymaster.resolve import Resolution


class ActiveMessage:
    """One message in the active queue."""

    def __init__(self, queue_id: str, path: str, message: records.Message,
                 active_time: float) -> None:
        self.queue_id = queue_id
        self.path = path
        self.message = message
        self.active_time = active_time
        self.outstanding = 0
        self.deferred = False

    @classmethod
    def load(cls, queue_id: str, path: str) -> "ActiveMessage":
        """load - read the envelope of the active file QUEUE_ID."""
        return cls(queue_id, path, records.read_message(path), time.time())

    @property
    def sender(self) -> str:
        return self.message.sender

    @property
    def arrival_time(self) -> float:
        return self.message.arrival_time

    def pending(self) -> list[records.Recipient]:
        return self.message.pending()

    def content_filter(self) -> str:
        """content_filter - where cleanup said to send every recipient ("" = nowhere special)."""
        return self.message.attrs.get("content_filter", "").strip()

    def entered_line(self) -> str:
        """entered_line - the log line for a message entering the active queue."""
        nrcpt = self.message.rcpt_count or len(self.message.recipients)
        return (f"{self.queue_id}: from=<{self.sender}>, size={self.message.size}, "
                f"nrcpt={nrcpt} (queue active)")

    def request(self, transport: str, nexthop: str, rcpts: list) -> delivery.DeliveryRequest:
        """request - the delivery request for RCPTS of this message."""
        attrs = dict(self.message.attrs)
        attrs.setdefault("size", str(self.message.size))
        return delivery.DeliveryRequest(
            queue_id=self.queue_id, path=self.path, transport=transport, nexthop=nexthop,
            sender=self.sender, recipients=rcpts, queue_name="active",
            arrival_time=self.arrival_time, active_time=self.active_time, attrs=attrs)

    def status(self, cfg, rcpts: list) -> delivery.Status:
        """status - a Status for outcomes qmgr logs itself (relay=none)."""
        return delivery.Status(self.request("", "", rcpts), cfg)

    def apply_results(self, rcpts: list, header: dict | None) -> list:
        """apply_results - take an agent's answer; the recipients it left open.

        Sent and bounced recipients are done (the agent marked the file);
        deferred ones make the message deferred. A recipient without a
        result is done only if the queue file says so."""
        results = {}
        if header is not None and header.get("status") == "ok":
            results = {int(r.get("offset", -1)): r for r in header.get("results", [])}
        missing = []
        for rcpt in rcpts:
            outcome = results.get(rcpt.offset, {}).get("status")
            if outcome in (delivery.SENT, delivery.BOUNCED):
                rcpt.done = True
            elif outcome == delivery.DEFERRED:
                self.deferred = True
            elif delivery.done_offsets(self.path, [rcpt.offset]):
                rcpt.done = True
            else:
                missing.append(rcpt)
        return missing


def filter_resolution(content_filter: str, address: str, cfg) -> Resolution:
    """filter_resolution - ADDRESS sent to CONTENT_FILTER (`transport:nexthop`).

    As Postfix's qmgr: without a next hop, default_filter_nexthop, else the
    recipient's domain, else myhostname."""
    transport, _, nexthop = content_filter.partition(":")
    if not nexthop:
        nexthop = cfg.get("default_filter_nexthop") or address.rpartition("@")[2] \
            or cfg.get("myhostname")
    return Resolution(transport.strip(), nexthop.strip(), address, "filter")


def last_defer_reasons(queue_id: str) -> dict[str, tuple[str, str]]:
    """last_defer_reasons - each recipient's latest (dsn, reason) in the defer log."""
    reasons = {}
    for entry in delivery.read_status_log(queue.defer_log_path(queue_id)):
        if "recipient" in entry:
            reasons[entry["recipient"]] = (entry.get("status", "4.0.0"),
                                           entry.get("reason", "delivery deferred"))
    return reasons
