"""cidr: tables: network blocks tried in order, first match wins.

The file syntax of cidr_table(5):

    192.168.0.0/16          result
    2001:db8::/32           result      (IPv6; may be written in [] too)
    192.168.1.1             result      (a single address)
    !10.0.0.0/8             result      (any address outside the block)
    [1.2.3.0]/24            result      (brackets are allowed)
    if 10.0.0.0/8  ...  endif           (rules tried only inside the block)

Each leading `!` flips the sense (`! ! 0.0.0.0/0` matches every IPv4
address); an IF's pattern is all the rest of its line. An IPv4 block never
matches an IPv6 key and the other way round. A bad line (a block with bits
set after the prefix, "1.2.3.4/24"; a bad mask; text after ENDIF) is warned
about with Postfix's wording and skipped. Keys are taken as they are: one
that is not a bare IP address ("[1.2.3.4]", "ipv6:::1") matches nothing.

Interface:
    CidrTable(type, name, cfg=None) .lookup(key)
    parse_cidr_rules(lines, path, warn) -> list[CidrRule]
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Callable, Iterable

from pymaster.util import log
from pymaster.util.tables import FileTable, TableError
from pymaster.util.tables.ifblocks import Endif, first_match, parse_blocks


@dataclass
class CidrRule:
    version: int
    network: int
    mask: int
    negate: bool
    result: str = ""
    is_if: bool = False
    skip_to: int = 0

    def matches(self, version: int, address: int) -> bool:
        inside = version == self.version and (address & self.mask) == self.network
        return inside != self.negate


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """_address - TEXT as an address, as strict as inet_pton (no zone, no
    leading zeros in IPv4 octets), or None."""
    if "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_block(text: str) -> tuple[int, int, int] | str:
    """parse_block - (version, network, mask) of "addr[/len]", or an error text."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return f"missing ']' character after \"{text}\""
        if text[close + 1:] and not text.startswith("/", close + 1):
            return f"garbage after \"{text[:close + 1]}\""
        text = text[1:close] + text[close + 1:]
    address, slash, length = text.partition("/")
    if not slash:
        ip = _address(address)
        if ip is None:
            return f"bad address pattern: \"{text}\""
        prefix: int = ip.max_prefixlen
    else:
        if not re.fullmatch(r"[0-9]+", length):
            return f"bad mask value in \"{text}\""
        prefix = int(length)
        if prefix > (128 if ":" in address else 32):
            return f"bad mask length in \"{text}\""
        ip = _address(address)
        if ip is None:
            return f"bad network value in \"{text}\""
    bits = ip.max_prefixlen
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    value = int(ip)
    if value & ~mask:
        net = ipaddress.ip_address(value & mask)
        return (f"non-null host address bits in \"{text}\", perhaps you should use "
                f"\"{net}/{prefix}\" instead")
    return ip.version, value, mask


def _strip_bangs(text: str) -> tuple[bool, str]:
    """_strip_bangs - (negated, rest) after leading `!`s and white space; each
    `!` flips the sense, so `! ! 0.0.0.0/0` matches what `0.0.0.0/0` does."""
    negate = False
    i = 0
    while i < len(text) and (text[i] == "!" or text[i].isspace()):
        negate ^= text[i] == "!"
        i += 1
    return negate, text[i:]


def _parse_rule(text: str, note: Callable[[str], None]) -> CidrRule | Endif | str:
    """_parse_rule - one line: "[!]pattern result", "if [!]pattern" or "endif";
    or why it is skipped. An IF's pattern is all the rest of its line."""
    leading = re.match(r"[A-Za-z0-9]*", text)
    assert leading is not None  # matches the empty string
    word = leading.group(0)
    if word.lower() == "endif":
        return "garbage after ENDIF" if text[len(word):].strip() else Endif()
    is_if = word.lower() == "if"
    if is_if:
        text = text[len(word):]
    negate, text = _strip_bangs(text)
    if is_if:
        pattern, result = text.strip(), ""
    else:
        parts = text.split(None, 1)
        pattern = parts[0] if parts else ""
        result = parts[1].strip() if len(parts) > 1 else ""
    if not pattern:
        return "no address pattern"
    block = parse_block(pattern)
    if isinstance(block, str):
        return block
    if not is_if and not result:
        return "no lookup result"
    return CidrRule(*block, negate, result, is_if)


def parse_cidr_rules(lines: Iterable[str], path: str,
                     warn: Callable[[str], None]) -> list[CidrRule]:
    """parse_cidr_rules - the rules of a cidr file; bad lines warned and skipped."""
    return parse_blocks(lines, f"cidr map {path}", _parse_rule, warn,
                        stray_endif="ENDIF without IF: skipping this rule")


def key_address(key: str) -> tuple[int, int] | None:
    """key_address - (version, integer) of an address key, None for anything else.

    The key is taken as it is, as Postfix does: "[1.2.3.4]", "ipv6:::1" or an
    address with white space around it matches nothing."""
    ip = _address(key)
    return None if ip is None else (ip.version, int(ip))


class CidrTable(FileTable):
    """cidr:/path - network blocks."""

    fixed = False

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.path = name

    def load(self) -> list[CidrRule]:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                return parse_cidr_rules(f, self.path, log.warning)
        except OSError as e:
            raise TableError(f"open {self.path}: {e.strerror}") from None

    def lookup(self, key: str) -> str | None:
        rules = self.current()
        address = key_address(key)
        if address is None:
            return None
        version, value = address
        found = first_match(rules, lambda rule: (rule.matches(version, value), None))
        return found[0].result if found else None
