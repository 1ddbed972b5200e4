"""What a program's exit status means to a delivery agent (sysexits.h).

Commands that deliver mail (pipe(8) transports, local(8) |commands) report
through the <sysexits.h> codes. Each code has an enhanced status code and a
text, as Postfix's sys_exits table gives them; a code whose status is 4.x.x
is a temporary failure (the mail is deferred), any other one is permanent.

Interface:
    SYS_EXITS                     code -> (dsn, text)
    EX_UNAVAILABLE                69
    EX_TEMPFAIL                   75
    detail(code) -> (dsn, text) | None
    is_soft(code) -> bool         whether CODE means "try again later"
"""

from __future__ import annotations

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

SYS_EXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),          # EX_USAGE
    65: ("5.6.0", "data format error"),                 # EX_DATAERR
    66: ("5.3.0", "cannot open input"),                 # EX_NOINPUT
    67: ("5.1.1", "user unknown"),                      # EX_NOUSER
    68: ("5.1.2", "host name unknown"),                 # EX_NOHOST
    69: ("5.3.0", "service unavailable"),               # EX_UNAVAILABLE
    70: ("5.3.0", "internal software error"),           # EX_SOFTWARE
    71: ("4.3.0", "system resource problem"),           # EX_OSERR
    72: ("5.3.0", "critical OS file missing"),          # EX_OSFILE
    73: ("5.2.0", "can't create user output file"),     # EX_CANTCREAT
    74: ("5.3.0", "input/output error"),                # EX_IOERR
    75: ("4.3.0", "temporary failure"),                 # EX_TEMPFAIL
    76: ("5.5.0", "remote error in protocol"),          # EX_PROTOCOL
    77: ("5.7.0", "permission denied"),                 # EX_NOPERM
    78: ("5.3.5", "local configuration error"),         # EX_CONFIG
}


def detail(code: int) -> tuple[str, str] | None:
    """detail - (dsn, text) of a sysexits.h CODE, or None for any other status."""
    return SYS_EXITS.get(code)


def is_soft(code: int) -> bool:
    """is_soft - whether CODE is a temporary failure (its status is 4.x.x)."""
    found = SYS_EXITS.get(code)
    return found is not None and found[0].startswith("4")
