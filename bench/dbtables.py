"""Database table benchmark, one part of `make bench` (not a test).

Starts a MariaDB, a PostgreSQL and a slapd on loopback (tests/support/
databases.py), loads 10,000 aliases into each, and counts lookups per second
of random keys (nine in ten found) through the table interface in this
process: mysql:, pgsql: and ldap: directly, and mysql: through a running
proxymap service (proxy:mysql:, a real master started for it). One
connection per table, as a service has. Side by side with Debian's Postfix:
`postmap -q - TYPE:file.cf` with the same keys on its input, ours and
Debian's (interpreter start-up included, so a floor for ours).

Interface:
    run(workdir, lookups=3000) -> list[str]   report lines
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from pymaster.mail.config import load_config
from pymaster.util.tables import Table, create_table
from tests.support.databases import (
    BASE_DN,
    DBNAME,
    PASSWORD,
    USER,
    MariaDB,
    PostgreSQL,
    Slapd,
    write_cf,
)
from tests.support.instance import Instance

ROWS = 10_000
DEBIAN_POSTMAP = "/usr/sbin/postmap"
OUR_POSTMAP = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "postmap")


def _keys(lookups: int) -> list[str]:
    return [f"user{random.randrange(ROWS * 10 // 9)}@example.com" for _ in range(lookups)]


def _rate(table: Table, keys: list[str]) -> float:
    table.lookup(keys[0])       # connected before the clock starts
    start = time.perf_counter()
    for key in keys:
        table.lookup(key)
    return len(keys) / (time.perf_counter() - start)


def _postmap_rates(workdir: Path, spec: str, keys: list[str]) -> str:
    """_postmap_rates - lookups/s of `postmap -q -` over KEYS, ours and Debian's."""
    config = workdir / "postmap-config"
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("")
    text = "".join(k + "\n" for k in keys)
    rates = []
    for program in (OUR_POSTMAP, DEBIAN_POSTMAP):
        if not os.path.exists(program):
            continue
        start = time.perf_counter()
        done = subprocess.run([program, "-c", str(config), "-q", "-", spec], input=text,
                              capture_output=True, text=True, timeout=600)
        rates.append(len(keys) / (time.perf_counter() - start))
        found = len(done.stdout.splitlines())
        if found < len(keys) // 2:       # a failing run measures nothing
            return f"dbtables: {program} -q - {spec}: only {found} found: {done.stderr[-300:]}"
    if len(rates) < 2:
        return f"dbtables: {spec.partition(':')[0]}: postmap -q -: {rates[0]:,.0f} lookups/s"
    return (f"dbtables: {spec.partition(':')[0]}: postmap -q -: pymaster {rates[0]:,.0f}, "
            f"Postfix {rates[1]:,.0f} lookups/s (ratio {rates[0] / rates[1]:.2f})")


def _sql_rows(execute, quote_backslash: bool = False) -> None:
    execute("CREATE TABLE alias (address VARCHAR(255) PRIMARY KEY, goto VARCHAR(255))")
    values = ", ".join(f"('user{i}@example.com', 'mailbox{i}@example.net')"
                       for i in range(ROWS))
    execute(f"INSERT INTO alias VALUES {values}")


def _sql_cf(path: Path, host: str) -> Path:
    return write_cf(path, {"hosts": host, "user": USER, "password": PASSWORD,
                           "dbname": DBNAME,
                           "query": "SELECT goto FROM alias WHERE address='%s'"})


def _mysql(workdir: Path, keys: list[str]) -> list[str]:
    server = MariaDB()
    try:
        server.start()
        _sql_rows(lambda *sql: server.execute(*sql, database=DBNAME))
        cf = _sql_cf(workdir / "mysql.cf", f"inet:127.0.0.1:{server.port}")
        lines = [f"dbtables: mysql: direct: {_rate(create_table(f'mysql:{cf}'), keys):,.0f} "
                 "lookups/s"]
        lines.append(f"dbtables: proxy:mysql: through proxymap: "
                     f"{_proxy_rate(workdir, cf, keys):,.0f} lookups/s")
        lines.append(_postmap_rates(workdir, f"mysql:{cf}", keys))
        return lines
    finally:
        server.remove()


def _proxy_rate(workdir: Path, cf: Path, keys: list[str]) -> float:
    with Instance(workdir / "instance", main_cf={
            "virtual_alias_maps": f"proxy:mysql:{cf}"}) as inst:
        cfg = load_config(str(inst.config_dir))
        return _rate(create_table(f"proxy:mysql:{cf}", cfg), keys)


def _pgsql(workdir: Path, keys: list[str]) -> list[str]:
    server = PostgreSQL()
    try:
        server.start()
        _sql_rows(lambda *sql: server.execute(*sql, database=DBNAME))
        server.execute(f"GRANT SELECT ON alias TO {USER}", database=DBNAME)
        cf = _sql_cf(workdir / "pgsql.cf", f"inet:127.0.0.1:{server.port}")
        return [f"dbtables: pgsql: direct: {_rate(create_table(f'pgsql:{cf}'), keys):,.0f} "
                "lookups/s", _postmap_rates(workdir, f"pgsql:{cf}", keys)]
    finally:
        server.remove()


def _ldap(workdir: Path, keys: list[str]) -> list[str]:
    server = Slapd()
    try:
        server.start()
        server.add("".join(
            f"dn: uid=user{i},{BASE_DN}\nobjectClass: inetOrgPerson\n"
            f"objectClass: inetLocalMailRecipient\nuid: user{i}\ncn: u\nsn: u\n"
            f"mailLocalAddress: user{i}@example.com\n"
            f"mailRoutingAddress: mailbox{i}@example.net\n\n" for i in range(ROWS)))
        cf = write_cf(workdir / "ldap.cf", {
            "server_host": server.url, "search_base": BASE_DN, "version": "3",
            "query_filter": "(mailLocalAddress=%s)", "result_attribute": "mailRoutingAddress"})
        return [f"dbtables: ldap: direct: {_rate(create_table(f'ldap:{cf}'), keys):,.0f} "
                "lookups/s", _postmap_rates(workdir, f"ldap:{cf}", keys)]
    finally:
        server.remove()


def run(workdir: Path, lookups: int = 3000) -> list[str]:
    """run - the lookups per second of each database table type."""
    keys = _keys(lookups)
    lines: list[str] = []
    for section in (_mysql, _pgsql, _ldap):
        try:
            lines += section(Path(workdir), keys)
        except pytest.skip.Exception as e:      # a server that is not installed
            lines.append(f"dbtables: {section.__name__[1:]}: skipped: {e}")
    return lines


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run(Path(tmp))))
