"""Domain lists and the local domain class, shared by address resolution and
the lookup orders of pymaster.mail.maps (which sit on both sides of it).

A Postfix domain list (mydestination, relay_domains, virtual_*_domains …)
holds names, `.subdomain` patterns, `!exclusions`, `type:table` specs and
`/file` names; whether `example.com` also matches its subdomains follows
parent_domain_matches_subdomains. The local class adds this host's own
[address] literals (inet_interfaces, proxy_interfaces).

Interface:
    DomainList(cfg, param_name, entries=None).match(domain) -> bool
    parent_matching(cfg, param_name) -> bool
    interface_addresses(cfg) -> set[str]    the addresses this host receives mail on
    LocalDomains(cfg).match(domain) -> bool; local_domains_for(cfg) -> LocalDomains
    bare_ip(domain) -> str | None
    LookupFailed                             a table could not be searched now
"""

from __future__ import annotations

import ipaddress
import socket

from pymaster.mail.addr import domain_literal_address
from pymaster.mail.config import Config
from pymaster.util import interfaces as util_interfaces
from pymaster.util import log
from pymaster.util.strings import split_list
from pymaster.util.tables import Table, open_table


class LookupFailed(Exception):
    """A table could not be searched now (TableError from pymaster.util.tables)."""


def parent_matching(cfg: Config, param_name: str) -> bool:
    """parent_matching - whether NAME is listed in parent_domain_matches_subdomains."""
    return param_name in cfg.list("parent_domain_matches_subdomains")


class DomainList:
    """A Postfix domain list (mydestination, relay_domains ...).

    Entries: `example.com` (with parent matching, also its subdomains),
    `.example.com` (subdomains), `!pattern` (exclusion: stop, no match),
    `type:table` (the domain, then its parents, as keys), `/file/name`
    (more entries, one or more a line)."""

    def __init__(self, cfg: Config, param_name: str, entries: list[str] | None = None) -> None:
        self.cfg = cfg
        self.name = param_name
        self.parent = parent_matching(cfg, param_name)
        raw = cfg.list(param_name) if entries is None else entries
        self.entries = self._expand_files(raw)
        self._tables: dict[str, Table] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _expand_files(self, entries: list[str]) -> list[str]:
        out: list[str] = []
        for e in entries:
            if e.startswith("/") and ":" not in e:
                out.extend(self._read_file(e))
            else:
                out.append(e)
        return out

    def _read_file(self, path: str) -> list[str]:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln.split("#", 1)[0] for ln in f]
        except OSError as e:
            log.warning(f"{self.name}: open {path}: {e.strerror}")
            return []
        return [item for ln in lines for item in split_list(ln)]

    def match(self, domain: str) -> bool:
        """match - whether DOMAIN is in the list; raises LookupFailed/TableError."""
        domain = domain.lower().rstrip(".")
        for entry in self.entries:
            negate = entry.startswith("!")
            pattern = entry[1:] if negate else entry
            if self._match_one(pattern, domain):
                return not negate
        return False

    def _match_one(self, pattern: str, domain: str) -> bool:
        if ":" in pattern and not pattern.startswith("["):
            return self._match_table(pattern, domain)
        pattern = pattern.lower()
        if pattern.startswith("."):
            return domain.endswith(pattern)
        if domain == pattern:
            return True
        return self.parent and domain.endswith("." + pattern)

    def _match_table(self, spec: str, domain: str) -> bool:
        table = self._tables.get(spec)
        if table is None:
            table = self._tables[spec] = open_table(spec, self.cfg)
        if table.lookup(domain) is not None:
            return True
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            key = parent if self.parent else "." + parent
            if table.lookup(key) is not None:
                return True
        return False


def interface_addresses(cfg: Config) -> set[str]:
    """interface_addresses - the IP addresses this host receives mail on.

    inet_interfaces (`all` = every interface address) plus proxy_interfaces;
    each given as an address or a name to look up."""
    addrs: set[str] = set()
    for param_name in ("inet_interfaces", "proxy_interfaces"):
        for item in cfg.list(param_name):
            addrs |= _addresses_of(item.lower())
    return addrs


def _addresses_of(item: str) -> set[str]:
    if item == "all":
        return _all_interface_addresses()
    if item == "loopback-only":
        return {"127.0.0.1", "::1"}
    item = item.strip("[]")
    try:
        return {str(ipaddress.ip_address(item))}
    except ValueError:
        pass
    try:
        return {str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
                for info in socket.getaddrinfo(item, None)}
    except (OSError, ValueError):
        log.warning(f"unable to look up interface address: {item}")
        return set()


def _all_interface_addresses() -> set[str]:
    return {"127.0.0.1", "::1"} | {str(ip) for ip, _ in util_interfaces.interface_addresses()}


class LocalDomains:
    """The local domain class: mydestination, and [address] literals of this
    host (bare addresses too with resolve_numeric_domain)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.mydestination = DomainList(cfg, "mydestination")
        self.resolve_numeric_domain = cfg.bool("resolve_numeric_domain")
        self._addresses: set[str] | None = None

    def addresses(self) -> set[str]:
        """addresses - this host's interface addresses (looked up once)."""
        if self._addresses is None:
            self._addresses = interface_addresses(self.cfg)
        return self._addresses

    def match(self, domain: str) -> bool:
        """match - DOMAIN is mydestination or [our address]; may raise
        LookupFailed or TableError."""
        domain = domain.lower().rstrip(".")
        if not domain:
            return True
        ip = domain_literal_address(domain)
        if ip is None and self.resolve_numeric_domain:
            ip = bare_ip(domain)
        if ip is not None:
            return ip in self.addresses()
        return self.mydestination.match(domain)


def bare_ip(domain: str) -> str | None:
    """bare_ip - DOMAIN as a normalised IP address, or None."""
    try:
        return str(ipaddress.ip_address(domain))
    except ValueError:
        return None


def local_domains_for(cfg: Config) -> LocalDomains:
    """local_domains_for - the LocalDomains of CFG, built once per process and Config."""
    return cfg.derived(LocalDomains)
