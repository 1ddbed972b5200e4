"""RFC 5322 message headers: splitting, names, unfolding, folding, dates.

A message is handled as bytes with LF line ends (pymaster's queue form).
Header text is decoded as UTF-8 with surrogate escapes, so 8-bit bytes in a
header go back out exactly as they came in.

Interface:
    split_header_block(content) -> (headers, body_offset)
        headers: one str per logical header, continuation lines included,
        each ending in "\\n"; body_offset: where the body starts (after the
        empty line, when there is one)
    header_name(header) -> str | None    "Subject" (None: not a header line)
    header_value(header) -> str          the value, unfolded, trimmed
    make_header(name, value) -> str      "Name: value\\n", folded when long
    fold(text, width=78) -> str          fold at white space, "\\n\\t" continuations
    rfc2822_date(when) -> str            "Thu, 28 Nov 2024 20:03:44 +0100 (CET)"
    encode(text) / decode(data)          str <-> bytes, lossless
"""

from __future__ import annotations

import re
import time

_NAME_RE = re.compile(r"([!-9;-~]+)[ \t]*:")
# The same on raw bytes: the name is ASCII, so the line need not be decoded to tell.
_NAME_RE_BYTES = re.compile(rb"([!-9;-~]+)[ \t]*:")
_FOLD_BREAK_RE = re.compile(r"\n(?=[ \t])")
FOLD_WIDTH = 78


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def header_name(header: str) -> str | None:
    """header_name - the field name of a header line, or None when it is not one."""
    m = _NAME_RE.match(header)
    return m.group(1) if m else None


def header_value(header: str) -> str:
    """header_value - the unfolded value after the colon, white space trimmed."""
    _, _, value = header.partition(":")
    return _FOLD_BREAK_RE.sub("", value).strip()


def split_header_block(content: bytes) -> tuple[list[str], int]:
    """split_header_block - the primary headers of CONTENT and the body offset.

    The header block ends at the first empty line (which is consumed) or at
    the first line that is neither a header nor a continuation (which is
    the first body line, RFC 5322 notwithstanding, as Postfix treats it)."""
    headers: list[str] = []
    pos, n = 0, len(content)
    while pos < n:
        end = content.find(b"\n", pos)
        end = n if end < 0 else end + 1
        line = content[pos:end]
        if line in (b"\n", b"\r\n"):
            return headers, end
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += decode(line) if line.endswith(b"\n") else decode(line) + "\n"
        elif _NAME_RE_BYTES.match(line, 0, 1000):
            headers.append(decode(line) if line.endswith(b"\n") else decode(line) + "\n")
        else:
            return headers, pos
        pos = end
    return headers, n


def fold(text: str, width: int = FOLD_WIDTH) -> str:
    """fold - break TEXT at white space so lines stay under WIDTH where possible."""
    if len(text) <= width:
        return text
    out: list[str] = []
    line = ""
    for word in re.split(r"(?<=,) +| +", text):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    out.append(line)
    return "\n\t".join(out)


def make_header(name: str, value: str) -> str:
    """make_header - a complete header line, folded, ending in a newline."""
    return fold(f"{name}: {value}") + "\n"


def rfc2822_date(when: float | None = None) -> str:
    """rfc2822_date - the local time as RFC 5322 wants it, with the zone name."""
    t = time.localtime(when)
    offset = t.tm_gmtoff or 0
    sign = "-" if offset < 0 else "+"
    offset = abs(offset) // 60
    zone = f"{sign}{offset // 60:02d}{offset % 60:02d}"
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
              "Nov", "Dec")
    text = (f"{days[t.tm_wday]}, {t.tm_mday:2d} {months[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {zone}")
    if t.tm_zone:
        text += f" ({t.tm_zone})"
    return text
