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

The query and result_format escapes, the quoting (' doubled), `domain`,
`expansion_limit` and the joining of several rows with commas are those of
every database table (dbcommon.py). Keys are folded to lower case.

Interface:
    SqliteTable(type, name, cfg=None) .lookup(key)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymaster.util.tables import FileTable, TableError
from pymaster.util.tables.dbcommon import (
    DomainFilter,
    Templates,
    admitted_key,
    join_results,
    read_settings,
    sql_quote,
)
from pymaster.util.tables.sql import legacy_query

if TYPE_CHECKING:
    import sqlite3


class SqliteTable(FileTable):
    """sqlite:/path/to/config.cf."""

    # sqlite3 is loaded like a database driver, when a table is configured or
    # opened (before the jail), not with this module: every process imports
    # every table type, and sqlite3 costs about 1.3 MB in each.
    driver = "sqlite3"
    driver_package = "sqlite3 (Python's standard library)"

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.path = name
        self.fold = fold
        self._sqlite3 = self.load_driver(self.spec)
        self._db: sqlite3.Connection | None = None

    def load(self) -> dict:
        s = read_settings(self.path, self.cfg)
        if not s.get("dbpath"):
            raise TableError(f"{self.path}: missing dbpath")
        if self._db is not None:
            self._db.close()
        self._db = None
        return {"dbpath": s.get("dbpath"),
                "templates": Templates(legacy_query(s), s.get("result_format", "%s"),
                                       self.spec),
                "domains": DomainFilter(s.get("domain"), self.cfg, self.spec),
                "limit": s.get_int("expansion_limit", 0)}

    def _connection(self, dbpath: str) -> sqlite3.Connection:
        if self._db is None:
            try:
                self._db = self._sqlite3.connect(f"file:{dbpath}?mode=ro", uri=True,
                                                 check_same_thread=False)
            except self._sqlite3.Error as e:
                raise TableError(f"sqlite:{self.path}: open {dbpath}: {e}") from None
        return self._db

    def lookup(self, key: str) -> str | None:
        conf = self.current()
        admitted = admitted_key(key, self.fold, conf["domains"])
        if admitted is None:
            return None
        key = admitted
        sql = conf["templates"].expand_query(key, sql_quote)
        if sql is None:
            return None
        try:
            rows = self._connection(conf["dbpath"]).execute(sql).fetchall()
        except self._sqlite3.Error as e:
            self._db = None
            raise TableError(f"sqlite:{self.path}: query failed: {e}") from None
        values = [str(v) for row in rows for v in row if v is not None]
        return join_results(values, key, conf["templates"], conf["limit"],
                            f"dict_sqlite_lookup: {self.path}")
