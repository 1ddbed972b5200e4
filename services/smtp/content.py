"""The message content as it goes on the wire after DATA.

The queue file holds headers and body with LF line ends and no
dot-stuffing. On the wire every line ends in CRLF, a line that starts with
"." gets another "." (RFC 5321 4.5.2), and the content ends with
"CRLF.CRLF". Lines longer than smtp_line_length_limit (998 by default,
RFC 5321 4.5.3.1.6) are broken by inserting CRLF SPACE, which does the
least damage to MIME content, as Postfix does. A bare CR is data, but a
"." right after one is doubled too: some servers take CR.CR as the end of
the data, and content must never end the DATA early for the next hop
(SMTP smuggling).

The content is converted as it streams: a WireEncoder takes it in chunks
of any size (a chunk may end in the middle of a line, or between CR and
LF) and keeps only the state of the current line, so a message of any
size costs one chunk of memory. to_wire() is the same conversion for
content held whole.

Interface:
    WireEncoder(line_limit=998): .feed(chunk) -> bytes, .finish() -> bytes
    wire_chunks(chunks, line_limit=998) -> iterator of bytes (ends with ".\r\n")
    to_wire(content: bytes, line_limit=998) -> bytes   (ends with ".\r\n")
    is_8bit(content) -> bool, any_8bit(chunks) -> bool
    EMPTY_DATA  the wire form of an empty message (used to close a DATA
                that the server accepted although no recipient was)
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

EIGHT_BIT = re.compile(rb"[\x80-\xff]")
EMPTY_DATA = b".\r\n"


def is_8bit(content: bytes) -> bool:
    """is_8bit - whether any byte of CONTENT has its high bit set."""
    return EIGHT_BIT.search(content) is not None


def any_8bit(chunks: Iterable[bytes]) -> bool:
    """any_8bit - is_8bit() for content that arrives in CHUNKS (stops at the first)."""
    return any(EIGHT_BIT.search(chunk) is not None for chunk in chunks)


class WireEncoder:
    """Queue-file content in, wire form out, one chunk at a time."""

    def __init__(self, line_limit: int = 998) -> None:
        # A limit of 1 could never make progress (every folded line starts
        # with the inserted space), so the smallest real limit is 2.
        self.limit = max(line_limit, 2) if line_limit > 0 else 0
        self.col = 0            # bytes of the current line already written
        self.cr = False         # the last chunk ended in CR: maybe half a CRLF

    def feed(self, chunk: bytes) -> bytes:
        """feed - the wire form of CHUNK, as far as it can be known yet."""
        if self.cr:
            chunk = b"\r" + chunk
        self.cr = chunk.endswith(b"\r")
        if self.cr:
            chunk = chunk[:-1]
        if b"\r" in chunk:
            # What CR is left is bare; the held CR above keeps "\r." in one chunk.
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r.", b"\r..")
        first = chunk.find(b"\n")
        if first < 0:
            out: list[bytes] = []
            self._extend(out, chunk)
            return b"".join(out)
        last = chunk.rfind(b"\n")
        out = []
        self._extend(out, chunk[:first])
        out.append(b"\r\n")
        self.col = 0
        self._whole_lines(out, chunk[first + 1:last + 1])
        self._extend(out, chunk[last + 1:])
        return b"".join(out)

    def finish(self) -> bytes:
        """finish - what is still due: a last line's end, and the final dot."""
        out: list[bytes] = []
        if self.cr:                     # a lone CR at the very end is data
            self._extend(out, b"\r")
            self.cr = False
        if self.col:                    # a last line without its newline gets one
            out.append(b"\r\n")
            self.col = 0
        out.append(EMPTY_DATA)
        return b"".join(out)

    def _whole_lines(self, out: list[bytes], lines: bytes) -> None:
        """_whole_lines - LINES, complete lines each ending in LF, in one go
        unless one of them is too long (then line by line)."""
        if not lines:
            return
        # split, not a regular expression: a search for a run of limit+1
        # bytes costs time quadratic in the line length (9 s for 10 MB).
        if self.limit and any(len(line) > self.limit for line in lines.split(b"\n")):
            for line in lines[:-1].split(b"\n"):
                self._extend(out, line)
                out.append(b"\r\n")
                self.col = 0
            return
        if lines.startswith(b"."):
            out.append(b".")
        out.append(lines.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n"))

    def _extend(self, out: list[bytes], data: bytes) -> None:
        """_extend - DATA continues the current line (no LF in it): stuff
        a leading dot, fold where the line grows past the limit."""
        if not data:
            return
        if self.col == 0 and data.startswith(b"."):
            out.append(b".")
        pos = 0         # an offset, not data = data[room:]: no copy per fold
        if self.limit:
            # As to_wire always did: a line breaks only when more follows.
            while self.col + len(data) - pos > self.limit:
                room = self.limit - self.col
                out.append(data[pos:pos + room])
                out.append(b"\r\n ")
                pos += room
                self.col = 1
        out.append(data[pos:] if pos else data)
        self.col += len(data) - pos


def wire_chunks(chunks: Iterable[bytes], line_limit: int = 998) -> Iterator[bytes]:
    """wire_chunks - CHUNKS of queue-file content as wire chunks, the final dot included."""
    encoder = WireEncoder(line_limit)
    for chunk in chunks:
        data = encoder.feed(chunk)
        if data:
            yield data
    yield encoder.finish()


def to_wire(content: bytes, line_limit: int = 998) -> bytes:
    """to_wire - CONTENT with CRLF line ends, dot-stuffed, ending in CRLF.CRLF."""
    return b"".join(wire_chunks([content], line_limit))
