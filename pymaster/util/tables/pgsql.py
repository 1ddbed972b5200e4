"""pgsql: tables: a query against PostgreSQL, per pgsql_table(5).

`pgsql:/etc/postfix/pgsql-aliases.cf` names a file of `name = value` lines:

    hosts = postgresql://user@db.example.com/mail?sslmode=require
    hosts = unix:/run/postgresql inet:db1:5432 db2    (default localhost)
    user = postfix
    password = secret
    dbname = mail
    query = SELECT goto FROM alias WHERE address = '%s'
    encoding = UTF8                                  the client encoding
    result_format, domain, expansion_limit           (dbcommon)
    retry_interval = 60, idle_interval = 60          (sql.py)

A `unix:` host names the directory of the server's socket, as libpq takes
it (the port is then libpq's default, 5432); a postgresql:// URI is
handed to libpq alone (user, password and dbname are then the URI's). A
NULL column is an empty value, warned about and skipped, as Postfix does.
TLS is the URI's business (sslmode, sslrootcert …), as in Postfix.
Values are quoted for standard SQL strings
(' doubled; the server must keep standard_conforming_strings on, its
default since 9.1), so a key cannot end the string it is put in.

The driver is psycopg 3, imported when a pgsql: table is opened.

Interface:
    PgsqlTable(type, name, cfg=None) .lookup(key)
"""

from __future__ import annotations

from typing import Any

from pymaster.util.tables.dbcommon import sql_quote
from pymaster.util.tables.sql import CONNECT_TIMEOUT, QUERY_TIMEOUT, SqlTable, split_host


class PgsqlTable(SqlTable):
    """pgsql:/path/to/config.cf."""

    kind = "pgsql"
    driver = "psycopg"
    driver_package = "psycopg"
    default_port = 5432

    def _load_driver(self) -> None:
        self._psycopg = self.load_driver(self.spec)

    def quote(self, text: str) -> str:
        return sql_quote(text)

    def _connect(self, host: str) -> Any:
        s = self.settings
        args: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT, "autocommit": True,
            "client_encoding": s.get("encoding", "UTF8"),
            # A query that hangs must end; the server enforces it.
            "options": f"-c statement_timeout={QUERY_TIMEOUT * 1000}",
            "tcp_user_timeout": QUERY_TIMEOUT * 1000,
        }
        if host.startswith(("postgresql://", "postgres://")):
            # The URI says it all: Postfix hands it to libpq alone.
            return self._psycopg.connect(host, **args)
        for setting, name in (("user", "user"), ("password", "password"),
                              ("dbname", "dbname")):
            if s.get(setting):
                args[name] = s.get(setting)
        kind, where, port = split_host(host, self.default_port)
        args["host"] = where
        if port:
            args["port"] = port
        return self._psycopg.connect(**args)

    def _rows(self, conn: Any, sql: str) -> list[tuple]:
        cur = conn.execute(sql)
        if cur.description is None:
            return []
        # libpq gives NULL as an empty string, which Postfix warns about.
        return [tuple("" if v is None else v for v in row) for row in cur.fetchall()]
