"""The message content as it goes on the wire after DATA.

The queue file holds headers and body with LF line ends and no
dot-stuffing. On the wire every line ends in CRLF, a line that starts with
"." gets another "." (RFC 5321 4.5.2), and the content ends with
"CRLF.CRLF". Lines longer than smtp_line_length_limit (998 by default,
RFC 5321 4.5.3.1.6) are broken by inserting CRLF SPACE, which does the
least damage to MIME content, as Postfix does.

Interface:
    to_wire(content: bytes, line_limit=998) -> bytes   (ends with ".\r\n")
    is_8bit(content) -> bool
    EMPTY_DATA  the wire form of an empty message (used to close a DATA
                that the server accepted although no recipient was)
"""

from __future__ import annotations

import re

EIGHT_BIT = re.compile(rb"[\x80-\xff]")
LEADING_DOT = re.compile(rb"^\.", re.M)
EMPTY_DATA = b".\r\n"


def is_8bit(content: bytes) -> bool:
    """is_8bit - whether any byte of CONTENT has its high bit set."""
    return EIGHT_BIT.search(content) is not None


def to_wire(content: bytes, line_limit: int = 998) -> bytes:
    """to_wire - CONTENT with CRLF line ends, dot-stuffed, ending in CRLF.CRLF."""
    if b"\r" in content:
        content = content.replace(b"\r\n", b"\n")
    if content and not content.endswith(b"\n"):
        content += b"\n"
    if line_limit > 0 and re.search(rb"[^\n]{%d}" % (line_limit + 1), content):
        content = _break_long_lines(content, line_limit)
    content = LEADING_DOT.sub(b"..", content)
    return content.replace(b"\n", b"\r\n") + b".\r\n"


def _break_long_lines(content: bytes, limit: int) -> bytes:
    """_break_long_lines - fold every line longer than LIMIT with "\\n "."""
    out = []
    for line in content.split(b"\n"):
        while len(line) > limit:
            out.append(line[:limit])
            line = b" " + line[limit:]
        out.append(line)
    return b"\n".join(out)
