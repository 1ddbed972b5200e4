"""pgsql: tables (pymaster.util.tables.pgsql) against a real PostgreSQL.

The parity rows (tests/support/sqlcases.py) run `postmap -q` of pymaster
and of Debian's Postfix (postfix-pgsql) on the same .cf file; the other
tests look at reconnection, host forms and bounded failure."""

import pytest

from pymaster.util.tables import TableError, create_table
from tests.support.databases import (  # noqa: F401  (fixtures)
    DBNAME,
    DEBIAN_POSTMAP,
    PASSWORD,
    PYMASTER_POSTMAP,
    USER,
    debian_supports,
    postgres,
    postmap_config,
    postmap_query,
    write_cf,
)
from tests.support.instance import free_port
from tests.support.sqlcases import (
    PARITY,
    check_parity,
    check_query_error,
    load_alias_table,
    sql_settings,
    survives_restart,
)


@pytest.fixture(scope="module")
def db(postgres):  # noqa: F811
    def execute(*sql: str) -> None:
        postgres.execute(*sql, database=DBNAME)

    load_alias_table(execute, quote_backslash=False)
    execute(f"GRANT SELECT ON alias TO {USER}")
    return postgres


def settings(db, **extra) -> dict[str, str]:  # noqa: F811
    return sql_settings(db.port, **extra)


PGSQL_PARITY = PARITY + [
    ("NULL is an empty value", {"query": "SELECT goto, extra FROM alias WHERE address='%s'"},
     "a@example.com", "x@example.org,y@example.org,z",
     ['postmap: warning: table "{spec}": empty lookup result for: "a@example.com"']),
    ("backslash is plain text", {}, "o'b\\c@example.com", "quoted@example.org", []),
]


@pytest.fixture(scope="module")
def debian(postmap_config):  # noqa: F811
    return debian_supports("pgsql", postmap_config)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("name, extra, key, stdout, stderr", PGSQL_PARITY,
                         ids=[row[0] for row in PGSQL_PARITY])
def test_postmap_parity(program, debian, db, postmap_config, tmp_path,  # noqa: F811
                        name, extra, key, stdout, stderr):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    path = write_cf(tmp_path / "pgsql.cf", settings(db, **extra))
    spec = f"pgsql:{path}"
    check_parity(postmap_query(program, postmap_config, key, spec), spec, path, "pgsql",
                 stdout, stderr)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("hosts", ["uri", "uri-socket", "failover"])
def test_host_forms(program, debian, db, postmap_config, tmp_path, hosts):  # noqa: F811
    """A postgresql:// URI (alone: it carries the credentials), one naming the
    socket directory, a dead host beside a live one. (unix:/directory means
    port 5432, which the test server does not use.)"""
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    value = {"uri": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{db.port}/{DBNAME}",
             "uri-socket": f"postgresql:///{DBNAME}?host={db.socket_dir}&port={db.port}"
                           f"&user={USER}",
             "failover": f"inet:127.0.0.1:{free_port()} inet:127.0.0.1:{db.port}"}[hosts]
    path = write_cf(tmp_path / "pgsql.cf", settings(db, hosts=value))
    result = postmap_query(program, postmap_config, "bare", f"pgsql:{path}")
    assert (result.returncode, result.stdout) == (0, "bare-target\n"), result.stderr


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
def test_server_down_is_a_temporary_failure(program, debian, db, postmap_config,  # noqa: F811
                                            tmp_path):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    dead = free_port()
    path = write_cf(tmp_path / "pgsql.cf", settings(db, hosts=f"inet:127.0.0.1:{dead}"))
    result = postmap_query(program, postmap_config, "bare", f"pgsql:{path}")
    check_query_error(result, f"pgsql:{path}",
                      f"postmap: warning: connect to pgsql server inet:127.0.0.1:{dead}: ")


def test_reconnects_after_a_restart(db, tmp_path):  # noqa: F811
    path = write_cf(tmp_path / "p.cf", settings(db, retry_interval="0"))
    table = create_table(f"pgsql:{path}")
    assert table.remote
    survives_restart(db, table, "bare", "bare-target")


def test_wrong_password_is_a_temporary_failure(db, tmp_path):  # noqa: F811
    path = write_cf(tmp_path / "p.cf", settings(db, password="wrong"))
    with pytest.raises(TableError, match="query error"):
        create_table(f"pgsql:{path}").lookup("bare")
