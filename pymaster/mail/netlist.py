"""Matching a client against a Postfix host/network list (mynetworks & co).

The list syntax of postconf(5) `mynetworks`: entries separated by commas or
white space, each one of
    192.0.2.0/24, 192.0.2.1, [2001:db8::]/32, [::1]   networks and addresses
    host.example, .example.com                        client names (a name also
                                                      matches its subdomains when
                                                      the list's parameter is in
                                                      parent_domain_matches_subdomains)
    /file/name                                        more entries, one a line
    type:table                                        a table looked up by address
    !entry                                            a negation: no match, stop
The first matching entry decides.

Interface:
    NetList(entries, subdomains=True) / NetList.from_param(cfg, name)
    NetList.match(address, name="unknown") -> bool
"""

from __future__ import annotations

import ipaddress

from pymaster.mail.config import Config
from pymaster.util import log
from pymaster.util.strings import split_list
from pymaster.util.tables import TableError, open_table


class NetList:
    """One parsed host/network list."""

    def __init__(self, entries: list[str], subdomains: bool = True) -> None:
        self.subdomains = subdomains
        self.rules: list[tuple[bool, str, object]] = []
        for entry in entries:
            self._add(entry)

    @classmethod
    def from_param(cls, cfg: Config, name: str) -> "NetList":
        subdomains = name in cfg.list("parent_domain_matches_subdomains")
        return cls(cfg.list(name), subdomains)

    def _add(self, entry: str) -> None:
        negate = entry.startswith("!")
        entry = entry[1:] if negate else entry
        if entry.startswith("/"):
            self._add_file(entry, negate)
            return
        net = parse_network(entry)
        if net is not None:
            self.rules.append((negate, "net", net))
        elif ":" in entry and not entry.startswith("["):
            self.rules.append((negate, "table", entry))
        else:
            self.rules.append((negate, "name", entry.lower().rstrip(".")))

    def _add_file(self, path: str, negate: bool) -> None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            log.warning(f"open {path}: {e.strerror}")
            return
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            for entry in split_list(line):
                self._add(("!" if negate else "") + entry)

    def match(self, address: str, name: str = "unknown") -> bool:
        """match - whether client ADDRESS (with host NAME) is on the list."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            ip = None
        name = name.lower()
        for negate, kind, value in self.rules:
            if self._matches(kind, value, ip, address, name):
                return not negate
        return False

    def _matches(self, kind: str, value, ip, address: str, name: str) -> bool:
        if kind == "net":
            return ip is not None and ip.version == value.version and ip in value
        if kind == "name":
            if value.startswith("."):
                return name.endswith(value)
            return name == value or (self.subdomains and name.endswith("." + value))
        return _table_has(value, address)


def parse_network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """parse_network - "192.0.2.0/24", "[::1]/128", "192.0.2.1" or None for other words."""
    text = entry
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        text = inner + rest
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _table_has(spec: str, address: str) -> bool:
    try:
        return open_table(spec).lookup(address) is not None
    except TableError as e:
        log.warning(f"{spec}: table lookup problem: {e}")
        return False
