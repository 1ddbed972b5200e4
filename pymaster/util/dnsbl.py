"""DNS list reply filters: which A records of a DNS block list count.

A DNSBL answers a listed name with A records (127.0.0.2 ...). Both smtpd's
`reject_rbl_client zen.example=FILTER` and postscreen's
`postscreen_dnsbl_sites = zen.example=FILTER*WEIGHT` take a FILTER of four
octets, each a number, a `[a..b]` range or a `[a;b;c]` choice (ranges
allowed inside: `[1;3..5]`), as Postfix's reply filters.

Interface:
    parse_filter(text) -> callable(address) -> bool     ValueError when malformed
"""

from __future__ import annotations

import re

_RANGE_RE = re.compile(r"^(\d+)\.\.(\d+)$")


def parse_filter(text: str):
    """parse_filter - "127.0.0.[2..11]" -> a predicate on dotted-quad answers."""
    parts = _split_octets(text)
    if len(parts) != 4:
        raise ValueError(f"bad DNS list reply filter: {text}")
    allowed = [_octet_set(p, text) for p in parts]

    def matches(address: str) -> bool:
        fields = address.split(".")
        return len(fields) == 4 and all(f.isdigit() and int(f) in a
                                        for f, a in zip(fields, allowed))
    return matches


def _split_octets(text: str) -> list[str]:
    """_split_octets - "127.0.[0..2].1" -> ["127", "0", "[0..2]", "1"] (dots in brackets kept)."""
    parts, depth, cur = [], 0, ""
    for c in text:
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
        if c == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def _octet_set(part: str, text: str) -> set[int]:
    if part.isdigit():
        return {int(part)}
    if not (part.startswith("[") and part.endswith("]")):
        raise ValueError(f"bad DNS list reply filter: {text}")
    out: set[int] = set()
    for item in part[1:-1].split(";"):
        m = _RANGE_RE.match(item.strip())
        if m:
            out |= set(range(int(m.group(1)), int(m.group(2)) + 1))
        elif item.strip().isdigit():
            out.add(int(item))
        else:
            raise ValueError(f"bad DNS list reply filter: {text}")
    return out
