"""Addresses in message headers: which headers carry them, and changing
them in place.

Postfix's header table (header_opts) flags some headers as sender headers
and some as recipient headers; address rewriting (canonical maps in cleanup,
smtp_generic_maps in the smtp client) works on those. Changing an address
in place replaces only the address itself: the display name, comments,
groups, white space and line breaks around it stay byte for byte, and a
line that grew past 78 characters is folded again.

Interface:
    SENDER_HEADERS, RECIPIENT_HEADERS, ADDRESS_HEADERS   lower-case names
    rewrite_addresses(text, rewrite, token_limit=10240) -> str
        TEXT is one header ("Name: value\\n", continuation lines included);
        REWRITE maps an internal-form address to its replacement. The result
        is TEXT itself (the same object) when no address changed. Whatever
        REWRITE raises (a table failure) goes to the caller.
"""

from __future__ import annotations

from typing import Callable

from pymaster.mail.addr import external, parse_address_list
from pymaster.mail.headers import FOLD_WIDTH, fold

# header_opts' HDR_OPT_SENDER and HDR_OPT_RECIP headers.
SENDER_HEADERS = frozenset({
    "disposition-notification-to", "errors-to", "from", "mail-followup-to", "reply-to",
    "resent-from", "resent-sender", "return-path", "return-receipt-to", "sender"})
RECIPIENT_HEADERS = frozenset({
    "apparently-to", "bcc", "cc", "resent-bcc", "resent-cc", "resent-reply-to", "resent-to",
    "to"})
ADDRESS_HEADERS = SENDER_HEADERS | RECIPIENT_HEADERS


def rewrite_addresses(text: str, rewrite: Callable[[str], str],
                      token_limit: int = 10240) -> str:
    """rewrite_addresses - TEXT with each address replaced by REWRITE's answer."""
    start = text.index(":") + 1
    value = text[start:]
    edits = []
    for box in parse_address_list(value, token_limit):
        if box.span is None or not box.address or _cut_short(value, box.span[1]):
            continue
        new = rewrite(box.address)
        if new != box.address:
            edits.append((box.span, external(new)))
    if not edits:
        return text
    # Pieces joined once: splicing into the string per edit would copy the
    # whole value each time (quadratic: 1 s for 1,700 addresses in one To:).
    pieces, done = [text[:start]], 0
    for (first, last), replacement in edits:
        pieces += [value[done:first], replacement]
        done = last
    pieces.append(value[done:])
    return refold("".join(pieces))


def _cut_short(value: str, end: int) -> bool:
    """_cut_short - the address ending at END runs on in VALUE: the parser
    stopped at header_address_token_limit inside it, so it is not whole and
    must not be looked up (a map could match the truncated form)."""
    return end < len(value) and value[end] not in " \t\r\n,;>()<\""


def refold(text: str) -> str:
    """refold - fold again the lines of header TEXT that are too long."""
    out = []
    for line in text.rstrip("\n").split("\n"):
        if len(line) <= FOLD_WIDTH:
            out.append(line)
            continue
        body = line.lstrip(" \t")
        lead = line[:len(line) - len(body)]
        out.append(lead + fold(body, FOLD_WIDTH - len(lead)))
    return "\n".join(out) + "\n"
