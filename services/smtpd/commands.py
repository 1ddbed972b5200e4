"""smtpd's command table: every SMTP verb the server knows, with its facts.

One row per command, in the order the per-session counts appear in the
`disconnect from … ehlo=1 mail=1 … commands=N` log line (Postfix's order).
Flags:
  ends_group  the command must end a pipelined group (RFC 2920 3.1; Postfix
              also counts HELO and STARTTLS/AUTH): a client that sends more
              after it without waiting violates pipelining
  junk        the command counts toward smtpd_junk_command_limit (NOOP, VRFY,
              ETRN, RSET, HELO, EHLO)
A row without a handler (EXPN, TURN) is known only for pipelining; it is
answered and counted as an unknown command.

Interface:
    Command(name, handler, ends_group=False, junk=False)
    COMMANDS                 the table, in count order
    lookup(verb) -> Command | None
    COUNT_ORDER              the count names of the disconnect line ("unknown" last)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str                   # the verb, upper case
    handler: str | None         # the Session method that serves it; None: unknown to us
    ends_group: bool = False
    junk: bool = False


COMMANDS = (
    Command("HELO", "smtp_HELO", ends_group=True, junk=True),
    Command("EHLO", "smtp_EHLO", ends_group=True, junk=True),
    Command("STARTTLS", "smtp_STARTTLS", ends_group=True),
    Command("XCLIENT", "smtp_XCLIENT"),
    Command("XFORWARD", "smtp_XFORWARD"),
    Command("AUTH", "smtp_AUTH", ends_group=True),
    Command("MAIL", "smtp_MAIL"),
    Command("RCPT", "smtp_RCPT"),
    Command("DATA", "smtp_DATA", ends_group=True),
    Command("BDAT", "smtp_BDAT"),
    Command("RSET", "smtp_RSET", junk=True),
    Command("NOOP", "smtp_NOOP", ends_group=True, junk=True),
    Command("VRFY", "smtp_VRFY", ends_group=True, junk=True),
    Command("ETRN", "smtp_ETRN", ends_group=True, junk=True),
    Command("QUIT", "smtp_QUIT", ends_group=True),
    Command("EXPN", None, ends_group=True),
    Command("TURN", None, ends_group=True),
)

_BY_VERB = {command.name: command for command in COMMANDS}

COUNT_ORDER = [c.name.lower() for c in COMMANDS if c.handler is not None] + ["unknown"]


def lookup(verb: str) -> Command | None:
    """lookup - the table row of VERB (upper case), or None."""
    return _BY_VERB.get(verb)
