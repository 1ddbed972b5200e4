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

ROWS = [
    ("a@example.com", "x@example.org"),
    ("a@example.com", "y@example.org"),
    ("b@example.com", ""),
    ("o'b\\c@example.com", "quoted@example.org"),
    ("bare", "bare-target"),
    ("user@mail.example.com", "deep@example.org"),
    ("c@example.com", "carol@example.org"),
]


@pytest.fixture(scope="module")
def db(mariadb):  # noqa: F811
    mariadb.execute("DROP TABLE IF EXISTS alias",
                    "CREATE TABLE alias (address VARCHAR(255), goto VARCHAR(255), "
                    "extra VARCHAR(255), active INT DEFAULT 1)",
                    "DROP PROCEDURE IF EXISTS lookup",
                    "CREATE PROCEDURE lookup(IN k VARCHAR(255)) READS SQL DATA "
                    "SELECT goto FROM alias WHERE address = k",
                    database=DBNAME)
    for address, goto in ROWS:
        mariadb.execute(f"INSERT INTO alias (address, goto) VALUES "
                        f"('{_q(address)}', '{_q(goto)}')", database=DBNAME)
    mariadb.execute("UPDATE alias SET extra = 'z' WHERE goto = 'y@example.org'",
                    "UPDATE alias SET active = 0 WHERE address = 'c@example.com'",
                    database=DBNAME)
    return mariadb


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


def settings(db, **extra) -> dict[str, str]:  # noqa: F811
    base = {"hosts": f"inet:127.0.0.1:{db.port}", "user": USER, "password": PASSWORD,
            "dbname": DBNAME, "query": "SELECT goto FROM alias WHERE address='%s'"}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


FAILING = "SELECT goto FROM nosuchtable WHERE address='%s' AND d='%d'"

# (id, settings, key, stdout or None, stderr line prefixes ({spec}); None: unchecked)
PARITY = [
    ("found", {}, "bare", "bare-target", []),
    ("several rows and columns", {"query": "SELECT goto, extra FROM alias WHERE address='%s'"},
     "a@example.com", "x@example.org,y@example.org,z", []),
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
     ["postmap: warning: dict_mysql_lookup: {path}: Expansion limit exceeded for key: "
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
    ("stored procedure", {"query": "CALL lookup('%s')"}, "bare", "bare-target", []),
    ("query error", {"query": FAILING}, "a@example.com", None,
     ["postmap: warning: ", "postmap: fatal: table {spec}: query error"]),
]


@pytest.fixture(scope="module")
def debian(postmap_config):  # noqa: F811
    return debian_supports("mysql", postmap_config)


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
@pytest.mark.parametrize("name, extra, key, stdout, stderr", PARITY,
                         ids=[row[0] for row in PARITY])
def test_postmap_parity(program, debian, db, postmap_config, tmp_path,  # noqa: F811
                        name, extra, key, stdout, stderr):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    path = write_cf(tmp_path / "mysql.cf", settings(db, **extra))
    spec = f"mysql:{path}"
    result = postmap_query(program, postmap_config, key, spec)
    assert result.stdout == ("" if stdout is None else stdout + "\n")
    assert result.returncode == (1 if stdout is None else 0)
    if stderr is not None:
        lines = result.stderr.splitlines()
        assert len(lines) == len(stderr), result.stderr
        for line, prefix in zip(lines, stderr):
            prefix = prefix.replace("{spec}", spec).replace("{path}", str(path))
            assert line.startswith(prefix), result.stderr


@pytest.mark.parametrize("program", [PYMASTER_POSTMAP, DEBIAN_POSTMAP],
                         ids=["pymaster", "debian"])
def test_server_down_is_a_temporary_failure(program, debian, db, postmap_config,  # noqa: F811
                                            tmp_path):
    if program == DEBIAN_POSTMAP and debian:
        pytest.skip(debian)
    dead = free_port()
    path = write_cf(tmp_path / "mysql.cf", settings(db, hosts=f"inet:127.0.0.1:{dead}"))
    result = postmap_query(program, postmap_config, "bare", f"mysql:{path}")
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and result.stdout == ""
    assert lines[0].startswith(f"postmap: warning: connect to mysql server "
                               f"inet:127.0.0.1:{dead}: ")
    assert lines[-1].startswith(f"postmap: fatal: table mysql:{path}: query error")


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


def test_table_is_remote_and_exact(db, tmp_path):  # noqa: F811
    table = create_table(f"mysql:{write_cf(tmp_path / 'm.cf', settings(db))}")
    assert table.remote and table.fixed


def test_reconnects_after_a_restart(db, tmp_path):  # noqa: F811
    """The server goes away: a temporary failure in bounded time, never a
    crash; it comes back: the next lookup works on a new connection."""
    path = write_cf(tmp_path / "m.cf", settings(db, retry_interval="0"))
    table = create_table(f"mysql:{path}")
    assert table.lookup("bare") == "bare-target"
    db.stop()
    try:
        with pytest.raises(TableError, match="query error"):
            table.lookup("bare")
    finally:
        db.start()
    assert table.lookup("bare") == "bare-target"


def test_failed_host_rests_for_retry_interval(db, tmp_path):  # noqa: F811
    dead = f"inet:127.0.0.1:{free_port()}"
    path = write_cf(tmp_path / "m.cf", settings(db, hosts=dead, retry_interval="3600"))
    table = create_table(f"mysql:{path}")
    with pytest.raises(TableError):
        table.lookup("bare")
    assert table.hosts.order() == []            # resting: not even tried
    with pytest.raises(TableError):
        table.lookup("bare")


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
