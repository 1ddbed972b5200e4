"""qmgr's active messages: one queue file being delivered, and its accounting.

A message enters the active queue (moved there from incoming or deferred),
its envelope is read once, and every recipient not yet done is handed to
the scheduler. `outstanding` counts recipients queued or in flight; when it
reaches zero the message is finished: removed, deferred, or expired.

Recipients are read in slices (qmgr_message_recipient_limit caps what is
in memory): a message with more pending recipients than its slice holds
remembers the file offset where the next slice starts, and reads it when
every recipient of the current slice has an outcome. Done recipients are
never read into memory at all.

Interface:
    ActiveMessage.load(queue_id, path, limit=0) -> ActiveMessage   raises CorruptQueueFile
    msg.has_more / msg.read_more(limit)   the next slice of recipients
    msg.all_pending(limit) -> iterator of recipient slices, from the start
    msg.warning_sent / msg.note_warning_sent()   the delay warning (warning_time=0)
    msg.request(transport, job) -> delivery.DeliveryRequest
    msg.status(cfg) -> delivery.Status   for outcomes qmgr decides itself
    msg.apply_results(job, header) -> list of recipients left without an outcome
    msg.entered_line() -> "from=<…>, size=N, nrcpt=M (queue active)"
    msg.content_filter() -> "transport:nexthop" | ""   the queue file's content filter
    filter_resolution(content_filter, address, cfg) -> Resolution
    last_defer_reasons(queue_id) -> {address: (dsn, reason)}
"""

from __future__ import annotations

import os
import time
from typing import Iterator

from pymaster.mail import delivery, queue, records
from pymaster.mail.resolve import Resolution

WARNING_ATTR = "warning_time"    # "0": the delay warning has been sent (as Postfix)


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
        self.more_at = -1           # where the next slice of recipients starts
        self.sliced = False         # recipients were ever left unread
        self.flush = False          # came in by a flush: defer_transports do not apply
        # A bounce or trace log was found while finishing (a notice was asked
        # for): removing the message must try those logs too.
        self.notice_logs = False

    @classmethod
    def load(cls, queue_id: str, path: str, limit: int = 0) -> "ActiveMessage":
        """load - read the envelope of the active file QUEUE_ID, and at most
        LIMIT pending recipients (0: all)."""
        message, more_at = read_envelope(path, limit)
        msg = cls(queue_id, path, message, time.time())
        msg.more_at = more_at
        msg.sliced = more_at >= 0
        return msg

    @property
    def has_more(self) -> bool:
        return self.more_at >= 0

    def read_more(self, limit: int) -> None:
        """read_more - replace the recipients in memory by the next slice."""
        self.message.recipients, self.more_at = read_recipients(self.path, self.more_at, limit)

    def all_pending(self, limit: int) -> Iterator[list[records.Recipient]]:
        """all_pending - every pending recipient in the file, a slice at a time."""
        if not self.sliced:
            yield self.pending()
            return
        start = 0
        while start >= 0:
            rcpts, start = read_recipients(self.path, start, limit)
            yield [r for r in rcpts if not r.done]

    @property
    def warning_sent(self) -> bool:
        return self.message.attrs.get(WARNING_ATTR, "").strip() == "0"

    def note_warning_sent(self) -> None:
        """note_warning_sent - record in the queue file that the delay warning went out."""
        records.append_attribute(self.path, WARNING_ATTR, "0")
        self.message.attrs[WARNING_ATTR] = "0"

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

        Sent and bounced recipients, and sendmail -bv verdicts, are done
        (the agent marked the file);
        deferred ones make the message deferred. A recipient without a
        result is done only if the queue file says so."""
        results = {}
        if header is not None and header.get("status") == "ok":
            results = {int(r.get("offset", -1)): r for r in header.get("results", [])}
        missing = []
        for rcpt in rcpts:
            outcome = results.get(rcpt.offset, {}).get("status")
            if outcome in (delivery.SENT, delivery.BOUNCED, *delivery.VERDICTS):
                rcpt.done = True
            elif outcome == delivery.DEFERRED:
                self.deferred = True
            elif delivery.done_offsets(self.path, [rcpt.offset]):
                rcpt.done = True
            else:
                missing.append(rcpt)
        return missing


# -- reading envelopes in slices --------------------------------------------------

def read_envelope(path: str, limit: int = 0) -> tuple[records.Message, int]:
    """read_envelope - the envelope of PATH with at most LIMIT pending
    recipients (0: all), and the offset where the next ones start (-1: none).

    Attributes after the content (the extracted section) are read too, so
    the whole file is walked; only recipients are left out. Raises
    CorruptQueueFile for a truncated or malformed file."""
    msg = records.Message(queue_id=os.path.basename(path), path=path)
    declared, seen_end = None, False
    reader = _RecipientReader(msg.recipients, limit)
    attrs = msg.attrs
    for offset, rtype, data, length in records.walk_records(path):
        # Attributes first: most records of an envelope are. (Offset 0 is
        # always the size record: walk_records says so or raises.)
        if rtype == records.REC_ATTR:
            name, eq, value = data.decode("utf-8", "surrogateescape").partition("=")
            if not eq or not name:
                raise records.CorruptQueueFile(path, f"bad attribute record at offset {offset}")
            attrs[name] = value
        elif offset == 0:
            declared = _size_fields(path, data)
        elif rtype == records.REC_TIME:
            msg.arrival_time = _float(path, data, offset)
        elif rtype == records.REC_SENDER:
            msg.sender = data.decode("utf-8", "surrogateescape")
        elif rtype == records.REC_CONTENT:
            msg.content_offset, msg.content_length = offset + records.HEADER_SIZE, length
        elif rtype == records.REC_END:
            seen_end = True
        else:
            reader.add(offset, rtype, data, length)
    if not seen_end:
        raise records.CorruptQueueFile(path, "truncated: no end record")
    if msg.content_offset < 0 or declared is None \
            or declared[:2] != (msg.content_length, msg.content_offset):
        raise records.CorruptQueueFile(path, "size record disagrees with the content record")
    msg.rcpt_count = declared[2]
    return msg, reader.more_at


def read_recipients(path: str, start: int, limit: int) -> tuple[list[records.Recipient], int]:
    """read_recipients - up to LIMIT pending recipients from offset START on,
    and where the next ones start (-1: none)."""
    rcpts: list[records.Recipient] = []
    reader = _RecipientReader(rcpts, limit)
    for offset, rtype, data, length in records.walk_records(path, start=start):
        if rtype == records.REC_CONTENT:
            continue
        if rtype == records.REC_END:
            return rcpts, reader.more_at
        reader.add(offset, rtype, data, length)
    raise records.CorruptQueueFile(path, "truncated: no end record")


class _RecipientReader:
    """Collects O/N/Q/R groups into recipients, up to a limit of pending ones."""

    def __init__(self, into: list, limit: int) -> None:
        self.into, self.limit = into, limit
        self.pending = records.Recipient("")
        self.group_start = -1       # offset of the first record of the current group
        self.taken = 0
        self.more_at = -1

    def add(self, offset: int, rtype: bytes, data: bytes, length: int) -> None:
        if self.group_start < 0:
            self.group_start = offset
        text = data.decode("utf-8", "surrogateescape")
        if rtype == records.REC_ORIG:
            self.pending.orig = text
        elif rtype == records.REC_NOTIFY:
            self.pending.notify = text
        elif rtype == records.REC_ORCPT:
            self.pending.orcpt = text
        elif rtype in (records.REC_RCPT, records.REC_DONE):
            self._recipient(offset, rtype, text)
        else:
            self.group_start = -1   # not part of a recipient group

    def _recipient(self, offset: int, rtype: bytes, address: str) -> None:
        r, start = self.pending, self.group_start
        self.pending, self.group_start = records.Recipient(""), -1
        if rtype == records.REC_DONE:
            return                  # done recipients never come into memory
        if self.limit and self.taken >= self.limit:
            if self.more_at < 0:
                self.more_at = start
            return
        r.address, r.offset = address, offset
        self.into.append(r)
        self.taken += 1


def _size_fields(path: str, data: bytes) -> tuple[int, int, int]:
    fields = data.split()
    if len(data) != records.SIZE_DATA_LEN or len(fields) != 3 \
            or not all(x.isdigit() for x in fields):
        raise records.CorruptQueueFile(path, "bad size record")
    return int(fields[0]), int(fields[1]), int(fields[2])


def _float(path: str, data: bytes, offset: int) -> float:
    try:
        return float(data)
    except ValueError:
        raise records.CorruptQueueFile(path,
                                       f"bad arrival time record at offset {offset}") from None


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
