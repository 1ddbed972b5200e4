"""SMTP replies and the reasons the client logs for them.

A Reply is one complete (possibly multi-line) server reply: its code, its
lines as received, and the enhanced status code (RFC 3463) when the server
gave one. The reason texts follow Postfix's wording, which administrators
grep for and bounce messages quote:

    host mx.example.com[192.0.2.1] said: 550 5.1.1 <u@d>: unknown user
        (in reply to RCPT TO command)
    host mx.example.com[192.0.2.1] refused to talk to me: 554 go away
    connect to mx.example.com[192.0.2.1]:25: Connection refused
    lost connection with mx.example.com[192.0.2.1] while sending RCPT TO
    conversation with mx.example.com[192.0.2.1] timed out while sending MAIL FROM

Interface:
    Reply(code, lines), Reply.parse_line(line) -> (code, last, text)
    reply.dsn, reply.text (the lines joined by spaces), reply.kind ("ok", "soft", "hard")
    said(namaddr, reply, command) / refused(namaddr, reply)
    dsn_of(code, text) -> "5.1.1"
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# An enhanced status code whose class matches the reply code (RFC 3463 2).
DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
OK, SOFT, HARD = "ok", "soft", "hard"


class ReplyError(ValueError):
    """A line that is not an SMTP reply line."""


@dataclass
class Reply:
    code: int
    lines: list[str]

    @staticmethod
    def parse_line(line: str) -> tuple[int, bool, str]:
        """parse_line - "250-SIZE 100" -> (250, False, "SIZE 100")."""
        line = line.rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise ReplyError(f"malformed reply: {line[:100]!r}")
        last = len(line) == 3 or line[3] == " "
        return int(line[:3]), last, line[4:]

    @property
    def text(self) -> str:
        """text - the whole reply on one line, as Postfix quotes it."""
        return " ".join(self.lines)

    @property
    def message(self) -> str:
        """message - the text of the last line, without the code."""
        return self.lines[-1][4:] if self.lines else ""

    @property
    def dsn(self) -> str:
        return dsn_of(self.code, self.lines[0][4:] if self.lines else "")

    @property
    def kind(self) -> str:
        if self.code < 400:
            return OK
        return SOFT if self.code < 500 else HARD

    def keywords(self) -> dict[str, str]:
        """keywords - EHLO extensions: {"SIZE": "10240000", "PIPELINING": ""}."""
        ext = {}
        for line in self.lines[1:]:
            word, _, rest = line[4:].strip().partition(" ")
            if word:
                ext[word.upper()] = rest.strip()
        return ext


def dsn_of(code: int, text: str) -> str:
    """dsn_of - the reply's enhanced status code, else one made from CODE."""
    m = DSN_RE.match(text)
    if m and m.group(1) == str(code)[0]:
        return ".".join(m.groups())
    return f"{str(code)[0]}.0.0" if code >= 200 else "5.5.0"


def said(namaddr: str, reply: Reply, command: str) -> str:
    """said - "host H[A] said: REPLY (in reply to COMMAND command)"."""
    return f"host {namaddr} said: {reply.text} (in reply to {command} command)"


def refused(namaddr: str, reply: Reply) -> str:
    """refused - the reason for a greeting that is not 220."""
    return f"host {namaddr} refused to talk to me: {reply.text}"
