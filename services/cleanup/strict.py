"""cleanup's strict MIME options (postconf(5)), all off by default:

  strict_7bit_headers          8-bit bytes in any header (the message's own,
                               a MIME part's, an attached message's)
  strict_8bitmime_body         8-bit bytes in body text whose part announces
                               (or defaults to) 7bit: no Content-Transfer-
                               Encoding of 8bit, binary, base64 or quoted-printable
  strict_8bitmime              both of the above
  strict_mime_encoding_domain  a message/* or multipart/* entity with an
                               encoding it may not have (base64 on multipart …)

They ride on the MIME walk of checks.check_body (pymaster.mail.mime): inspect()
looks at the parts as they pass and records what it finds in the walker, and
the walker itself checks encoding domains. As in Postfix, processing goes on
after an error, each kind of error is logged once, and the message is then
refused with the most serious one:

  QUEUEID: reject: mime-error improper use of 8-bit data in message header:
      Subject: caf\\xe9 from unknown[192.0.2.1]; from=<a@b> to=<c@d>
  550 5.6.0 improper use of 8-bit data in message header

As Postfix, none of this happens with disable_mime_input_processing, with
receive_override_options = no_header_body_checks, or for mail that Postfix
would not inspect: bounces and notices (unless internal_mail_filter_classes
names them), forwarded mail and address probes. Turning any of them on also
refuses mail nested deeper than mime_nesting_limit (as header checks do).

Interface:
    StrictMime.from_config(cfg) -> StrictMime | None     None: all off
    strict.applies(state) -> bool
    strict.walker(nesting_limit, boundary_limit) -> MimeWalker
    strict.inspect(parts, walker, top_headers) -> Iterator[Part]   every part, unchanged
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from pymaster.mail.config import Config
from pymaster.mail.mime import BODY_8BIT_ERROR, HEADER_8BIT_ERROR, MimeWalker, Part

from .state import CleanupState

INTERNAL_CLASSES = {"bounce": "bounce", "notify": "notify"}
UNINSPECTED = {"local", "verify"}       # forwarded mail, address probes


@dataclass(frozen=True)
class StrictMime:
    headers_7bit: bool
    body_8bitmime: bool
    encoding_domain: bool
    internal_classes: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: Config) -> "StrictMime | None":
        """from_config - the options of CFG, or None when none is on."""
        both = cfg.bool("strict_8bitmime")
        strict = cls(both or cfg.bool("strict_7bit_headers"),
                     both or cfg.bool("strict_8bitmime_body"),
                     cfg.bool("strict_mime_encoding_domain"),
                     tuple(cfg.list("internal_mail_filter_classes")))
        if cfg.bool("disable_mime_input_processing"):
            return None
        if not (strict.headers_7bit or strict.body_8bitmime or strict.encoding_domain):
            return None
        return strict

    def applies(self, state: CleanupState) -> bool:
        """applies - whether STATE's message is inspected at all."""
        if state.origin in UNINSPECTED:
            return False
        internal = INTERNAL_CLASSES.get(state.origin)
        return internal is None or internal in self.internal_classes

    def walker(self, nesting_limit: int, boundary_limit: int) -> MimeWalker:
        return MimeWalker(nesting_limit, boundary_limit, track_encoding=self.body_8bitmime,
                          check_domain=self.encoding_domain)

    def inspect(self, parts: Iterable[Part], walker: MimeWalker,
                top_headers: list[str]) -> Iterator[Part]:
        """inspect - PARTS unchanged, noting 8-bit data where it may not be."""
        if self.headers_7bit:
            for h in top_headers:
                if not h.isascii():
                    walker.note(HEADER_8BIT_ERROR, h)
                    break
        for part in parts:
            # 8-bit bytes decode to non-ASCII characters or surrogate escapes.
            if part.text.isascii():
                pass
            elif part.kind == "header" and self.headers_7bit:
                walker.note(HEADER_8BIT_ERROR, part.text)
            elif part.kind == "body" and self.body_8bitmime and walker.encoding == "7bit":
                walker.note(BODY_8BIT_ERROR, part.text)
            yield part
