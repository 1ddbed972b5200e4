"""8bit to 7bit conversion for servers that do not announce 8BITMIME.

RFC 6152 forbids sending 8-bit content to a server that does not offer
8BITMIME. Like Postfix (unless disable_mime_output_conversion = yes), the
client then re-encodes every 8-bit MIME body part as quoted-printable
(RFC 2045 6.7) and says so in its Content-Transfer-Encoding header.
Multipart entities are walked part by part (RFC 2046 5.1); message/rfc822
parts and headers are left alone (8-bit headers cannot be encoded here).
A message without MIME headers counts as one text part.

Interface:
    downgrade(content: bytes) -> bytes   LF line ends in and out
"""

from __future__ import annotations

import binascii
import re

from services.smtp.content import is_8bit

CTE_RE = re.compile(rb"^content-transfer-encoding:", re.I)
CT_RE = re.compile(rb"^content-type:", re.I)
BOUNDARY_RE = re.compile(rb'boundary\s*=\s*(?:"([^"]+)"|([^\s;]+))', re.I)
MAX_DEPTH = 20


def downgrade(content: bytes) -> bytes:
    """downgrade - CONTENT with its 8-bit body parts made quoted-printable."""
    if not is_8bit(content):
        return content
    return _entity(content, 0)


def _split_entity(data: bytes) -> tuple[list[bytes], bytes]:
    """_split_entity - (header lines, each with folded continuation, body)."""
    head, sep, body = data.partition(b"\n\n")
    if not sep:
        if data.startswith(b"\n"):
            return [], data[1:]
        head, body = data, b""
    headers: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1] += b"\n" + line
        else:
            headers.append(line)
    return headers, body


def _entity(data: bytes, depth: int) -> bytes:
    headers, body = _split_entity(data)
    ctype = b"".join(h for h in headers if CT_RE.match(h)).lower()
    if ctype and b"multipart/" in ctype and depth < MAX_DEPTH:
        m = BOUNDARY_RE.search(b"".join(h for h in headers if CT_RE.match(h)))
        if m:
            return _join(headers, _multipart(body, m.group(1) or m.group(2), depth))
    if b"message/" in ctype or not is_8bit(body):
        return _join(headers, body)
    cte = b"".join(h for h in headers if CTE_RE.match(h)).lower()
    if b"base64" in cte or b"quoted-printable" in cte:
        return _join(headers, body)
    headers = [h for h in headers if not CTE_RE.match(h)]
    headers.append(b"Content-Transfer-Encoding: quoted-printable")
    return _join(headers, quoted_printable(body))


def _multipart(body: bytes, boundary: bytes, depth: int) -> bytes:
    """_multipart - convert each part between the --BOUNDARY lines."""
    delimiter = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*$", re.M)
    out: list[bytes] = []
    pos = 0
    in_part = False
    for m in delimiter.finditer(body):
        chunk = body[pos:m.start()]
        if in_part:
            # The line break before a delimiter belongs to the delimiter.
            part = chunk[:-1] if chunk.endswith(b"\n") else chunk
            out.append(_entity(part, depth + 1) + b"\n")
        else:
            out.append(chunk)
        out.append(m.group(0))
        pos = m.end()
        in_part = m.group(1) is None
    out.append(body[pos:])
    return b"".join(out)


def _join(headers: list[bytes], body: bytes) -> bytes:
    if not headers:
        return b"\n" + body
    return b"\n".join(headers) + b"\n\n" + body


def quoted_printable(body: bytes) -> bytes:
    """quoted_printable - BODY encoded per RFC 2045 6.7, LF line ends."""
    return binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)
