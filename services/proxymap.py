"""proxymap: lookup tables answered outside the jail, shared among processes (proxymap(8)).

One program, two services (master.cf):
    proxymap   unix - - n - - proxymap     read-only: lookups
    proxywrite unix - - n - 1 proxymap     read-write: lookups and updates,
                                           one process, so a file table has
                                           one writer
The process is the writer when its master.cf name is $proxywrite_service_name.

A client names a table `proxy:TYPE:NAME` (pymaster/util/tables/proxy.py) and
asks for TYPE:NAME here. Only tables approved by main.cf are opened: those
listed with the proxy: prefix in proxy_read_maps (the read service) or
proxy_write_maps (the write service); whose defaults name every *_maps
parameter, so `local_recipient_maps = proxy:unix:passwd.byname $alias_maps`
works unchanged. Anything else is refused with the log line

    warning: request for unapproved table: "TYPE:NAME"

and a "deny" reply, which the client turns into a temporary failure.

A table is opened on its first request and kept open for the life of the
process; the tables layer reopens a file table that postmap rebuilt.

Requests and replies: see pymaster/util/tables/proxy.py.

Interface:
    approved_tables(items) -> set of TYPE:NAME   the proxy: entries of a list
    Proxymap(cfg, service, writer).handle(header) -> reply header
    pre_jail(svc) -> Proxymap
    main()   the body of libexec/proxymap
"""

from __future__ import annotations

import json
from typing import Iterable

from pymaster.master import service
from pymaster.util import log
from pymaster.util.tables import (
    Table,
    TableError,
    create_table,
    open_table,
    split_spec,
    table_class,
)
from pymaster.util.tables.proxy import PREFIX

READ_OPS = ("lookup",)
WRITE_OPS = ("update", "delete")


def approved_tables(items: Iterable[str]) -> set[str]:
    """approved_tables - TYPE:NAME of each proxy:TYPE:NAME in ITEMS.

    postconf(5): table references that don't begin with proxy: are ignored."""
    approved = set()
    for item in items:
        if not item.startswith(PREFIX):
            continue
        while item.startswith(PREFIX):
            item = item[len(PREFIX):]
        if ":" in item:
            approved.add(item)
    return approved


class Proxymap:
    """The request handler of one proxymap or proxywrite process."""

    def __init__(self, cfg, service_name: str, writer: bool) -> None:
        self.cfg = cfg
        self.service = service_name
        self.writer = writer
        self.approved = approved_tables(
            cfg.list("proxy_write_maps" if writer else "proxy_read_maps"))
        self.tables: dict[tuple[str, str], Table] = {}

    def handle(self, header: dict) -> dict:
        """handle - one request; the reply header."""
        op, spec, key = header.get("op"), header.get("table"), header.get("key")
        if op not in READ_OPS + WRITE_OPS or not isinstance(spec, str) \
                or not isinstance(key, str):
            return {"status": "bad", "reason": f"malformed {self.service} request"}
        if op in WRITE_OPS and not self.writer:
            log.warning(f"refusing {op} request for table \"{spec}\": "
                        f"the {self.service} service is read-only")
            return {"status": "deny",
                    "reason": f"{self.service} service is read-only: {op} refused"}
        if spec not in self.approved:
            log.warning(f"request for unapproved table: \"{spec}\"")
            return {"status": "deny",
                    "reason": f"{self.service} service is not configured for table \"{spec}\""}
        try:
            table = self.table(spec, header.get("options"))
            if op == "lookup":
                value = table.lookup(key)
                return {"status": "noent"} if value is None else {"status": "ok", "value": value}
            return self.write(table, op, key, header.get("value"))
        except TableError as e:
            log.warning(f"{spec}: {e}")
            return {"status": "retry", "reason": str(e)}

    def table(self, spec: str, options) -> Table:
        """table - SPEC opened once for this process (with OPTIONS, such as fold).

        The writer creates a file table that does not exist yet (an lmdb:
        address_verify_map), as Postfix's proxywrite opens with O_CREAT."""
        if self.writer and getattr(table_class(split_spec(spec)[0]), "creatable", False):
            options = {**(options or {}), "create": True}
        if not options:
            return open_table(spec, self.cfg)
        if not isinstance(options, dict):
            raise TableError(f"{spec}: malformed table options")
        cache_key = (spec, json.dumps(options, sort_keys=True))
        table = self.tables.get(cache_key)
        if table is None:
            try:
                table = create_table(spec, self.cfg, **options)
            except TypeError:
                raise TableError(f"{spec}: unsupported table options {options}") from None
            self.tables[cache_key] = table
        return table

    @staticmethod
    def write(table: Table, op: str, key: str, value) -> dict:
        method = getattr(table, op, None)
        if method is None:
            raise TableError(f"table {table.spec} does not support updates")
        if op == "update":
            if not isinstance(value, str):
                return {"status": "bad", "reason": "update request without a value"}
            method(key, value)
            return {"status": "ok"}
        return {"status": "ok"} if method(key) is not False else {"status": "noent"}


def pre_jail(svc: service.Service) -> Proxymap:
    """pre_jail - the table server; proxymap itself runs outside any chroot."""
    writer = svc.name == svc.cfg.get("proxywrite_service_name")
    return Proxymap(svc.cfg, svc.name, writer)


def run(svc: service.Service) -> None:
    proxymap = svc.enter_jail(pre_jail)

    def handler(header: dict, payload: list) -> tuple[dict, list]:
        return proxymap.handle(header), []

    svc.serve_requests(handler, many=True)


def main() -> None:
    service.main("proxymap", run)
