"""smtpd restriction verdicts: what a restriction decides and what it may look at.

The types and helpers that check.py and the restriction modules (access.py,
names.py, rbl.py, policy.py, auth.py) share, in a module below all of them so
that none imports check.py back. A restriction answers a Verdict (or None: no
decision); its reply is worded for the stage being evaluated ("<x@y>:
Recipient address rejected: ...").

Interface:
    PERMIT, REJECT, DEFER            the decisions
    Verdict(action, reply="")        one restriction's decision
    Context(client_name, client_addr, ...)   the client, session and command
    ConfigurationError(text)         a bad restriction list or argument
    subject(ctx) -> ("<what>", "Label")      the subject of a reply at ctx.stage
    rejection(ctx, code, text, dsn="") -> Verdict   "<x>: Label rejected: text"
    coded(code, dsn, text) -> Verdict        a reply written out in full
    temporary_failure(address) -> Verdict    451 4.3.0 lookup failure
    reply_with_code(text, default_code) -> Verdict  "554 5.7.1 text", "554 text" or "text"
    soften(reply, code=None) -> str          a 5xx reply made 4xx
    make_reply(code, dsn, text), default_dsn(code)
    log_action(ctx, action, text)            the `reject_warning:`/`hold:` log line
    CODE_RE, DSN_RE                          "450 text" and "4.7.1 text" prefixes
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from pymaster.util import log
from services.smtpd import replies

PERMIT, REJECT, DEFER = "permit", "reject", "defer"
DSN_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
CODE_RE = re.compile(r"^([45]\d\d)(?:\s+(.*))?$", re.S)
_REPLY_RE = re.compile(r"^([245])(\d\d)([ -])(?:([245])(\.\d{1,3}\.\d{1,3}) )?(.*)$", re.S)

class ConfigurationError(Exception):
    """An unknown restriction or a missing table argument."""


class Verdict(NamedTuple):
    action: str                 # PERMIT, REJECT or DEFER
    reply: str = ""             # the full SMTP reply for REJECT/DEFER


@dataclass
class Context:
    """What a restriction may look at: the client, the session, the command."""
    client_name: str
    client_addr: str
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    sasl_username: str = ""
    stage: str = "RCPT"         # the list being evaluated: CLIENT HELO SENDER RCPT DATA EOD ETRN
    reverse_name: str = ""      # the unverified reverse name ("" = same as client_name)
    client_port: str = ""
    server_addr: str = ""
    server_port: str = ""
    protocol: str = "ESMTP"
    queue_id: str = ""
    verb: str = "RCPT"          # the SMTP command, for log lines
    recipient_count: int = 0
    size: int = 0
    etrn_domain: str = ""
    instance: str = ""
    sasl_method: str = ""
    sasl_sender: str = ""
    ccert_fingerprint: str = ""
    ccert_pubkey_fingerprint: str = ""
    ccert_verified: bool = False
    tls_active: bool = False
    pipelining_violation: bool = False
    actions: list = field(default_factory=list)       # [{"action": "HOLD", "text": ...}]
    # evaluation state of one check
    warn_next: bool = False
    defer_if_reject: bool = False
    defer_if_permit: str = ""

    @property
    def namaddr(self) -> str:
        return f"{self.client_name}[{self.client_addr}]"

    @property
    def reverse_client_name(self) -> str:
        return self.reverse_name or self.client_name


# The subject of a reply at each stage: "<x@y>: Recipient address rejected: ..."
_SUBJECTS = {
    "CLIENT": ("client", "Client host"),
    "HELO": ("helo", "Helo command"),
    "SENDER": ("sender", "Sender address"),
    "RCPT": ("recipient", "Recipient address"),
    "DATA": ("data", "Data command"),
    "EOD": ("eod", "End-of-data"),
    "ETRN": ("etrn", "Etrn command"),
}


def subject(ctx: Context) -> tuple[str, str]:
    """subject - ("<what>", "Recipient address") for the list being evaluated."""
    kind, label = _SUBJECTS[ctx.stage]
    what = {"client": ctx.namaddr, "helo": ctx.helo or "", "sender": ctx.sender or "",
            "recipient": ctx.recipient or "", "data": "DATA", "eod": "END-OF-MESSAGE",
            "etrn": ctx.etrn_domain}[kind]
    return f"<{what}>", label


def make_reply(code: int, dsn: str, text: str) -> str:
    return f"{code} {dsn} {text}"


def default_dsn(code: int) -> str:
    return "4.7.1" if 400 <= code < 500 else "5.7.1"


def rejection(ctx: Context, code: int, text: str, dsn: str = "") -> Verdict:
    """rejection - a REJECT/DEFER verdict worded for the stage: "<x>: Label rejected: text"."""
    what, label = subject(ctx)
    return coded(code, dsn or default_dsn(code), f"{what}: {label} rejected: {text}")


def coded(code: int, dsn: str, text: str) -> Verdict:
    """coded - a verdict for a reply written out in full."""
    return Verdict(DEFER if code < 500 else REJECT, make_reply(code, dsn, text))


def temporary_failure(address: str) -> Verdict:
    return Verdict(DEFER, replies.ERR_TEMP_LOOKUP.format(address=address))


def soften(reply: str, code: int | None = None) -> str:
    """soften - a 5xx reply made 4xx: "554 5.7.1 x" -> "454 4.7.1 x" (or CODE 4.7.1 x)."""
    m = _REPLY_RE.match(reply)
    if not m or m.group(1) != "5":
        return reply
    first = str(code) if code else "4" + m.group(2)
    dsn = f"4{m.group(5)} " if m.group(4) else ""
    return f"{first}{m.group(3)}{dsn}{m.group(6)}"


def reply_with_code(text: str, default_code: int) -> Verdict:
    """reply_with_code - "554 5.7.1 text", "554 text" or "text" as a verdict."""
    m = CODE_RE.match(text.strip())
    if not m:
        return coded(default_code, default_dsn(default_code), text.strip())
    code, rest = int(m.group(1)), (m.group(2) or "").strip()
    d = DSN_RE.match(rest + " ")
    if d and d.group(1)[0] == str(code)[0]:
        return coded(code, d.group(1), rest[d.end():].strip() if d.end() <= len(rest) else "")
    return coded(code, default_dsn(code), rest)


def log_action(ctx: Context, action: str, text: str) -> None:
    """log_action - `NOQUEUE: hold: RCPT from NAME[ADDR]: TEXT; from=<> to=<> proto= helo=<>`."""
    log.info(replies.log_action(ctx.queue_id, action, ctx.verb, ctx.namaddr, text, ctx.sender,
                                ctx.recipient, ctx.protocol, ctx.helo))


