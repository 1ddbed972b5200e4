"""The SQL server tables (mysql:, pgsql:): hosts, connections, the lookup.

A mysql: or pgsql: table keeps one connection per process (a lock makes
the threads of one process take turns on it) to one of its `hosts`. Hosts
are tried in random order; a host that fails is left alone for
`retry_interval` seconds (default 60) while the others are tried; when every
host failed the lookup is a temporary failure (TableError): the mail waits,
it never bounces. A connection unused for `idle_interval` seconds (default 60)
is closed before the next query, as Postfix closes idle connections; a query
that fails on a kept connection is tried once more on a new one, because the
server may have closed it meanwhile.

Each lookup: a key that is not valid UTF-8 or outside `domain` is not
found; the query (or the legacy select_field/table/where_field/
additional_conditions form) is expanded with the driver's quoting, and a
template that needs a part the key lacks answers "not found" without a query;
every column of every row goes through result_format, and the results are
joined with commas (dbcommon).

The driver (PyMySQL, psycopg) is imported when the first table of its type is
opened, which for a service happens before its chroot (pre-jail opens every
table main.cf names).

Interface:
    SqlTable(type, name, cfg=None)   a subclass sets `kind` and implements
        _connect(host) -> connection, _rows(connection, sql) -> rows,
        quote(text) -> str, default_port; any exception of the driver is a
        failure of the host (drivers raise more than their own classes)
    SqlTable.lookup(key) -> str | None
    legacy_query(settings) -> str    the query, or one built from the old parameters
    CONNECT_TIMEOUT, QUERY_TIMEOUT   seconds: a dead or slow server is a TableError
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pymaster.util import log
from pymaster.util.tables import Table, TableError
from pymaster.util.tables.dbcommon import (
    DomainFilter,
    HostList,
    Settings,
    Templates,
    admitted_key,
    join_results,
    read_settings,
)

CONNECT_TIMEOUT = 10
QUERY_TIMEOUT = 30


class SqlTable(Table):
    """A table answered by an SQL server."""

    remote = True
    kind = ""                 # "mysql", "pgsql": the name in messages
    default_port = 0

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True,
                 **_options) -> None:
        super().__init__(type_, name, cfg)
        self.fold = fold
        self.settings = read_settings(name, cfg)
        s = self.settings
        self.templates = Templates(legacy_query(s), s.get("result_format", "%s"), self.spec)
        self.domains = DomainFilter(s.get("domain"), cfg, self.spec)
        self.limit = s.get_int("expansion_limit", 0)
        self.idle_interval = s.get_int("idle_interval", 60)
        self.hosts = HostList(s.get("hosts", "localhost").replace(",", " ").split(),
                              s.get_int("retry_interval", 60), self._first)
        if not self.hosts.hosts:
            self.hosts.hosts = ["localhost"]
        self._lock = threading.Lock()
        self._conn: Any = None
        self._host = ""
        self._used = 0.0
        self._load_driver()

    # What a driver module provides.
    def _load_driver(self) -> None:
        raise NotImplementedError

    def _connect(self, host: str) -> Any:
        raise NotImplementedError

    def _rows(self, conn: Any, sql: str) -> list[tuple]:
        raise NotImplementedError

    def quote(self, text: str) -> str:
        raise NotImplementedError

    def _first(self, host: str) -> bool:
        return False

    def lookup(self, key: str) -> str | None:
        admitted = admitted_key(key, self.fold, self.domains)
        if admitted is None:
            return None
        key = admitted
        sql = self.templates.expand_query(key, self.quote)
        if sql is None:
            return None
        with self._lock:
            rows = self._query(sql)
        values = [_text(v) for row in rows for v in row if v is not None]
        return join_results(values, key, self.templates, self.limit,
                            f"dict_{self.kind}_lookup: {self.name}")

    def _query(self, sql: str) -> list[tuple]:
        """_query - the rows of SQL from the current connection or another host."""
        if self._conn is not None and time.monotonic() - self._used > self.idle_interval:
            self._close()
        if self._conn is not None:
            try:
                return self._ask(sql)
            except TableError:
                raise
            except Exception:       # closed by the server meanwhile: try afresh
                self._close()
        hosts = self.hosts.order()
        if not hosts:
            log.warning(f"{self.spec}: no {self.kind} server available: every host failed "
                        f"less than retry_interval ({self.hosts.retry_interval}s) ago")
        for host in hosts:
            try:
                self._conn = self._connect(host)
            except Exception as e:  # the driver's failures, whatever their class
                log.warning(f"connect to {self.kind} server {host}: {_reason(e)}")
                self.hosts.failed(host)
                continue
            try:
                rows = self._ask(sql)
            except TableError:
                raise
            except Exception as e:  # the driver's failures, whatever their class
                log.warning(f"{self.kind} query failed: fatal error from host {host}: "
                            f"{_reason(e)}")
                self._close()
                self.hosts.failed(host)
                continue
            self._host = host
            self.hosts.worked(host)
            return rows
        # The reasons are in the warnings above, as Postfix logs them.
        raise TableError(f"table {self.spec}: query error")

    def _ask(self, sql: str) -> list[tuple]:
        rows = self._rows(self._conn, sql)
        self._used = time.monotonic()
        return rows

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:           # closing a broken connection: nothing to keep
                pass


def legacy_query(s: Settings) -> str:
    """legacy_query - `query`, or the old form built from its four parts."""
    if s.get("query"):
        return s.get("query")
    for name in ("table", "select_field", "where_field"):
        if not s.get(name):
            raise TableError(f"db_common_sql_build_query: '{name}' parameter not defined")
    return (f"SELECT {s.get('select_field')} FROM {s.get('table')} "
            f"WHERE {s.get('where_field')}='%s' {s.get('additional_conditions')}")


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _reason(e: BaseException) -> str:
    # PyMySQL's errors are (code, text) pairs.
    args = e.args
    text = str(args[1]) if len(args) == 2 and isinstance(args[0], int) else str(e)
    text = " ".join(text.split())
    return text or e.__class__.__name__


def split_host(host: str, default_port: int) -> tuple[str, str, int]:
    """split_host - ("unix", path, 0) or ("inet", name, port) for a `hosts` element."""
    if host.startswith("unix:"):
        return "unix", host[5:], 0
    if host.startswith("inet:"):
        host = host[5:]
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and "]" not in port:
        return "inet", name.strip("[]"), int(port)
    return "inet", host.strip("[]"), default_port
