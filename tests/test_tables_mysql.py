"""mysql: tables (pymaster.util.tables.mysql) against a real MariaDB.

The parity rows run `postmap -q` of pymaster and of Debian's Postfix
(postfix-mysql) on the same .cf file and expect the same answer, warnings
and exit status; the other tests look at what only a running table shows
(reconnection, failover, idle connections, bounded failure)."""

import threading
import time

import pytest

from pymaster.util.tables import TableError, create_table
from tests.support.databases import (  # noqa: F401  (fixtures)
    DBNAME,
    DEBIAN_POSTMAP,
    PASSWORD,
    PYMASTER_POSTMAP,
    USER,
    debian_supports,
    mariadb,
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
def db(mariadb):  # noqa: F811
    def execute(*sql: str) -> None:
        mariadb.execute(*sql, database=DBNAME)

    load_alias_table(execute, quote_backslash=True)
    execute("DROP PROCEDURE IF EXISTS lookup",
            "CREATE PROCEDURE lookup(IN k VARCHAR(255)) READS SQL DATA "
            "SELECT goto FROM alias WHERE address = k")
    return mariadb


def settings(db, **extra) -> dict[str, str]:  # noqa: F811
    return sql_settings(db.port, **extra)


MYSQL_PARITY = PARITY + [
    ("NULL is skipped silently", {"query": "SELECT goto, extra FROM alias WHERE address='%s'"},
     "a@example.com", "x@example.org,y@example.org,z", []),
    ("stored procedure", {"query": "CALL lookup('%s')"}, "bare", "bare-target", []),
    ("no result set", {"query": "DO '%s'"}, "bare", None,
     ["postmap: warning: {spec}: query failed: query returned no result set"
      "(require_result_set = yes)", "postmap: fatal: table {spec}: query error"]),
    ("no result set allowed", {"query": "DO '%s'", "require_result_set": "no"}, "bare",
     None, []),
]


@pytest.fixture(scope="module")
def debian(postmap_config):  # noqa: F811
    return debian_supports("mysql", postmap_config)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("name, extra, key, stdout, stderr", MYSQL_PARITY,
                         ids=[row[0] for row in MYSQL_PARITY])
def test_postmap_parity(program, debian, db, postmap_config, tmp_path,  # noqa: F811
                        name, extra, key, stdout, stderr):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    path = write_cf(tmp_path / "mysql.cf", settings(db, **extra))
    spec = f"mysql:{path}"
    result = postmap_query(program, postmap_config, key, spec)
    check_parity(result, spec, path, "mysql", stdout, stderr)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
def test_server_down_is_a_temporary_failure(program, debian, db, postmap_config,  # noqa: F811
                                            tmp_path):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    dead = free_port()
    path = write_cf(tmp_path / "mysql.cf", settings(db, hosts=f"inet:127.0.0.1:{dead}"))
    result = postmap_query(program, postmap_config, "bare", f"mysql:{path}")
    check_query_error(result, f"mysql:{path}",
                      f"postmap: warning: connect to mysql server inet:127.0.0.1:{dead}: ")


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
def test_failover_unix_socket_and_option_file(program, debian, db, postmap_config,  # noqa: F811
                                              tmp_path):
    """A dead host beside a live one still answers; unix: hosts; credentials
    from option_file's [client] and option_group's section."""
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    options = tmp_path / "my.cnf"
    options.write_text(f"[client]\nuser = nobody\n[pymaster]\nuser = {USER}\n")
    path = write_cf(tmp_path / "mysql.cf", settings(
        db, hosts=f"inet:127.0.0.1:{free_port()} unix:{db.socket}", user=None,
        option_file=str(options), option_group="pymaster"))
    result = postmap_query(program, postmap_config, "bare", f"mysql:{path}")
    assert (result.returncode, result.stdout) == (0, "bare-target\n"), result.stderr


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("ca, verify, works", [("server", "yes", True),
                                               ("system", "yes", False),
                                               ("system", "no", False)])
def test_tls(program, debian, db, postmap_config, tmp_path, ca, verify, works):  # noqa: F811
    """tls_CAfile and tls_verify_cert: the session is encrypted (the server
    says which cipher it uses); a certificate the CAs given do not vouch for
    is a temporary failure, whether or not the name is verified too."""
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    if not db.tls:
        pytest.skip("no certificate for MariaDB (openssl is not installed)")
    ca_file = db.ca_file if ca == "server" else "/etc/ssl/certs/ca-certificates.crt"
    path = write_cf(tmp_path / "mysql.cf", settings(
        db, tls_CAfile=ca_file, tls_verify_cert=verify,
        query="SHOW SESSION STATUS WHERE Variable_name = 'Ssl_cipher' AND '%s' <> ''"))
    result = postmap_query(program, postmap_config, "x", f"mysql:{path}")
    if not works:
        check_query_error(result, f"mysql:{path}")
        return
    assert result.returncode == 0, result.stderr
    name, _, cipher = result.stdout.strip().partition(",")
    assert name == "Ssl_cipher" and cipher, result.stdout


def test_table_is_remote_and_exact(db, tmp_path):  # noqa: F811
    table = create_table(f"mysql:{write_cf(tmp_path / 'm.cf', settings(db))}")
    assert table.remote and table.fixed


def test_reconnects_after_a_restart(db, tmp_path):  # noqa: F811
    """The server goes away: a temporary failure in bounded time, never a
    crash; it comes back: the next lookup works on a new connection."""
    path = write_cf(tmp_path / "m.cf", settings(db, retry_interval="0"))
    table = create_table(f"mysql:{path}")
    assert table.remote
    survives_restart(db, table, "bare", "bare-target")


def test_failed_host_rests_for_retry_interval(db, tmp_path, capsys):  # noqa: F811
    dead = f"inet:127.0.0.1:{free_port()}"
    path = write_cf(tmp_path / "m.cf", settings(db, hosts=dead, retry_interval="3600"))
    table = create_table(f"mysql:{path}")
    with pytest.raises(TableError):
        table.lookup("bare")
    assert table.hosts.order() == []            # resting: not even tried
    with pytest.raises(TableError):
        table.lookup("bare")
    assert "no mysql server available" in capsys.readouterr().err


def test_idle_connection_is_replaced(db, tmp_path):  # noqa: F811
    path = write_cf(tmp_path / "m.cf", settings(db, idle_interval="0"))
    table = create_table(f"mysql:{path}")
    assert table.lookup("bare") == "bare-target"
    first = table._conn
    time.sleep(0.01)
    assert table.lookup("bare") == "bare-target"
    assert table._conn is not first


def test_threads_share_one_connection(db, tmp_path):  # noqa: F811
    table = create_table(f"mysql:{write_cf(tmp_path / 'm.cf', settings(db))}")
    answers: list[str | None] = []

    def ask() -> None:
        for _ in range(20):
            answers.append(table.lookup("bare"))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == ["bare-target"] * 80


def test_obsolete_main_cf_form(db):  # noqa: F811
    from pymaster.mail.config import Config
    values = {f"mydb_{k}": v for k, v in settings(db).items()}
    table = create_table("mysql:mydb", Config("/nonexistent", values))
    assert table.lookup("bare") == "bare-target"


def test_bad_template_is_a_table_error(db, tmp_path):  # noqa: F811
    path = write_cf(tmp_path / "m.cf", settings(db, query="SELECT '%x'"))
    with pytest.raises(TableError, match="Invalid query template"):
        create_table(f"mysql:{path}")
