"""sqlite: tables: a query against an SQLite database, per sqlite_table(5).

`sqlite:/etc/postfix/sqlite-aliases.cf` names a configuration file of
`name = value` lines:

    dbpath = /var/lib/postfix/aliases.sqlite
    query = SELECT goto FROM alias WHERE address='%s'
    result_format = %s             (default %s; the same % escapes)
    domain = example.com, hash:/etc/postfix/domains   (optional)
    expansion_limit = 0            (0: no limit)

The legacy `table`, `select_field`, `where_field`, `additional_conditions`
form builds the query when `query` is absent.

Query escapes: %% a percent sign, %s the key, %u its local part (the whole
key when it has no @), %d its domain, %S %U %D the same (Postfix fills them
from the original recipient, which a table lookup does not have), %1..%9
the domain labels from the right. Values are quoted for
SQL (' doubled). As in Postfix, a query whose %u or %d would be empty is
not run, and keys outside `domain` are not looked up. Several rows are
joined with ", ". Keys are folded to lower case.

Interface:
    SqliteTable(type, name, cfg=None) .lookup(key)
    expand_query(template, key, quote) -> str | None
"""

from __future__ import annotations

import re
import sqlite3

from pymaster.util.tables import FileTable, TableError, open_table
from pymaster.util.tables.source import logical_lines


def _read_settings(path: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, text in logical_lines(f):
            name, eq, value = text.partition("=")
            if not eq:
                raise TableError(f"{path}, line {lineno}: missing '=' after attribute "
                                 f"name: \"{name.strip()}\"")
            settings[name.strip()] = value.strip()
    return settings


def _sql_quote(value: str) -> str:
    return value.replace("'", "''")


def expand_query(template: str, key: str, quote=_sql_quote) -> str | None:
    """expand_query - TEMPLATE with %-escapes for KEY; None when it must not run."""
    local, at, domain = key.rpartition("@")
    if not at:
        local, domain = key, ""
    labels = domain.split(".")[::-1] if domain else []
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c != "%" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = template[i + 1]
        i += 2
        if e == "%":
            out.append("%")
        elif e in "sS":
            out.append(quote(key))
        elif e in "uU":
            if not local:
                return None
            out.append(quote(local))
        elif e in "dD":
            if not domain:
                return None
            out.append(quote(domain))
        elif e in "123456789":
            k = int(e)
            if k > len(labels):
                return None
            out.append(quote(labels[k - 1]))
        else:
            raise TableError(f"invalid % expansion in \"{template}\": %{e}")
    return "".join(out)


class SqliteTable(FileTable):
    """sqlite:/path/to/config.cf."""

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.path = name
        self.fold = fold
        self._db: sqlite3.Connection | None = None

    def load(self) -> dict:
        try:
            s = _read_settings(self.path)
        except OSError as e:
            raise TableError(f"open {self.path}: {e.strerror}") from None
        if "dbpath" not in s:
            raise TableError(f"{self.path}: missing dbpath")
        query = s.get("query") or self._legacy_query(s)
        domains = [d for d in re.split(r"[\s,]+", s.get("domain", "")) if d]
        try:
            limit = int(s.get("expansion_limit", "0") or 0)
        except ValueError:
            raise TableError(f"{self.path}: bad expansion_limit") from None
        if self._db is not None:
            self._db.close()
        self._db = None
        return {"dbpath": s["dbpath"], "query": query, "domains": domains, "limit": limit,
                "result_format": s.get("result_format", "%s")}

    def _legacy_query(self, s: dict[str, str]) -> str:
        try:
            query = (f"SELECT {s['select_field']} FROM {s['table']} "
                     f"WHERE {s['where_field']} = '%s'")
        except KeyError:
            raise TableError(f"{self.path}: missing query") from None
        if s.get("additional_conditions"):
            query += " " + s["additional_conditions"]
        return query

    def _connection(self, dbpath: str) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = sqlite3.connect(f"file:{dbpath}?mode=ro", uri=True,
                                           check_same_thread=False)
            except sqlite3.Error as e:
                raise TableError(f"sqlite:{self.path}: open {dbpath}: {e}") from None
        return self._db

    def _in_domain(self, key: str, domains: list[str]) -> bool:
        _, at, domain = key.rpartition("@")
        if not at or not domain:
            return False
        for d in domains:
            if ":" in d:
                if open_table(d, self.cfg).lookup(domain) is not None:
                    return True
            elif d.lower() == domain:
                return True
        return False

    def lookup(self, key: str) -> str | None:
        conf = self.current()
        if self.fold:
            key = key.lower()
        if conf["domains"] and not self._in_domain(key, conf["domains"]):
            return None
        sql = expand_query(conf["query"], key)
        if sql is None:
            return None
        try:
            rows = self._connection(conf["dbpath"]).execute(sql).fetchall()
        except sqlite3.Error as e:
            self._db = None
            raise TableError(f"sqlite:{self.path}: query failed: {e}") from None
        values = [str(r[0]) for r in rows if r and r[0] is not None and str(r[0]) != ""]
        if not values:
            return None
        if conf["limit"] and len(values) > conf["limit"]:
            raise TableError(f"sqlite:{self.path}: expansion limit exceeded for key: "
                             f"'{key}'")
        fmt = conf["result_format"]
        return ", ".join(expand_query(fmt, v, quote=str) or "" for v in values)
