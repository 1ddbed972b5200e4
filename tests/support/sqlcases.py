"""The rows and the postmap -q parity cases that mysql: and pgsql: tests share.

Both SQL tables load ROWS into a table `alias (address, goto, extra, active)`
and run PARITY against pymaster's and Debian's postmap (check_parity).
In the expected stderr, {spec} is the table's type:name, {path} its .cf file
and {kind} its type; a prefix is enough (Postfix appends stray errno texts).

Interface:
    ROWS, PARITY, FAILING          the data and the cases
    load_alias_table(execute, quote_backslash)   create and fill `alias`
    sql_settings(port, **extra)    a .cf's settings for the test server at PORT
    check_parity(result, spec, path, kind, stdout, stderr)
    check_query_error(result, spec, first="")    postmap's temporary failure
    survives_restart(server, table, key, value)  down: TableError; back: VALUE
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import pytest

from pymaster.util.tables import Table, TableError
from tests.support.databases import DBNAME, PASSWORD, USER

ROWS = [
    ("a@example.com", "x@example.org"),
    ("a@example.com", "y@example.org"),
    ("b@example.com", ""),
    ("o'b\\c@example.com", "quoted@example.org"),
    ("bare", "bare-target"),
    ("user@mail.example.com", "deep@example.org"),
    ("c@example.com", "carol@example.org"),
]


FAILING = "SELECT goto FROM nosuchtable WHERE address='%s' AND d='%d'"

# (id, settings, key, stdout or None, stderr line prefixes ({spec}); None: unchecked)
PARITY = [
    ("found", {}, "bare", "bare-target", []),
    ("several rows and columns", {"query": "SELECT goto, extra FROM alias WHERE address='%s'"},
     "a@example.com", "x@example.org,y@example.org,z", None),     # NULL: see each type
    ("not found", {}, "nobody@example.com", None, []),
    ("key folded", {}, "A@Example.COM", "x@example.org,y@example.org", []),
    ("quote and backslash", {}, "o'b\\c@example.com", "quoted@example.org", []),
    ("injection", {}, "x' OR '1'='1", None, []),
    ("injection by backslash", {}, "x\\' OR 1=1 -- ", None, []),
    ("empty value", {}, "b@example.com", None,
     ['postmap: warning: table "{spec}": empty lookup result for: "b@example.com" -- ignored']),
    ("empty key", {}, "", None, ['postmap: warning: table "{spec}": empty query string']),
    ("%u %d", {"query": "SELECT goto FROM alias WHERE address=CONCAT('%u', '@', '%d')"},
     "a@example.com", "x@example.org,y@example.org", []),
    ("%d of a bare key: no query", {"query": FAILING}, "bare", None, []),
    ("%u of @domain: no query", {"query": "SELECT x FROM nosuchtable WHERE u='%u'"},
     "@example.com", None, []),
    ("%u of a bare key is the key", {"query": "SELECT goto FROM alias WHERE address='%u'"},
     "bare", "bare-target", []),
    ("%1 %2 %3", {"query": "SELECT goto FROM alias WHERE address=CONCAT('user@', '%3', '.', "
                           "'%2', '.', '%1')"}, "x@mail.example.com", "deep@example.org", []),
    ("too few labels: no query", {"query": "SELECT x FROM nosuchtable WHERE a='%3'"},
     "x@example.com", None, []),
    ("result_format", {"result_format": "smtp:[%s]"}, "bare", "smtp:[bare-target]", []),
    ("result_format %u %d %D %S",
     {"result_format": "%u at %d for %D (%S) 100%%"}, "a@example.com",
     "x at example.org for example.com (a@example.com) 100%,"
     "y at example.org for example.com (a@example.com) 100%", []),
    ("result_format %d skips a value without domain", {"result_format": "%d"}, "bare",
     None, []),
    ("result_format %D suppresses a bare key", {"query": FAILING.replace("%d", "%s"),
                                               "result_format": "%D"}, "bare", None, []),
    ("domain listed", {"domain": "example.com"}, "a@example.com",
     "x@example.org,y@example.org", []),
    ("domain not listed: no query", {"domain": "example.net", "query": FAILING},
     "a@example.com", None, []),
    ("domain: bare key not asked", {"domain": "example.com", "query": FAILING}, "bare",
     None, []),
    ("domain by table", {"domain": "inline:{example.com=yes}"}, "a@example.com",
     "x@example.org,y@example.org", []),
    ("expansion_limit", {"expansion_limit": "1"}, "a@example.com", None,
     ["postmap: warning: dict_{kind}_lookup: {path}: Expansion limit exceeded for key: "
      "'a@example.com'",
      "postmap: fatal: table {spec}: query error"]),
    ("expansion_limit not reached", {"expansion_limit": "2"}, "a@example.com",
     "x@example.org,y@example.org", []),
    ("legacy query", {"query": None, "select_field": "goto", "table": "alias",
                      "where_field": "address", "additional_conditions": "AND active = 1"},
     "a@example.com", "x@example.org,y@example.org", []),
    ("legacy additional_conditions", {"query": None, "select_field": "goto",
                                      "table": "alias", "where_field": "address",
                                      "additional_conditions": "AND active = 1"},
     "c@example.com", None, []),
    ("query error", {"query": FAILING}, "a@example.com", None,
     ["postmap: warning: ", "postmap: fatal: table {spec}: query error"]),
]


def load_alias_table(execute: Callable[..., object], quote_backslash: bool) -> None:
    """load_alias_table - `alias` with ROWS through EXECUTE(sql, ...)."""
    def q(text: str) -> str:
        if quote_backslash:
            text = text.replace("\\", "\\\\")
        return text.replace("'", "''")

    execute("DROP TABLE IF EXISTS alias",
            "CREATE TABLE alias (address VARCHAR(255), goto VARCHAR(255), "
            "extra VARCHAR(255), active INT DEFAULT 1)")
    execute(*[f"INSERT INTO alias (address, goto) VALUES ('{q(a)}', '{q(g)}')"
              for a, g in ROWS])
    execute("UPDATE alias SET extra = 'z' WHERE goto = 'y@example.org'",
            "UPDATE alias SET active = 0 WHERE address = 'c@example.com'")


def check_parity(result: subprocess.CompletedProcess, spec: str, path: Path, kind: str,
                 stdout: str | None, stderr: list[str] | None) -> None:
    """check_parity - RESULT of postmap -q is the expected answer, status, warnings."""
    assert result.stdout == ("" if stdout is None else stdout + "\n"), \
        f"{result.stdout!r} {result.stderr}"
    assert result.returncode == (1 if stdout is None else 0)
    if stderr is None:
        return
    lines = result.stderr.splitlines()
    assert len(lines) == len(stderr), result.stderr
    for line, prefix in zip(lines, stderr):
        prefix = prefix.replace("{spec}", spec).replace("{path}", str(path))
        assert line.startswith(prefix.replace("{kind}", kind)), result.stderr


def sql_settings(port: int, **extra: str | None) -> dict[str, str]:
    """sql_settings - a mysql:/pgsql: table of `alias` on 127.0.0.1:PORT; an
    EXTRA value of None removes that setting."""
    base: dict[str, str | None] = {
        "hosts": f"inet:127.0.0.1:{port}", "user": USER, "password": PASSWORD,
        "dbname": DBNAME, "query": "SELECT goto FROM alias WHERE address='%s'"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def check_query_error(result: subprocess.CompletedProcess, spec: str, first: str = "") -> None:
    """check_query_error - postmap -q failed for now: nothing printed, exit 1,
    the first stderr line starting with FIRST, the last Postfix's fatal."""
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert lines[0].startswith(first), result.stderr
    assert lines[-1].startswith(f"postmap: fatal: table {spec}: query error"), result.stderr


def survives_restart(server, table: Table, key: str, value: str) -> None:
    """survives_restart - with SERVER stopped a lookup is a TableError (not a
    crash, not a hang); once it is back the same TABLE answers VALUE again."""
    assert table.lookup(key) == value
    server.stop()
    try:
        with pytest.raises(TableError, match="query error"):
            table.lookup(key)
    finally:
        server.start()
    assert table.lookup(key) == value
