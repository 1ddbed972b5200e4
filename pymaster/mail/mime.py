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
    walker.details    {error: the offending text (a header, a line, an encoding)}
    walker.encoding   while body lines are handed out: their part's
                      Content-Transfer-Encoding ("7bit" when none or unknown),
                      kept only with track_encoding=True

cleanup's strict MIME options (services/cleanup/strict.py) ask for two more
things, both off by default so that the walk costs nothing more without
them: track_encoding follows Content-Transfer-Encoding per part, and
check_domain records DOMAIN_ERROR when a message/* or multipart/* entity
names an encoding where RFC 2045 section 6.4 allows only 7bit, 8bit or
binary. A caller that finds 8-bit data where it may not be records it with
walker.note(HEADER_8BIT_ERROR or BODY_8BIT_ERROR, text); worst_error(errors)
picks the one a rejection names, in Postfix's order of seriousness.

The headers of the message itself (top_headers) are not walked again: they
only decide how the body is structured. Boundary strings are compared on
their first `boundary_limit` characters, as mime_boundary_length_limit says.
When nesting goes deeper than `nesting_limit`, the error is recorded and the
rest of the body is plain text.

Interface:
    MimeWalker(nesting_limit, boundary_limit, track_encoding=False,
               check_domain=False).walk(top_headers, body) -> Iterator[Part]
    MimeWalker.note(error, text)        record an error once, with its text
    Part(kind, context, text)
    content_type(headers) -> (type/subtype, params)
    content_encoding(headers) -> str    "base64", "7bit" … ("" when absent)
    split_lines(text) -> list[str]      lines cut at "\n" only, each keeping it
    worst_error(errors) -> str          the most serious of ERRORS
    is_mime_header(name) -> bool        Content-* and MIME-Version
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, NamedTuple

NESTING_ERROR = "MIME nesting exceeds safety limit"
HEADER_8BIT_ERROR = "improper use of 8-bit data in message header"
BODY_8BIT_ERROR = "improper use of 8-bit data in message body"
DOMAIN_ERROR = "invalid message/* or multipart/* encoding domain"
# Most serious first: a rejection names the first of these that happened.
SEVERITY = (NESTING_ERROR, HEADER_8BIT_ERROR, BODY_8BIT_ERROR, DOMAIN_ERROR)

IDENTITY_ENCODINGS = ("7bit", "8bit", "binary")     # RFC 2045 section 6.1 domains
ENCODINGS = IDENTITY_ENCODINGS + ("base64", "quoted-printable")

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


def split_lines(text: str) -> list[str]:
    """split_lines - TEXT cut after each "\\n" only: str.splitlines() would
    also cut at form feeds and Unicode line separators, which mail does not."""
    lines = text.split("\n")
    last = lines.pop()
    return [line + "\n" for line in lines] + ([last] if last else [])


def content_encoding(headers: Iterable[str]) -> str:
    """content_encoding - the (lower-case) Content-Transfer-Encoding token, or ""."""
    for h in headers:
        name, colon, value = h.partition(":")
        if colon and name.strip().lower() == "content-transfer-encoding":
            words = value.split()
            return words[0].lower() if words else ""
    return ""


def worst_error(errors: Iterable[str]) -> str:
    """worst_error - the error of ERRORS that Postfix deems most serious."""
    errors = list(errors)
    for error in SEVERITY:
        if error in errors:
            return error
    return errors[0]


def _domain_ok(kind: str, encoding: str) -> bool:
    """_domain_ok - whether a composite type may carry ENCODING (RFC 2046
    section 5.2.2/5.2.3: partial and external-body only 7bit; RFC 2045
    section 6.4: no base64 or quoted-printable for message/rfc822 and
    multipart; message/global may be encoded, RFC 6532)."""
    if kind in ("message/partial", "message/external-body"):
        return encoding in ("7bit", "base64", "quoted-printable")
    if kind == "message/rfc822" or kind.startswith("multipart/"):
        return encoding in IDENTITY_ENCODINGS
    return True


@dataclass
class _Frame:
    """One multipart level: its boundary and the default type of its parts."""
    boundary: str
    default_type: str
    depth: int          # the nesting depth inside its parts


@dataclass
class MimeWalker:
    nesting_limit: int       # mime_nesting_limit
    boundary_limit: int      # mime_boundary_length_limit
    track_encoding: bool = False
    check_domain: bool = False
    errors: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    encoding: str = "7bit"

    def note(self, error: str, text: str) -> None:
        """note - record ERROR with the text that caused it, once per error."""
        if error not in self.details:
            self.errors.append(error)
            self.details[error] = text

    def walk(self, top_headers: list[str], body: str) -> Iterator[Part]:
        """walk - every line of BODY, classified (see the module docstring)."""
        self._stack: list[_Frame] = []
        self._depth = 0
        self._plain = False
        self._part_default = "text/plain"
        state = self._enter(top_headers, "text/plain")
        lines = split_lines(body)
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
        if self.track_encoding or self.check_domain:
            self._encoding(headers, kind)
        if self._plain:
            return "body"
        if kind == "message/rfc822":
            return "nested" if self._deeper(headers) else "body"
        if kind.startswith("multipart/") and params.get("boundary"):
            if self._deeper(headers):
                default = "message/rfc822" if kind == "multipart/digest" else "text/plain"
                self._stack.append(_Frame(params["boundary"][:self.boundary_limit], default,
                                          self._depth))
        return "body"

    def _encoding(self, headers: list[str], kind: str) -> None:
        """_encoding - the encoding of the text after a header block; a
        composite type's preamble counts as 7bit (its parts say their own)."""
        encoding = content_encoding(headers)
        if self.check_domain and encoding in ENCODINGS and not _domain_ok(kind, encoding):
            self.note(DOMAIN_ERROR, encoding)
        composite = kind.startswith("multipart/") or kind == "message/rfc822"
        self.encoding = encoding if encoding in ENCODINGS and not composite else "7bit"

    def _deeper(self, headers: list[str]) -> bool:
        self._depth += 1
        if self._depth > self.nesting_limit:
            shown = [h for h in headers if h[:13].lower() == "content-type:"]
            self.note(NESTING_ERROR, (shown or [""])[0])
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
                self.encoding = "7bit"
                del self._stack[level + 1:]
                self._depth = frame.depth
                self._part_default = frame.default_type
                return "multipart"
            if text[:len(mark)] == mark and text[len(mark):len(mark) + 2] == "--":
                self.encoding = "7bit"
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
