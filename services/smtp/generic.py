"""Outbound address rewriting with smtp_generic_maps (generic(5)).

A host without a domain of its own in the outside world rewrites its
local addresses into valid ones as mail leaves over SMTP: the envelope
sender and recipients, and the addresses in the message's sender and
recipient headers, are looked up in smtp_generic_maps (lmtp_generic_maps
in LMTP mode) in generic(5) order: user@domain, user (when the domain is
local), @domain.

Headers: as Postfix's smtp client does (smtp_header_rewrite), only the
primary header block is rewritten, not the headers of attached
message/rfc822 parts, and only the headers Postfix flags as sender or
recipient headers (pymaster/mail/header_addr.py, which also does the rewriting:
only the address changes, display name and comments stay, a line that grew
too long is folded again). A header where nothing changes is sent byte for
byte as it came. The header block is read and rewritten before the session
starts, so a table failure defers the delivery (like an envelope lookup
failure) instead of breaking off DATA; the body is never read here.

Interface:
    GenericMaps(cfg, param_name).rewrite(address) -> str
    GenericMaps.rewrite_header(text) -> str       one header, "Name: value\\n"
    GenericMaps.header_block(msg) -> HeaderBlock  msg: records.Message
    HeaderBlock.apply(content) -> bytes           the content with it spliced in
    HeaderBlock.stream(chunks) -> iterator of bytes, the same for a stream
    (a table failure raises pymaster.util.tables.TableError: the caller defers)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from pymaster.mail.config import Config
from pymaster.mail.header_addr import ADDRESS_HEADERS, rewrite_addresses
from pymaster.mail.headers import encode, header_name, split_header_block
from pymaster.mail.maps import Maps, canonical_lookup

# Headers beyond this much are passed on untouched, so that a "header
# block" that never ends costs no more than this to look at.
MAX_HEADER_BLOCK = 1 << 20


@dataclass(frozen=True)
class HeaderBlock:
    """A rewritten primary header block: DATA replaces the first REPLACES
    bytes of the content (nothing at all when both are empty)."""
    data: bytes = b""
    replaces: int = 0

    def apply(self, content: bytes) -> bytes:
        """apply - CONTENT with the rewritten headers in place of the old ones."""
        if not self.data and not self.replaces:
            return content
        return self.data + content[self.replaces:]

    def stream(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """stream - apply() for content that arrives in CHUNKS (never joined)."""
        if self.data:
            yield self.data
        skip = self.replaces
        for chunk in chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:] if skip else chunk
            skip = 0


UNCHANGED = HeaderBlock()


class GenericMaps:
    def __init__(self, cfg: Config, param_name: str) -> None:
        self.cfg = cfg
        self.maps = Maps(cfg, param_name)

    def __bool__(self) -> bool:
        return bool(self.maps)

    def rewrite(self, address: str) -> str:
        """rewrite - ADDRESS as the outside world should see it."""
        if not self.maps or not address:
            return address
        value = canonical_lookup(self.maps, address, self.cfg)
        return value.strip() if value else address

    def rewrite_header(self, text: str) -> str:
        """rewrite_header - one header with its addresses rewritten; TEXT
        itself when it is no address header or no address changed."""
        name = header_name(text)
        if not self.maps or name is None or name.lower() not in ADDRESS_HEADERS:
            return text
        return rewrite_addresses(text, self.rewrite,
                                 self.cfg.int("header_address_token_limit"))

    def header_block(self, msg) -> HeaderBlock:
        """header_block - MSG's primary headers rewritten (records.Message)."""
        if not self.maps:
            return UNCHANGED
        chunks = msg.iter_content()
        try:
            headers = _primary_headers(chunks)
        finally:
            chunks.close()      # the body is not wanted: let go of the file now
        rewritten = [self.rewrite_header(h) for h in headers]
        if all(new is old for new, old in zip(rewritten, headers)):
            return UNCHANGED
        size = sum(len(encode(h)) for h in headers)
        # split_header_block ends a last line that has no newline with one.
        size = min(size, msg.content_length)
        return HeaderBlock(encode("".join(rewritten)), size)


def _primary_headers(chunks: Iterable[bytes]) -> list[str]:
    """_primary_headers - the primary header block, read only as far as it goes.

    Past MAX_HEADER_BLOCK bytes of headers the rest is left as it is: the
    last header read may go on in the next chunk, so it is left too."""
    buf = b""
    for chunk in chunks:
        buf += chunk
        complete = buf[:buf.rfind(b"\n") + 1]
        headers, offset = split_header_block(complete)
        if offset < len(complete):      # an empty line or a body line: the end
            return headers
        if len(buf) > MAX_HEADER_BLOCK:
            return headers[:-1]
    return split_header_block(buf)[0]

