"""Walking the MIME structure of a message body, line by line (RFC 2045/2046).

cleanup's header and body checks need to know, for each line of a message
body, what it is: a header of a MIME part (mime_header_checks), a header of
an attached message/rfc822 message (nested_header_checks), or body text
(body_checks). This module answers that, as Postfix's MIME state machine
does: it follows multipart boundaries and message/rfc822 attachments, never
decodes anything, and hands back every byte of the input, so a caller that
changes nothing writes the body back exactly as it came.

    walker = MimeWalker(nesting_limit=100, boundary_limit=2048)
    for part in walker.walk(top_headers, body_text):
        part.kind     "header": one logical header (continuation lines included)
                      "body": one body line (boundary lines included)
                      "separator": the empty line that ends a part's headers
        part.context  "multipart" (headers of a MIME part) or "nested"
                      (headers of an attached message); "" for body lines
        part.text     the exact text, with its "\\n" when it had one
    walker.errors     ["MIME nesting exceeds safety limit", ...]

The headers of the message itself (top_headers) are not walked again: they
only decide how the body is structured. Boundary strings are compared on
their first `boundary_limit` characters, as mime_boundary_length_limit says.
When nesting goes deeper than `nesting_limit`, the error is recorded and the
rest of the body is plain text.

Interface:
    MimeWalker(nesting_limit, boundary_limit).walk(top_headers, body) -> Iterator[Part]
    Part(kind, context, text)
    content_type(headers) -> (type/subtype, params)
    is_mime_header(name) -> bool        Content-* and MIME-Version
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

NESTING_ERROR = "MIME nesting exceeds safety limit"

_HEADER_START = re.compile(r"[!-9;-~]+[ \t]*:")
_PARAM = re.compile(r';\s*([!#-\'*+.0-9A-Z^-~-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)', re.I)


class Part(NamedTuple):
    kind: str
    context: str
    text: str


def is_mime_header(name: str | None) -> bool:
    """is_mime_header - Content-* and MIME-Version headers (RFC 2045 section 3)."""
    if not name:
        return False
    name = name.lower()
    return name.startswith("content-") or name == "mime-version"


def content_type(headers: Iterable[str]) -> tuple[str, dict[str, str]]:
    """content_type - the (lower-case) type/subtype and parameters of a header block."""
    for h in headers:
        name, colon, value = h.partition(":")
        if colon and name.strip().lower() == "content-type":
            value = " ".join(value.split())
            kind = value.split(";", 1)[0].strip().lower()
            params = {k.lower(): v.strip('"') for k, v in _PARAM.findall(value)}
            return kind, params
    return "", {}


@dataclass
class _Frame:
    """One multipart level: its boundary and the default type of its parts."""
    boundary: str
    default_type: str
    depth: int          # the nesting depth inside its parts


@dataclass
class MimeWalker:
    nesting_limit: int = 100
    boundary_limit: int = 2048
    errors: list[str] = field(default_factory=list)

    def walk(self, top_headers: list[str], body: str) -> Iterator[Part]:
        """walk - every line of BODY, classified (see the module docstring)."""
        self._stack: list[_Frame] = []
        self._depth = 0
        self._plain = False
        self._part_default = "text/plain"
        state = self._enter(top_headers, "text/plain")
        lines = body.splitlines(keepends=True)
        i = 0
        while i < len(lines):
            if state in ("multipart", "nested"):
                i, state = yield from self._headers(lines, i, state)
            else:
                yield Part("body", "", lines[i])
                state = self._boundary(lines[i], state)
                i += 1

    # -- the states ----------------------------------------------------------
    def _enter(self, headers: list[str], default_type: str) -> str:
        """_enter - what follows a header block: "body", "nested" (an attached
        message's headers) or "body" with a new boundary on the stack."""
        kind, params = content_type(headers)
        kind = kind or default_type
        if self._plain:
            return "body"
        if kind == "message/rfc822":
            return "nested" if self._deeper() else "body"
        if kind.startswith("multipart/") and params.get("boundary"):
            if self._deeper():
                default = "message/rfc822" if kind == "multipart/digest" else "text/plain"
                self._stack.append(_Frame(params["boundary"][:self.boundary_limit], default,
                                          self._depth))
        return "body"

    def _deeper(self) -> bool:
        self._depth += 1
        if self._depth > self.nesting_limit:
            if NESTING_ERROR not in self.errors:
                self.errors.append(NESTING_ERROR)
            self._plain = True
            self._stack.clear()
            return False
        return True

    def _boundary(self, line: str, state: str) -> str:
        """_boundary - after a body line: a boundary starts a part's headers."""
        if not self._stack or not line.startswith("--"):
            return state
        text = line.rstrip("\r\n").rstrip(" \t")[2:]
        for level in range(len(self._stack) - 1, -1, -1):
            frame = self._stack[level]
            mark = frame.boundary
            if text[:self.boundary_limit] == mark:
                del self._stack[level + 1:]
                self._depth = frame.depth
                self._part_default = frame.default_type
                return "multipart"
            if text[:len(mark)] == mark and text[len(mark):len(mark) + 2] == "--":
                del self._stack[level:]
                self._depth = frame.depth - 1
                return "body"
        return state

    def _headers(self, lines: list[str], i: int, context: str):
        """_headers - a part's header block, the separator, then the next state."""
        block: list[str] = []
        default = self._part_default if context == "multipart" else "text/plain"
        while i < len(lines):
            line = lines[i]
            if line in ("\n", "\r\n"):
                yield from _emit(block, context)
                yield Part("separator", context, line)
                return i + 1, self._enter(block, default)
            if block and line[:1] in (" ", "\t"):
                block[-1] += line
            elif _HEADER_START.match(line):
                block.append(line)
            else:
                # Not a header: the block ended without its empty line, and the
                # line is body text of the part, as Postfix has it.
                yield from _emit(block, context)
                return i, self._enter(block, default)
            i += 1
        yield from _emit(block, context)
        return i, "body"


def _emit(block: list[str], context: str) -> Iterator[Part]:
    for h in block:
        yield Part("header", context, h)
