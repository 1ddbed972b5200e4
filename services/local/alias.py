"""Alias expansion: alias_maps, owner- aliases, and the privileges aliases run with.

The recipient's local part is looked up in each table of alias_maps in turn
(name+extension, then name, per aliases(5)); the first table that knows it
wins. Its destinations are delivered by items.py with the source "alias",
so allow_mail_to_commands/files decide about commands and files.

Commands and files named by an alias run with the privileges of the alias
table's owner; a table owned by root gives default_privs (as local(8)
does, so that root-owned aliases never run commands as root).

When an `owner-NAME` alias exists, mail forwarded from the expansion of
NAME carries `owner-NAME` as its envelope sender, so delivery errors go to
the list owner rather than to the original sender.

An alias that expands to the name itself (`user: user`) is not an alias:
the user's own .forward and mailbox follow.

Interface:
    deliver_alias(delivery, target) -> bool     False when TARGET is no alias
"""

from __future__ import annotations

import os
from functools import lru_cache

from pymaster.mail.config import Config
from pymaster.mail.maps import Maps, alias_lookup
from pymaster.util.strings import split_list
from pymaster.util.tables import TableError, split_spec
from services.local import items
from services.local.context import Delivery, Privs, Target, deferred

# Table types whose data lives in NAME.db / NAME.cdb next to the source file.
_INDEXED = {"hash": ".db", "btree": ".db", "cdb": ".cdb", "dbm": ".db", "lmdb": ".lmdb"}


@lru_cache(maxsize=16)
def alias_tables(specs: str) -> tuple[tuple[str, Maps], ...]:
    """alias_tables - each alias_maps table on its own, so a hit names its table."""
    return tuple((spec, Maps.from_specs([spec])) for spec in split_list(specs))


def table_owner(spec: str) -> int | None:
    """table_owner - the uid owning the file behind SPEC, or None when there is no file."""
    kind, name = split_spec(spec)
    if kind == "proxy":
        kind, name = split_spec(name)
    for path in (name + _INDEXED.get(kind, ""), name):
        try:
            return os.stat(path).st_uid
        except OSError:
            continue
    return None


def alias_privs(spec: str, cfg: Config) -> Privs:
    """alias_privs - whom commands and files of an alias in SPEC run as."""
    if os.geteuid() != 0:
        return Privs.current()
    uid = table_owner(spec)
    return Privs.of_uid(0 if uid is None else uid, cfg.get("default_privs"))


def find_alias(target: Target, cfg: Config) -> tuple[str, str] | None:
    """find_alias - (table spec, value) of TARGET's alias; raises TableError."""
    for spec, maps in alias_tables(cfg.get("alias_maps")):
        value = alias_lookup(maps, target.local, cfg)
        if value is not None:
            return spec, value
    return None


def owner_of(name: str, cfg: Config) -> str:
    """owner_of - the envelope sender for the expansion of list NAME, or ""."""
    owner = "owner-" + name
    for _, maps in alias_tables(cfg.get("alias_maps")):
        value = maps.lookup(owner)
        if value is not None:
            return value.strip() if cfg.bool("expand_owner_alias") else owner
    return ""


def deliver_alias(delivery: Delivery, target: Target) -> bool:
    """deliver_alias - expand TARGET if it is an alias; True when it was one."""
    cfg = delivery.cfg
    if target.level > 0:
        return False
    try:
        found = find_alias(target, cfg)
        if found is None:
            return False
        spec, value = found
        values = items.split_items(value)
        if [v.lower() for v in values] in ([target.user], [target.local]):
            return False
        owner = owner_of(target.user, cfg) or target.owner
    except TableError as e:
        delivery.add(deferred(f"alias database unavailable: {e}", "4.3.0"))
        return True
    if not values:
        delivery.add(deferred(f"no recipient in alias lookup result for {target.local}", "4.3.0"))
        return True
    child = target.with_(source="alias", privs=alias_privs(spec, cfg), owner=owner,
                         expanded_from=target.local, level=target.level + 1)
    items.deliver_items(delivery, child, values)
    return True
