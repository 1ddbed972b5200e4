"""Every reply postscreen sends and every log line it writes, in one place.

The log lines are Postfix 3.7's shapes, which fail2ban filters and
pflogsumm parse: `CONNECT from [a]:p to [b]:q`, `PREGREET n after t from
[a]:p: text`, `DNSBL rank n for [a]:p`, `PASS NEW [a]:p`, `PASS OLD [a]:p`,
`ALLOWLISTED [a]:p` (`WHITELISTED` with respectful_logging = no),
`DENYLISTED [a]:p` (`BLACKLISTED`), `HANGUP after t from [a]:p in tests
before|after SMTP handshake`, `COMMAND PIPELINING from [a]:p after CMD:
text`, `NON-SMTP COMMAND from [a]:p after CMD: text`, `BARE NEWLINE from
[a]:p after LINE`, `COMMAND TIME/COUNT/LENGTH LIMIT from [a]:p after CMD`,
`DATA without valid RCPT from [a]:p`, `NOQUEUE: reject: RCPT from [a]:p:
REPLY; from=<s>, to=<r>, proto=ESMTP, helo=<h>`, `DISCONNECT [a]:p`.

A time is seconds with two significant digits, at most two decimals and
no trailing zeros (`0.23`, `6.4`, `12`, `0`), and input text is shown with \\r, \\n and other
control characters escaped C-style, at most TEXT_LIMIT characters of it.

Interface: the reply constants, the log functions, elapsed(seconds) -> str
"""

from __future__ import annotations

from pymaster.util import log

TEXT_LIMIT = 100       # characters of client input shown in a log line

# Replies of the actions (postscreen(8)'s: drop hangs up, enforce rejects RCPT).
PREGREET_DROP = "521 5.5.1 Protocol error"
PREGREET_ENFORCE = "550 5.5.1 Protocol error"
DENYLIST_DROP = "521 5.3.2 Service currently unavailable"
DENYLIST_ENFORCE = "550 5.3.2 Service currently unavailable"
DNSBL_DROP = "521 5.7.1 Service unavailable; client [{addr}] blocked using {name}"
DNSBL_ENFORCE = "550 5.7.1 Service unavailable; client [{addr}] blocked using {name}"
PROTOCOL_DROP = "521 5.5.1 Protocol error"
PROTOCOL_ENFORCE = "550 5.5.1 Protocol error"
NON_SMTP_DROP = "521 5.7.0 Error: I can break rules, too. Goodbye."
# The deep tests passed (or are under way): the client must come back later,
# since this connection cannot be given to smtpd mid-session.
TRY_AGAIN = "450 4.3.2 Service currently unavailable"

ALL_BUSY = "421 4.3.2 All screening ports are busy"
TOO_MANY_CONNECTIONS = "421 4.7.0 Error: too many connections"

# The dummy SMTP engine.
OK = "250 2.0.0 Ok"
MAIL_OK = "250 2.1.0 Ok"
BYE = "221 2.0.0 Bye"
NEED_HELO = "503 5.5.1 Error: send HELO/EHLO first"
NEED_MAIL = "503 5.5.1 Error: need MAIL command"
NEED_RCPT = "554 5.5.1 Error: no valid recipients"
NESTED_MAIL = "503 5.5.1 Error: nested MAIL command"
UNKNOWN = "502 5.5.2 Error: command not recognized"
TLS_READY = "220 2.0.0 Ready to start TLS"
TLS_ACTIVE = "554 5.5.1 Error: TLS already active"
# Postfix 3.7's postscreen answers STARTTLS with an argument so.
TLS_SYNTAX = "501 Syntax: EHLO hostname"
TLS_UNAVAILABLE = "454 4.7.0 TLS not available due to local problem"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
NO_ETRN = "458 Unable to queue messages"
VRFY_DISABLED = "502 5.5.1 VRFY command is disabled"
BAD_SYNTAX = "501 Syntax: {verb} hostname"
TOO_MANY = "421 {host} Service unavailable - try again later"
TIMEOUT = "421 4.4.2 {host} Error: timeout exceeded"
TOO_LONG = "521 5.5.1 Error: command too long"


def elapsed(seconds: float) -> str:
    """elapsed - SECONDS with two significant digits but at most two decimals,
    trailing zeros dropped (12, 6.4, 0.31, 0 for an instant)."""
    if seconds >= 10:
        return str(int(seconds))
    text = f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2f}"
    return text.rstrip("0").rstrip(".") or "0"


def printable(data: bytes) -> str:
    """printable - client input as a log line shows it (C escapes)."""
    out = []
    for b in data[:TEXT_LIMIT]:
        c = chr(b)
        if c == "\r":
            out.append("\\r")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\\":
            out.append("\\\\")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    return "".join(out)


def client(addr: str, port: str) -> str:
    return f"[{addr}]:{port}"


def connect(addr: str, port: str, saddr: str, sport: str) -> None:
    log.info(f"CONNECT from {client(addr, port)} to {client(saddr, sport)}")


def allowlisted(word: str, addr: str, port: str) -> None:
    log.info(f"{word} {client(addr, port)}")


def pregreet(count: int, after: float, addr: str, port: str, data: bytes) -> None:
    log.info(f"PREGREET {count} after {elapsed(after)} from {client(addr, port)}: "
             f"{printable(data)}")


def dnsbl_rank(score: int, addr: str, port: str) -> None:
    log.info(f"DNSBL rank {score} for {client(addr, port)}")


def passed(new: bool, addr: str, port: str) -> None:
    log.info(f"PASS {'NEW' if new else 'OLD'} {client(addr, port)}")


def hangup(after: float, addr: str, port: str, handshake: bool) -> None:
    where = "after" if handshake else "before"
    log.info(f"HANGUP after {elapsed(after)} from {client(addr, port)} "
             f"in tests {where} SMTP handshake")


def protocol(what: str, addr: str, port: str, command: str, data: bytes | None) -> None:
    """protocol - COMMAND PIPELINING, NON-SMTP COMMAND, BARE NEWLINE, ... LIMIT."""
    text = f"{what} from {client(addr, port)} after {command}"
    if data is not None:
        text += f": {printable(data)}"
    log.info(text)


def reject(addr: str, port: str, reply: str, sender: str, rcpt: str, helo: str,
           proto: str) -> None:
    log.info(f"NOQUEUE: reject: RCPT from {client(addr, port)}: {reply}; "
             f"from=<{sender}>, to=<{rcpt}>, proto={proto}, helo=<{helo}>")


def data_without_rcpt(addr: str, port: str) -> None:
    log.info(f"DATA without valid RCPT from {client(addr, port)}")


def disconnect(addr: str, port: str) -> None:
    log.info(f"DISCONNECT {client(addr, port)}")
