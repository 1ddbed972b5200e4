"""cidr: tables: network blocks tried in order, first match wins.

The file syntax of cidr_table(5):

    192.168.0.0/16          result
    2001:db8::/32           result      (IPv6; may be written in [] too)
    192.168.1.1             result      (a single address)
    !10.0.0.0/8             result      (any address outside the block)
    if 10.0.0.0/8  ...  endif           (rules tried only inside the block)

An IPv4 block never matches an IPv6 key and the other way round. A block
with bits set after the prefix ("1.2.3.4/24") is warned about and skipped,
as Postfix does. Keys that are not an IP address match nothing.

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
from pymaster.util.tables.ifblocks import first_match, parse_blocks


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


def parse_block(text: str) -> tuple[int, int, int] | str:
    """parse_block - (version, network, mask) of "addr[/len]", or an error text."""
    if text.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\](/\d+)?", text)
        if not m:
            return f"bad net/mask pattern: \"{text}\""
        text = m.group(1) + (m.group(2) or "")
    address, slash, length = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"bad address pattern: \"{text}\""
    bits = ip.max_prefixlen
    if slash:
        if not length.isdigit() or int(length) > bits:
            return f"bad net/mask pattern: \"{text}\""
        prefix = int(length)
    else:
        prefix = bits
    mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
    value = int(ip)
    if value & ~mask:
        net = ipaddress.ip_address(value & mask)
        return (f"non-null host address bits in \"{text}\", perhaps you should use "
                f"\"{net}/{prefix}\" instead")
    return ip.version, value, mask


def _parse_rule(text: str) -> CidrRule | str:
    is_if = False
    if re.match(r"if\s", text, re.I):
        is_if, text = True, text[2:].strip()
    negate = text.startswith("!")
    if negate:
        text = text[1:].lstrip()
    parts = text.split(None, 1)
    if not parts:
        return "no address pattern"
    block = parse_block(parts[0])
    if isinstance(block, str):
        return block
    result = parts[1].strip() if len(parts) > 1 else ""
    if is_if and result:
        return "garbage after IF pattern"
    if not is_if and not result:
        return "no lookup result"
    return CidrRule(*block, negate, result, is_if)


def parse_cidr_rules(lines: Iterable[str], path: str,
                     warn: Callable[[str], None]) -> list[CidrRule]:
    """parse_cidr_rules - the rules of a cidr file; bad lines warned and skipped."""
    return parse_blocks(lines, f"cidr map {path}", _parse_rule, warn)


def key_address(key: str) -> tuple[int, int] | None:
    """key_address - (version, integer) of an address key, None for anything else."""
    key = key.strip()
    if key.startswith("[") and key.endswith("]"):
        key = key[1:-1]
    if key.lower().startswith("ipv6:"):
        key = key[5:]
    try:
        ip = ipaddress.ip_address(key)
    except ValueError:
        return None
    return ip.version, int(ip)


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
