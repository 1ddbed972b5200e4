"""One mail transaction on an open session: MAIL, RCPT, DATA, the content.

With PIPELINING (RFC 2920) the client sends RSET (on a reused session),
XFORWARD, MAIL FROM, every RCPT TO and DATA in one write and then reads
the replies in order; without it, one command at a time, stopping early
when MAIL is refused or no RCPT is accepted. MAIL FROM carries SIZE
(RFC 1870), BODY=8BITMIME (RFC 6152), RET and ENVID (RFC 3461) and
SMTPUTF8 (RFC 6531) when the server announced them; RCPT TO carries
NOTIFY and ORCPT when it announced DSN.

The result is one Answer per recipient: the reply that decided its fate
and the command it answered, as in Postfix's "(in reply to RCPT TO
command)". A refused MAIL or DATA answers for every recipient; after the
content, an SMTP server answers once for all accepted recipients and an
LMTP server once for each (RFC 2033 4.2).

The content is sent as the wire function gives it, chunk by chunk
(content.py), so a message is never held whole; when reading it fails
half-way, the DATA cannot be ended cleanly and the session is given up
(ContentError): the server must not see a final dot for a partial message.

DATA is the last step, and an address probe (sendmail -bv, the verify
service) skips it: its RCPT replies are the answers, and the transaction
is left open for the caller to end with reset() or QUIT, as Postfix's
smtp client ends a probe.

Interface:
    Envelope(sender, recipients, addresses, size, body_8bit, smtputf8, attrs)
    run(session, envelope, wire_content, reset=False, xforward=False,
        probe=False) -> list[Answer]
    reset(session) -> bool              RSET; False when the session is not reusable
    Answer(rcpt, reply, command)
    wire_content: a function giving the wire form as an iterable of bytes
    ContentError  the queue file could not be read while sending it: the
                  session is broken off (no final dot), nothing was sent
    StaleSession  a reused session that turned out dead before any reply:
                  nothing was sent, the caller connects afresh
    xtext(text) -> RFC 3461 xtext
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, cast

from pymaster.mail.addr import external
from pymaster.mail.dsn import xtext_encode as xtext
from pymaster.mail.records import CorruptQueueFile
from services.smtp.reply import Reply
from services.smtp.session import Session, SessionError

MAIL_FROM, RCPT_TO, DATA, END_OF_DATA = "MAIL FROM", "RCPT TO", "DATA", "end of DATA"
XFORWARD_ATTRS = (("NAME", "client_name"), ("ADDR", "client_address"),
                  ("PORT", "client_port"), ("PROTO", "protocol"), ("HELO", "helo_name"))


class StaleSession(Exception):
    """A cached session was closed by the server while it sat idle."""


class ContentError(Exception):
    """The message could not be read from the queue file while sending it."""


@dataclass
class Envelope:
    sender: str
    recipients: list                  # records.Recipient, in request order
    addresses: list[str]              # what RCPT TO says for each (generic maps applied)
    size: int = 0
    body_8bit: bool = False
    smtputf8: bool = False
    attrs: dict = field(default_factory=dict)


@dataclass
class Answer:
    rcpt: object
    reply: Reply
    command: str


def mail_command(session: Session, env: Envelope) -> str:
    """mail_command - MAIL FROM with the parameters the server understands."""
    words = [f"MAIL FROM:<{external(env.sender)}>"]
    if session.has("SIZE") and env.size:
        words.append(f"SIZE={env.size}")
    if env.body_8bit and session.has("8BITMIME"):
        words.append("BODY=8BITMIME")
    if session.has("DSN"):
        ret = env.attrs.get("ret", "")
        if ret:
            words.append(f"RET={ret}")
        envid = env.attrs.get("envid", "")
        if envid:
            words.append(f"ENVID={envid}")
    if env.smtputf8 and session.has("SMTPUTF8"):
        words.append("SMTPUTF8")
    return " ".join(words)


def rcpt_command(session: Session, rcpt, address: str) -> str:
    """rcpt_command - RCPT TO with NOTIFY and ORCPT when the server has DSN."""
    words = [f"RCPT TO:<{external(address)}>"]
    if session.has("DSN"):
        if rcpt.notify:
            words.append(f"NOTIFY={rcpt.notify}")
        if rcpt.orcpt:
            words.append(f"ORCPT={rcpt.orcpt}")
        elif rcpt.orig:
            words.append(f"ORCPT=rfc822;{xtext(rcpt.orig)}")
    return " ".join(words)


def xforward_commands(session: Session, env: Envelope) -> list[str]:
    """xforward_commands - XFORWARD for the attributes the server asked for."""
    wanted = set(session.features.get("XFORWARD", "").upper().split())
    pairs = []
    for name, attr in XFORWARD_ATTRS:
        if name in wanted:
            value = str(env.attrs.get(attr, "") or "[UNAVAILABLE]")
            if name == "PROTO":
                value = value or "SMTP"
            pairs.append(f"{name}={xtext(value)}")
    return [f"XFORWARD {' '.join(pairs)}"] if pairs else []


class _Plan:
    """The commands of one transaction, each with its phase and time limit."""

    def __init__(self, session: Session, env: Envelope, reset: bool, xforward: bool,
                 data: bool = True) -> None:
        self.data = data
        self.steps: list[tuple[str, str, str, str]] = []   # (kind, line, timeout, phase)
        if reset:
            self.steps.append(("RSET", "RSET", "rset", "sending RSET"))
        if xforward:
            for line in xforward_commands(session, env):
                self.steps.append(("XFORWARD", line, "xforward", "sending XFORWARD"))
        self.steps.append((MAIL_FROM, mail_command(session, env), "mail", "sending MAIL FROM"))
        for rcpt, address in zip(env.recipients, env.addresses):
            self.steps.append((RCPT_TO, rcpt_command(session, rcpt, address), "rcpt",
                               "sending RCPT TO"))
        if data:
            self.steps.append((DATA, "DATA", "data_init", "sending DATA command"))


def run(session: Session, env: Envelope, wire: Callable[[], Iterable[bytes]],
        reset: bool = False, xforward: bool = False, probe: bool = False) -> list[Answer]:
    """run - one transaction; per-recipient answers, or SessionError/StaleSession.

    PROBE: no DATA; the transaction stays open after the RCPT replies."""
    plan = _Plan(session, env, reset, xforward, data=not probe)
    if session.has("PIPELINING"):
        replies = _pipelined(session, plan, reset)
    else:
        replies = _lockstep(session, plan, reset)
    session.uses += 1
    return _finish(session, env, plan, replies, wire)


def _pipelined(session: Session, plan: _Plan, reset: bool) -> list[Reply | None]:
    data = "".join(line + "\r\n" for _, line, _, _ in plan.steps)
    session.send(data.encode("utf-8", "surrogateescape"), plan.steps[0][3])
    replies: list[Reply | None] = []
    for i, (_, _, timeout, phase) in enumerate(plan.steps):
        replies.append(_read(session, timeout, phase, stale=reset and i == 0))
    return replies


def _lockstep(session: Session, plan: _Plan, reset: bool) -> list[Reply | None]:
    replies: list[Reply | None] = []
    accepted = False
    for i, (kind, line, timeout, phase) in enumerate(plan.steps):
        if kind == DATA and not accepted:
            break
        session.send(line.encode("utf-8", "surrogateescape") + b"\r\n", phase, timeout)
        reply = _read(session, timeout, phase, stale=reset and i == 0)
        replies.append(reply)
        if kind == MAIL_FROM and reply.code // 100 != 2:
            break
        if kind == RCPT_TO and reply.code // 100 == 2:
            accepted = True
    return replies + [None] * (len(plan.steps) - len(replies))


def _read(session: Session, timeout: str, phase: str, stale: bool) -> Reply:
    try:
        return session.read_reply(timeout, phase)
    except SessionError:
        if stale:
            raise StaleSession() from None
        raise


def _finish(session: Session, env: Envelope, plan: _Plan, replies: list[Reply | None],
            wire: Callable[[], Iterable[bytes]]) -> list[Answer]:
    """_finish - decide each recipient from the replies; send the content if due."""
    by_kind = [(step[0], reply) for step, reply in zip(plan.steps, replies)]
    mail = next(r for k, r in by_kind if k == MAIL_FROM)
    assert mail is not None  # MAIL FROM is always sent and answered
    # Read up to DATA whenever MAIL FROM is accepted, the only case that uses them.
    rcpt_replies = cast(list[Reply], [r for k, r in by_kind if k == RCPT_TO])
    data = next((r for k, r in by_kind if k == DATA), None)
    if mail.code // 100 != 2:
        _close_data(session, data)
        return [Answer(r, mail, MAIL_FROM) for r in env.recipients]
    answers = dict(enumerate(Answer(rcpt, reply, RCPT_TO)
                             for rcpt, reply in zip(env.recipients, rcpt_replies)))
    accepted = [i for i, a in answers.items() if a.reply.code // 100 == 2]
    if not accepted or not plan.data:
        # Nobody to send the content to, or a probe: the RCPT replies decide.
        _close_data(session, data)
        return [answers[i] for i in range(len(env.recipients))]
    if data is None or data.code != 354:
        assert data is not None  # a recipient accepted: DATA was sent and answered
        for i in accepted:
            answers[i] = Answer(env.recipients[i], data, DATA)
        return [answers[i] for i in range(len(env.recipients))]
    _send_content(session, wire)
    phase = "sending end of data -- message may be sent more than once"
    if session.settings.lmtp:
        for i in accepted:
            answers[i] = Answer(env.recipients[i], session.read_reply("data_done", phase),
                                END_OF_DATA)
    else:
        reply = session.read_reply("data_done", phase)
        for i in accepted:
            answers[i] = Answer(env.recipients[i], reply, END_OF_DATA)
    return [answers[i] for i in range(len(env.recipients))]


def _send_content(session: Session, wire: Callable[[], Iterable[bytes]]) -> None:
    """_send_content - the content, chunk by chunk as WIRE reads it."""
    try:
        # session.send reports its own failures as SessionError, never OSError.
        for chunk in wire():
            session.send(chunk, "sending message body", "data_xfer")
    except (OSError, CorruptQueueFile) as e:
        # Half a message is on the wire: it must not be ended with a dot.
        session.usable = False
        raise ContentError(str(e)) from None


def reset(session: Session) -> bool:
    """reset - end the open transaction (RSET) so SESSION can serve the next;
    False when the server refused it or the connection failed."""
    if not session.usable:
        return False
    try:
        reply = session.command("RSET", "rset", "sending RSET")
    except SessionError:
        return False
    return reply.code // 100 == 2


def _close_data(session: Session, data: Reply | None) -> None:
    """_close_data - a DATA accepted with no recipient: end it with an empty body."""
    if data is not None and data.code == 354:
        session.send(b".\r\n", "sending end of data", "data_done")
        session.read_reply("data_done", "sending end of data")
