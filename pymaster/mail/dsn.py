"""Delivery status notifications: RFC 3464 reports built from the status logs.

The delivery agents record one entry per recipient in a message's status
logs (pymaster.mail.delivery: `bounce/ID` for failures, `defer/ID` for delays,
`trace/ID` for successes the sender asked for). This module turns those
entries and the queue file into the notice the bounce service submits: a
`multipart/report; report-type=delivery-status` message (RFC 3464, RFC 3462)
with three parts:

    text/plain               the template text (pymaster.mail.bounce_template),
                             then `<rcpt> (expanded from <orig>): reason`
    message/delivery-status  Reporting-MTA, X-Postfix-Queue-ID,
                             X-Postfix-Sender, Arrival-Date, then per
                             recipient Final-Recipient, Original-Recipient,
                             Action, Status, Remote-MTA, Diagnostic-Code
    message/rfc822           the original message, or text/rfc822-headers
                             for RET=HDRS, postmaster copies, delay and
                             success notices, and messages larger than
                             bounce_size_limit

RFC 3461 NOTIFY decides who hears what: a recipient without NOTIFY is
reported on failure and delay (FAILURE,DELAY), NEVER on nothing.

The bounce service also records that a delay warning went out, as an entry
`delay_warning=sent` in the defer log, so qmgr sends only one; likewise
`trace_report=sent` once the sendmail -v report of the first delivery
attempt went out.

Interface:
    RecipientStatus.from_entry(entry) / .wants(event) / .diagnostic()
    read_log(path) -> list[RecipientStatus]      one per recipient, latest wins
    Notice(kind, queue_id, sender, arrival_time, recipients, to, ...)
    build(cfg, template, notice, content, now=None) -> bytes   the whole message
    address_with_domain(addr, domain) / xtext_decode(text)
    delay_warning_due(cfg, queue_id, sender, arrival_time, now) -> bool
    delay_warning_sent(queue_id) / note_delay_warning(queue_id)
    note_trace_report(queue_id)                  sendmail -v: the report went out
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from pymaster.mail import delivery, queue
from pymaster.mail.bounce_template import Template
from pymaster.mail.config import Config
from pymaster.mail.headers import fold, rfc2822_date

FAILURE, DELAY, SUCCESS = "FAILURE", "DELAY", "SUCCESS"
KINDS = ("failure", "delay", "success", "trace")   # trace: sendmail -v / -bv reports
DEFAULT_NOTIFY = frozenset((FAILURE, DELAY))      # RFC 3461 4.1, no NOTIFY given
DELAY_MARK = "delay_warning"
TRACE_MARK = "trace_report"
MAX_REASON = 900             # keep every generated line far below 998 octets
# "host mx.example.com[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command)"
_SMTP_REASON_RE = re.compile(r"^host (?P<host>[^\s\[]+)(?:\[[^\]]*\])?(?::\d+)? said: "
                             r"(?P<text>.*?)(?: \(in reply to [^)]*\))?$")
_XTEXT_RE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_encode(text: str) -> str:
    """xtext_encode - RFC 3461 4: "+", "=" and anything not printable ASCII as +XX."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else
                   "".join(f"+{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in text)


def xtext_decode(text: str) -> str:
    """xtext_decode - RFC 3461 4: `+XX` hex escapes back to characters."""
    return _XTEXT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def address_with_domain(addr: str, domain: str) -> str:
    """address_with_domain - ADDR, with @DOMAIN appended when it has none."""
    return addr if "@" in addr or not addr else f"{addr}@{domain}"


@dataclass
class RecipientStatus:
    """One recipient's entry in a status log."""
    address: str
    orig: str = ""
    orcpt: str = ""
    notify: str = ""
    offset: int = -1
    action: str = "failed"
    status: str = "5.0.0"
    reason: str = ""
    relay: str = ""
    diag_type: str = ""
    diag_text: str = ""
    mta_type: str = ""
    mta_name: str = ""
    time: float = 0.0

    @classmethod
    def from_entry(cls, entry: dict) -> "RecipientStatus":
        """from_entry - a status log entry (pymaster.mail.delivery's fields)."""
        def number(name: str, kind, default):
            try:
                return kind(entry.get(name, default))
            except ValueError:
                return default
        return cls(address=entry.get("recipient", ""), orig=entry.get("orig_rcpt", ""),
                   orcpt=entry.get("dsn_orcpt", ""), notify=entry.get("notify_flags", ""),
                   offset=number("offset", int, -1), action=entry.get("action", "failed"),
                   status=entry.get("status", "5.0.0"), reason=entry.get("reason", ""),
                   relay=entry.get("relay", ""), diag_type=entry.get("diag_type", ""),
                   diag_text=entry.get("diag_text", ""), mta_type=entry.get("mta_type", ""),
                   mta_name=entry.get("mta_name", ""), time=number("time", float, 0.0))

    def notify_set(self) -> frozenset[str]:
        words = frozenset(w.strip().upper() for w in self.notify.split(",") if w.strip())
        return words or DEFAULT_NOTIFY

    def wants(self, event: str) -> bool:
        """wants - whether the sender asked to hear about EVENT (FAILURE …)."""
        return event in self.notify_set()

    def diagnostic(self) -> tuple[str, str]:
        """diagnostic - (Remote-MTA value or "", Diagnostic-Code value)."""
        if self.diag_text:
            mta = f"{self.mta_type or 'dns'}; {self.mta_name}" if self.mta_name else ""
            return mta, f"{self.diag_type or 'X-Postfix'}; {self.diag_text}"
        m = _SMTP_REASON_RE.match(self.reason)
        if m:
            return f"dns; {m.group('host')}", f"smtp; {m.group('text')}"
        return "", f"X-Postfix; {self.reason or 'unknown error'}"

    def original_recipient(self) -> str:
        """original_recipient - the Original-Recipient value, "" when unknown."""
        if self.orcpt:
            kind, _, text = self.orcpt.partition(";")
            return f"{kind.strip() or 'rfc822'};{xtext_decode(text.strip())}"
        if self.orig:
            return f"rfc822;{self.orig}"
        return ""


def read_log(path: str) -> list[RecipientStatus]:
    """read_log - the recipients of a status log, the latest entry of each.

    A recipient appears once however often it was logged (a retried
    delivery, an entry repeated after a crash); bookkeeping entries
    without a recipient are skipped."""
    latest: dict[tuple, RecipientStatus] = {}
    for entry in delivery.read_status_log(path):
        if not entry.get("recipient"):
            continue
        rs = RecipientStatus.from_entry(entry)
        latest.pop((rs.offset, rs.address), None)    # keep log order of the latest
        latest[(rs.offset, rs.address)] = rs
    return list(latest.values())


@dataclass
class Notice:
    """What one notice says, and to whom."""
    kind: str                   # failure, delay, success or trace
    queue_id: str
    sender: str                 # the original message's envelope sender
    arrival_time: float
    recipients: list[RecipientStatus]
    to: str                     # the notice's recipient
    postmaster: bool = False    # a postmaster copy: no boilerplate, headers only
    ret: str = "FULL"           # RFC 3461 RET of the original message
    envid: str = ""             # RFC 3461 ENVID (xtext)
    retry_until: float = 0.0    # delay notices: Will-Retry-Until
    attrs: dict = field(default_factory=dict)


def build(cfg: Config, template: Template, notice: Notice, content: bytes | None,
          now: float | None = None) -> bytes:
    """build - the complete notice message (LF line ends, as cleanup wants it).

    CONTENT is the original message (headers and body), None when the
    queue file could not be read: the report is sent without it."""
    now = time.time() if now is None else now
    host = cfg.get("myhostname")
    boundary = f"{notice.queue_id}.{int(now)}/{host}"
    original = _original_part(cfg, notice, content, boundary)
    text = _text_part(cfg, template, notice)
    report = _report_part(cfg, notice)
    body = "".join((
        "This is a MIME-encapsulated message.\n\n",
        f"--{boundary}\n", text, "\n",
        f"--{boundary}\n", report, "\n",
    )).encode("utf-8", "surrogateescape") + original + f"--{boundary}--\n".encode()
    eight_bit = not body.isascii()
    return _top_headers(cfg, template, notice, boundary, eight_bit, now) + b"\n" + body


def _top_headers(cfg: Config, template: Template, notice: Notice, boundary: str,
                 eight_bit: bool, now: float) -> bytes:
    host = cfg.get("myhostname")
    sender_addr, _, comment = template.sender.strip().partition(" ")
    from_value = address_with_domain(sender_addr, host) + (f" {comment.strip()}"
                                                           if comment.strip() else "")
    subject = template.postmaster_subject if notice.postmaster and template.postmaster_subject \
        else template.subject
    lines = [
        f"From: {from_value}\n",
        fold(f"Subject: {subject}") + "\n",
        fold(f"To: {address_with_domain(notice.to, cfg.get('myorigin'))}") + "\n",
        "Auto-Submitted: auto-replied\n",
        f"Date: {rfc2822_date(now)}\n",
        "MIME-Version: 1.0\n",
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        f"\tboundary=\"{boundary}\"\n",
        f"Content-Transfer-Encoding: {'8bit' if eight_bit else '7bit'}\n",
    ]
    return "".join(lines).encode("utf-8", "surrogateescape")


def _text_part(cfg: Config, template: Template, notice: Notice) -> str:
    """_text_part - the human-readable part: boilerplate, then one line per recipient."""
    lines = ["Content-Description: Notification\n",
             f"Content-Type: text/plain; charset={template.charset}\n"]
    text = "\n".join(template.expand(cfg))
    if not text.isascii():
        lines.append("Content-Transfer-Encoding: 8bit\n")
    lines.append("\n")
    if not notice.postmaster:
        lines.append(text + "\n\n")
    for rs in notice.recipients:
        lines.append(_recipient_line(rs, notice.kind) + "\n\n")
    return "".join(lines)


def _recipient_line(rs: RecipientStatus, kind: str) -> str:
    line = f"<{rs.address}>"
    if rs.orig and rs.orig.lower() != rs.address.lower():
        line += f" (expanded from <{rs.orig}>)"
    reason = rs.reason or "unknown error"
    if kind in ("success", "trace") and rs.action in ("delivered", "relayed", "expanded",
                                                      *delivery.VERDICTS) \
            and rs.relay and rs.relay != "none":
        reason = f"delivery via {rs.relay}: {reason}"
    return f"{line}: {reason[:MAX_REASON]}"


def _report_part(cfg: Config, notice: Notice) -> str:
    """_report_part - the message/delivery-status part (RFC 3464 2.2, 2.3)."""
    per_message = []
    if notice.envid:
        per_message.append(f"Original-Envelope-Id: {xtext_decode(notice.envid)}")
    per_message += [f"Reporting-MTA: dns; {cfg.get('myhostname')}",
                    f"X-Postfix-Queue-ID: {notice.queue_id}",
                    f"X-Postfix-Sender: rfc822; {notice.sender}"]
    if notice.arrival_time:
        per_message.append(f"Arrival-Date: {rfc2822_date(notice.arrival_time)}")
    blocks = ["\n".join(per_message)]
    for rs in notice.recipients:
        blocks.append("\n".join(_recipient_fields(rs, notice)))
    return ("Content-Description: Delivery report\n"
            "Content-Type: message/delivery-status\n\n"
            + "\n\n".join(blocks) + "\n")


def _recipient_fields(rs: RecipientStatus, notice: Notice) -> list[str]:
    fields = [f"Final-Recipient: rfc822; {rs.address}"]
    original = rs.original_recipient()
    if original:
        fields.append(f"Original-Recipient: {original}")
    fields += [f"Action: {rs.action}", f"Status: {rs.status}"]
    mta, diagnostic = rs.diagnostic()
    if mta:
        fields.append(f"Remote-MTA: {mta}")
    fields.append(f"Diagnostic-Code: {diagnostic[:MAX_REASON]}")
    if notice.kind == "delay" and notice.retry_until:
        fields.append(f"Will-Retry-Until: {rfc2822_date(notice.retry_until)}")
    return fields


def _original_part(cfg: Config, notice: Notice, content: bytes | None, boundary: str) -> bytes:
    """_original_part - the returned message, whole or its headers only."""
    if content is None:
        return b""
    limit = cfg.size("bounce_size_limit")
    if headers_only(notice, len(content), limit):
        data = _header_block(content)
        if limit > 0 and len(data) > limit:
            cut = data.rfind(b"\n", 0, limit)
            data = data[:cut + 1] if cut >= 0 else b""
        description = "Undelivered Message Headers" if notice.kind == "failure" \
            else "Message Headers"
        head = f"Content-Description: {description}\nContent-Type: text/rfc822-headers\n"
    else:
        data = content
        head = ("Content-Description: Undelivered Message\n"
                "Content-Type: message/rfc822\n")
    encoding = "7bit" if data.isascii() else "8bit"
    head = f"--{boundary}\n" + head + f"Content-Transfer-Encoding: {encoding}\n\n"
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return head.encode() + data + b"\n"


def headers_only(notice: Notice, size: int, limit: int) -> bool:
    """headers_only - whether NOTICE returns only the original's headers.

    RFC 3461 4.3: RET applies to failure notices only; delay and success
    notices carry the headers. A postmaster's copy of a sender's bounce
    carries the headers; a double bounce (null sender) the whole message.
    A message over bounce_size_limit is returned as headers, so its MIME
    structure is never cut in half."""
    if notice.kind != "failure" or notice.ret.upper() == "HDRS":
        return True
    if notice.postmaster and notice.sender:
        return True
    return limit > 0 and size > limit


def _header_block(content: bytes) -> bytes:
    """_header_block - the primary header block, without the empty line."""
    if content.startswith(b"\n"):
        return b""
    end = content.find(b"\n\n")
    return content if end < 0 else content[:end + 1]


# -- delay warnings ------------------------------------------------------------------

def delay_warning_sent(queue_id: str) -> bool:
    """delay_warning_sent - whether this message's delay warning went out."""
    return any(e.get(DELAY_MARK) for e in
               delivery.read_status_log(queue.defer_log_path(queue_id)))


def note_delay_warning(queue_id: str, now: float | None = None) -> None:
    """note_delay_warning - record in the defer log that the warning went out."""
    now = time.time() if now is None else now
    delivery.append_status_log(queue.defer_log_path(queue_id),
                               {DELAY_MARK: "sent", "time": f"{now:.0f}"}, sync=True)


def note_trace_report(queue_id: str, now: float | None = None) -> None:
    """note_trace_report - the sendmail -v report went out: agents stop recording
    (pymaster.mail.delivery.records_every_outcome reads this mark)."""
    now = time.time() if now is None else now
    delivery.append_status_log(queue.defer_log_path(queue_id),
                               {TRACE_MARK: "sent", "time": f"{now:.0f}"}, sync=True)


def delay_warning_due(cfg: Config, queue_id: str, sender: str, arrival_time: float,
                      now: float) -> bool:
    """delay_warning_due - delay_warning_time has passed and no warning went out.

    qmgr asks this when it defers a message; the null sender's mail gets
    no warning of its own (its postmaster may, with notify_classes delay)."""
    wait = cfg.time("delay_warning_time")
    if wait <= 0 or now < arrival_time + wait:
        return False
    if not sender and "delay" not in cfg.list("notify_classes"):
        return False
    return not delay_warning_sent(queue_id)
