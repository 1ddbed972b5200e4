"""mysql: tables: a query against MySQL or MariaDB, per mysql_table(5).

`mysql:/etc/postfix/mysql-aliases.cf` names a file of `name = value` lines:

    hosts = unix:/run/mysqld/mysqld.sock inet:db1:3306 db2   (default localhost)
    user = postfix
    password = secret
    dbname = mail
    query = SELECT goto FROM alias WHERE address = '%s'
    result_format, domain, expansion_limit        (dbcommon)
    option_file = /etc/postfix/my.cnf              read its [client] section,
    option_group = client                          then this group (user,
                                                   database, socket; never the
                                                   password, which the .cf gives)
    require_result_set = yes                       no: a statement without a
                                                   result set is "not found"
    tls_cert_file, tls_key_file, tls_CAfile, tls_CApath, tls_verify_cert (no),
    tls_ciphers                                    TLS to the server: a CA file
                                                   or path verifies its chain,
                                                   tls_verify_cert its name
    retry_interval = 60, idle_interval = 60        (sql.py)

As with libmysqlclient, the host name `localhost` means the server's
default unix socket (/run/mysqld/mysqld.sock); 127.0.0.1 is TCP. Unix socket
hosts are tried before TCP ones. Values are quoted as
mysql_real_escape_string does, so a key cannot end the string it is put in.
Stored procedures (`CALL lookup('%s')`) work as SELECT does.

The driver is PyMySQL (pure Python), imported when a mysql: table is opened.

Interface:
    MysqlTable(type, name, cfg=None) .lookup(key)
"""

from __future__ import annotations

from typing import Any

from pymaster.util import log
from pymaster.util.tables import TableError
from pymaster.util.tables.dbcommon import mysql_quote
from pymaster.util.tables.sql import CONNECT_TIMEOUT, QUERY_TIMEOUT, SqlTable, split_host

DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"


class MysqlTable(SqlTable):
    """mysql:/path/to/config.cf."""

    kind = "mysql"
    driver = "pymysql"
    driver_package = "PyMySQL"
    default_port = 3306

    def _load_driver(self) -> None:
        self._pymysql = self.load_driver(self.spec)
        self.require_result_set = self.settings.get_bool("require_result_set", True)

    def _first(self, host: str) -> bool:
        return host.startswith("unix:") or host == "localhost"

    def quote(self, text: str) -> str:
        return mysql_quote(text)

    def _connect(self, host: str) -> Any:
        kind, where, port = split_host(host, self.default_port)
        s = self.settings
        args: dict[str, Any] = self._option_file()
        # The .cf settings win over the option file, as explicit arguments to
        # mysql_real_connect win over my.cnf; Postfix always passes the
        # password, so an option file's password is never used.
        for setting, name in (("user", "user"), ("dbname", "database")):
            if s.get(setting):
                args[name] = s.get(setting)
        args["password"] = s.get("password")
        args.update(charset="utf8mb4", connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=QUERY_TIMEOUT, write_timeout=QUERY_TIMEOUT,
                    autocommit=True)
        if kind == "unix" or where == "localhost":
            args["unix_socket"] = where if kind == "unix" else \
                args.get("unix_socket", DEFAULT_SOCKET)
        else:
            args.pop("unix_socket", None)
            args["host"], args["port"] = where, port
        ssl = self._tls()
        if ssl:
            args["ssl"] = ssl
        return self._pymysql.connect(**args)

    def _option_file(self) -> dict[str, Any]:
        """option_file: its [client] section, then option_group's (later wins)."""
        s = self.settings
        path = s.get("option_file")
        if not path:
            return {}
        # Not imported with the module, which every process imports: PyMySQL,
        # loaded when the table was opened (before the jail), has imported it.
        import configparser
        parser = configparser.RawConfigParser(strict=False, allow_no_value=True)
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(line for line in f if not line.startswith("!"))
        except (OSError, configparser.Error) as e:
            raise TableError(f"{self.spec}: option_file {path}: {e}") from None
        found: dict[str, str] = {}
        for group in ("client", s.get("option_group", "client")):
            if group and parser.has_section(group):
                found.update((k.replace("-", "_"), (v or "").strip("\"'"))
                             for k, v in parser.items(group))
        args: dict[str, Any] = {}
        for option, name in (("user", "user"), ("database", "database"),
                             ("socket", "unix_socket")):
            if found.get(option):
                args[name] = found[option]
        return args

    def _tls(self) -> dict[str, Any]:
        s = self.settings
        ssl: dict[str, Any] = {}
        for setting, name in (("tls_CAfile", "ca"), ("tls_CApath", "capath"),
                              ("tls_cert_file", "cert"), ("tls_key_file", "key"),
                              ("tls_ciphers", "cipher")):
            if s.get(setting):
                ssl[name] = s.get(setting)
        verify = s.get_bool("tls_verify_cert", False)
        if ssl or verify:
            # As the client library Postfix uses: a CA given means the chain
            # is verified; tls_verify_cert adds the check of the server's name.
            ssl["check_hostname"] = verify
            ssl["verify_mode"] = verify or "ca" in ssl or "capath" in ssl
        return ssl

    def _rows(self, conn: Any, sql: str) -> list[tuple]:
        with conn.cursor() as cur:
            cur.execute(sql)
            if cur.description is None:
                if self.require_result_set:
                    log.warning(f"{self.spec}: query failed: query returned no result "
                                "set(require_result_set = yes)")
                    raise TableError(f"table {self.spec}: query error")
                return []
            rows = list(cur.fetchall())
            while cur.nextset():    # a stored procedure's status result
                pass
        return rows
