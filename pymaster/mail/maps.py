"""Lists of lookup tables and the key orders Postfix searches them in.

A parameter such as `virtual_alias_maps = hash:/etc/postfix/virtual,
regexp:/etc/postfix/virtual.re` names tables searched in order; the first
table with an answer wins. A table that fails (TableError) stops the search:
the caller defers rather than act on a partial answer.

The helpers below turn one address (or domain, or client) into the keys a
Postfix manual page lists, in its order. Only the first, complete key is
given to pattern tables (regexp, pcre, cidr); the shorter keys go to
exact-key tables only, as Postfix does.

  access(5)    user+ext@domain, user@domain, domain and its parents
               (`example.com`, then `com`; `.example.com` style when
               parent_domain_matches_subdomains lacks smtpd_access_maps),
               user+ext@, user@. Clients: the host name and its parents,
               then the address and its shorter prefixes (1.2.3.4, 1.2.3,
               1.2, 1; IPv6 stripped at colons likewise).
  virtual(5), canonical(5)   user+ext@domain, user@domain, user+ext, user
               (both only when the domain is local), @domain.
  aliases(5)   name+ext, name.

With an address extension (recipient_delimiter), a match on a key without
the extension gets the extension added to each result address when
propagate_unmatched_extensions names the table class (canonical, virtual,
alias). A result `@other.domain` keeps the original local part.

Interface:
    Maps(cfg, "virtual_alias_maps"), Maps.from_specs(specs, cfg=None)
    maps.lookup(key, partial=False) -> str | None ; bool(maps)
    access_lookup(maps, query, kind, parent_style=None) -> str | None
        kind: "address" (also "sender", "recipient"), "domain" (helo, host
        names), "client" (query "name[addr]" or (name, addr)),
        "client_name", "client_address"
    virtual_lookup(maps, address, cfg, propagate="virtual") -> str | None
    canonical_lookup(maps, address, cfg) -> str | None
    alias_lookup(maps, local_part, cfg) -> str | None
    split_extension(local_part, cfg) -> (base, extension-with-delimiter | "")
    is_local_domain(domain, cfg) -> bool
    open_configured_tables(cfg)   open the file tables main.cf and -o name,
                                  before the jail hides them
    configured_table_types(cfg)   the table types any parameter value names
"""

from __future__ import annotations

import re
from typing import Iterable

from pymaster.mail.aliases import raw_items
from pymaster.mail.config import Config, ConfigError
from pymaster.mail.domains import local_domains_for
from pymaster.mail.params import PARAMS
from pymaster.util.strings import split_list
from pymaster.util.tables import TYPES, FileTable, Table, open_table, prepare_type


class Maps:
    """An ordered list of tables, searched until one answers."""

    def __init__(self, cfg, param_name: str | None = None,
                 specs: Iterable[str] | None = None) -> None:
        self.cfg = cfg
        self.title = param_name or ""
        if specs is None:
            specs = cfg.list(param_name) if cfg is not None and param_name else []
        self.tables: list[Table] = [open_table(spec, cfg) for spec in specs]

    @classmethod
    def from_specs(cls, specs: Iterable[str], cfg=None) -> "Maps":
        return cls(cfg, None, list(specs))

    def __bool__(self) -> bool:
        return bool(self.tables)

    def __repr__(self) -> str:
        return f"<Maps {self.title} {[t.spec for t in self.tables]}>"

    def lookup(self, key: str, partial: bool = False) -> str | None:
        """lookup - the first table's value for KEY; PARTIAL skips pattern tables."""
        for table in self.tables:
            if partial and not table.fixed:
                continue
            value = table.lookup(key)
            if value is not None:
                return value
        return None


# -- address pieces -----------------------------------------------------------

def _cfg_get(cfg, name: str, default: str = "") -> str:
    return cfg.get(name) if cfg is not None else default


def split_extension(local: str, cfg) -> tuple[str, str]:
    """split_extension - (base, delimiter+extension) of a local part, per recipient_delimiter."""
    delimiters = _cfg_get(cfg, "recipient_delimiter")
    if not delimiters:
        return local, ""
    positions = [p for p in (local.find(d) for d in delimiters) if p > 0]
    if not positions:
        return local, ""
    if "-" in delimiters:
        # owner-list and list-request are names in their own right (Postfix's split_addr).
        lowered = local.lower()
        if lowered.startswith("owner-") or lowered.endswith("-request"):
            return local, ""
    cut = min(positions)
    return local[:cut], local[cut:]


def _split_address(address: str) -> tuple[str, str]:
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain


def _parent_style(maps: Maps, default_param: str = "smtpd_access_maps") -> bool:
    cfg = maps.cfg
    if cfg is None:
        return True
    return default_param in cfg.list("parent_domain_matches_subdomains")


def domain_keys(domain: str, parent_style: bool) -> list[str]:
    """domain_keys - DOMAIN then its parents, as `example.com` or `.example.com`."""
    domain = domain.rstrip(".")
    keys = [domain]
    if domain.startswith("["):
        return keys
    name = domain
    while True:
        dot = name.find(".", 1)
        if dot < 0:
            break
        name = name[dot + 1:] if parent_style else name[dot:]
        keys.append(name)
        if not parent_style:
            name = name[1:]
            if "." not in name:
                break
    return keys


def address_prefix_keys(address: str) -> list[str]:
    """address_prefix_keys - 1.2.3.4, 1.2.3, 1.2, 1 (IPv6: cut at colons)."""
    delim = ":" if ":" in address else "."
    keys = [address]
    while True:
        head, sep, _ = address.rpartition(delim)
        if not sep or not head:
            break
        address = head
        keys.append(address)
    return keys


# -- access(5) ----------------------------------------------------------------

def _first(maps: Maps, keys: list[tuple[str, bool]]) -> str | None:
    for key, partial in keys:
        value = maps.lookup(key, partial)
        if value is not None:
            return value
    return None


def _address_keys(address: str, maps: Maps, parent_style: bool) -> list[tuple[str, bool]]:
    local, domain = _split_address(address)
    base, ext = split_extension(local, maps.cfg)
    keys = [(address, False)]
    if domain:
        if ext:
            keys.append((f"{base}@{domain}", True))
        keys += [(k, True) for k in domain_keys(domain, parent_style)]
    keys.append((f"{local}@", True))
    if ext:
        keys.append((f"{base}@", True))
    return keys


def _client_parts(query) -> tuple[str, str]:
    if isinstance(query, (tuple, list)):
        return query[0] or "", query[1] or ""
    if query.endswith("]") and "[" in query:
        name, _, addr = query[:-1].partition("[")
        return name, addr
    return "", query


def _client_keys(name: str, addr: str, parent_style: bool) -> list[tuple[str, bool]]:
    keys: list[tuple[str, bool]] = []
    if name and name != "unknown":
        keys += [(k, i > 0) for i, k in enumerate(domain_keys(name, parent_style))]
    if addr:
        keys += [(k, i > 0) for i, k in enumerate(address_prefix_keys(addr))]
    return keys


def access_lookup(maps: Maps, query, kind: str = "address",
                  parent_style: bool | None = None) -> str | None:
    """access_lookup - the access(5) action for an address, domain or client."""
    if parent_style is None:
        parent_style = _parent_style(maps)
    if kind in ("address", "sender", "recipient"):
        keys = _address_keys(query, maps, parent_style)
    elif kind in ("domain", "helo", "client_name"):
        keys = [(k, i > 0) for i, k in enumerate(domain_keys(query, parent_style))]
    elif kind == "client_address":
        keys = _client_keys("", query, parent_style)
    elif kind == "client":
        keys = _client_keys(*_client_parts(query), parent_style)
    else:
        raise ValueError(f"unknown access lookup kind: {kind}")
    return _first(maps, keys)


# -- virtual(5), canonical(5), aliases(5) --------------------------------------

def is_local_domain(domain: str, cfg) -> bool:
    """is_local_domain - DOMAIN is $myorigin, in $mydestination, or a local [address].

    virtual(5) adds $myorigin to the resolver's local class (mydestination
    and our own address literals), which is the one definition of that."""
    domain = domain.lower().rstrip(".")
    if cfg is None or not domain:
        return False
    if domain == cfg.get("myorigin").lower():
        return True
    return local_domains_for(cfg).match(domain)


def _propagates(cfg, kind: str) -> bool:
    if cfg is None:
        return kind in ("canonical", "virtual")
    return kind in cfg.list("propagate_unmatched_extensions")


def _rewrite_result(value: str, local: str, ext: str, propagate: bool) -> str:
    """_rewrite_result - "@domain" results get LOCAL; others the unmatched EXT."""
    out = []
    for item in raw_items(value):
        if item.startswith("@"):
            out.append(local + item)
        elif propagate and ext and not item.startswith(('"', "|", "/", ":")):
            # Commands, files and :include: lists have no local part to extend.
            base, at, domain = item.rpartition("@")
            out.append(f"{base}{ext}@{domain}" if at else item + ext)
        else:
            out.append(item)
    return ", ".join(out)


def virtual_lookup(maps: Maps, address: str, cfg=None,
                   propagate: str = "virtual") -> str | None:
    """virtual_lookup - the virtual(5)/canonical(5) result for ADDRESS, or None."""
    cfg = cfg if cfg is not None else maps.cfg
    local, domain = _split_address(address)
    base, ext = split_extension(local, cfg)
    keys: list[tuple[str, bool, bool]] = [(address, False, True)]    # key, partial, has ext
    if ext and domain:
        keys.append((f"{base}@{domain}", True, False))
    if domain and is_local_domain(domain, cfg):
        keys.append((local, True, True))
        if ext:
            keys.append((base, True, False))
    elif not domain and ext:
        keys.append((base, True, False))
    if domain:
        keys.append((f"@{domain}", True, False))
    for key, partial, matched_ext in keys:
        value = maps.lookup(key, partial)
        if value is not None:
            return _rewrite_result(value, local, ext,
                                   not matched_ext and _propagates(cfg, propagate))
    return None


def canonical_lookup(maps: Maps, address: str, cfg=None) -> str | None:
    """canonical_lookup - virtual_lookup with canonical's extension propagation."""
    return virtual_lookup(maps, address, cfg, propagate="canonical")


def alias_lookup(maps: Maps, local_part: str, cfg=None) -> str | None:
    """alias_lookup - the aliases(5) value for a local part: name+ext, then name."""
    cfg = cfg if cfg is not None else maps.cfg
    value = maps.lookup(local_part)
    if value is not None:
        return value
    base, ext = split_extension(local_part, cfg)
    if not ext:
        return None
    value = maps.lookup(base, True)
    if value is None:
        return None
    if _propagates(cfg, "alias"):
        return _rewrite_result(value, local_part, ext, True)
    return value


TYPE_PREFIX = re.compile(r"([a-z][a-z0-9_]*):")


def configured_table_types(cfg: Config) -> set[str]:
    """configured_table_types - every table type any parameter's value names,
    main.cf's, master.cf's -o and the defaults, unexpanded, nested in
    unionmap:{...} or ${name?{...}} included: for tables.preload()."""
    # The static defaults, not cfg.raw(): a computed one (myhostname) names no
    # table and may cost a DNS lookup. A default main.cf replaces is read too:
    # a type too many only costs an import.
    values = [*cfg.values.values(), *cfg.overrides.values(),
              *(p.default for p in PARAMS.values() if p.default)]
    return {t for value in values for t in TYPE_PREFIX.findall(value) if t in TYPES}


def open_configured_tables(cfg: Config) -> None:
    """open_configured_tables - open and load every file table CFG names, now.

    A chrooted service cannot see /etc/postfix, and one that dropped
    privileges cannot read a 0600 table such as smtp_sasl_password_maps:
    like Postfix's daemons, open them first, and import the database driver
    of every type named (also under proxy:, for the proxymap service). A
    table that fails here is left for its first lookup to report, as it
    would be without this."""
    for name in {*cfg.values, *cfg.overrides}:
        try:
            items = split_list(cfg.get(name))
        except ConfigError:
            continue
        for item in items:
            type_, colon, _ = item.partition(":")
            if not colon or type_ not in TYPES:
                continue
            try:
                prepare_type(item)
                table = open_table(item, cfg)
                if isinstance(table, FileTable):
                    table.current()
            except Exception:           # reported by the first lookup instead
                continue
