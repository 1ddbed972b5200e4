"""What the database tables share (pymaster.util.tables.dbcommon): the .cf
settings, the % templates and their quoting, domain, result_format,
expansion_limit and the order of hosts; and that every type gives up on a
hung server. The tables themselves are tested against real servers in
test_tables_mysql.py, _pgsql.py and _ldap.py."""

import pytest

from pymaster.mail.config import Config
from pymaster.util.tables import TableError
from pymaster.util.tables.dbcommon import (
    DomainFilter,
    HostList,
    Templates,
    join_results,
    ldap_dn_quote,
    ldap_filter_quote,
    mysql_quote,
    read_settings,
    sql_quote,
    usable_key,
)


def test_settings_file_syntax(tmp_path):
    cf = tmp_path / "t.cf"
    cf.write_text("# comment\nhosts = a\n  b\nquery = SELECT 1 = 1\n\nflag = YES\nn = 7\n")
    s = read_settings(str(cf))
    assert s.get("hosts") == "a  b" and s.get("query") == "SELECT 1 = 1"
    assert s.get_bool("flag", False) is True and s.get_int("n", 0) == 7
    assert s.get_int("missing", 3) == 3 and s.get("missing", "d") == "d"
    cf.write_text("flag = 1\nn = x\n")
    s = read_settings(str(cf))
    with pytest.raises(TableError, match="bad boolean configuration: flag = 1"):
        s.get_bool("flag", False)
    with pytest.raises(TableError, match="bad numerical configuration: n = x"):
        s.get_int("n", 0)


def test_settings_errors_and_main_cf_form(tmp_path):
    (tmp_path / "bad.cf").write_text("no equals sign here\n")
    with pytest.raises(TableError, match="missing '=' after attribute name"):
        read_settings(str(tmp_path / "bad.cf"))
    with pytest.raises(TableError, match="open .*No such file"):
        read_settings(str(tmp_path / "none.cf"))
    cfg = Config("/nonexistent", {"mydb_hosts": "db1", "mydb_user": "u", "other": "x"})
    assert read_settings("mydb", cfg).values == {"hosts": "db1", "user": "u"}


@pytest.mark.parametrize("template, key, expected", [
    ("%s|%u|%d|%1|%2|%3|%%", "A@mail.example.com",
     "A@mail.example.com|A|mail.example.com|com|example|mail|%"),
    ("%S %U %D", "u@d.example", "u@d.example u d.example"),
    ("%u", "bare", "bare"),
    ("%d", "bare", None),
    ("%u", "@example.com", None),
    ("%s", "@example.com", "@example.com"),
    ("%3", "u@example.com", None),
    ("%2", "u@.com", None),
    ("%s", "", None),
])
def test_query_expansion(template, key, expected):
    assert Templates(template, "%s", "t:x").expand_query(key, str) == expected


def test_result_format_needs_of_the_key_suppress_the_query():
    t = Templates("%s", "%s/%D", "t:x")
    assert t.expand_query("bare", str) is None
    assert join_results(["v"], "a@d.example", t, 0, "x") == "v/d.example"


def test_result_format_values():
    t = Templates("%s", "%u at %d", "t:x")
    assert join_results(["a@b", "nodomain", "c@d", ""], "k", t, 0, "x") == "a at b,c at d"
    assert join_results([], "k", t, 0, "x") is None
    with pytest.raises(TableError, match="query error"):
        join_results(["a@b", "c@d"], "k", t, 1, "x")


def test_unknown_escape():
    with pytest.raises(TableError, match="Invalid result template"):
        Templates("%s", "%x", "t:x")


def test_quoting():
    assert sql_quote("o'b\\") == "o''b\\"
    assert mysql_quote("o'b\\\"\n\0") == "o\\'b\\\\\\\"\\n\\0"
    assert ldap_filter_quote("a*(b)\\") == "a\\2A\\28b\\29\\5C"
    assert ldap_dn_quote("#a,b+c ") == "\\23a\\2Cb\\2Bc\\20"
    assert not usable_key("bad\udcff") and usable_key("fine")


def test_domain_filter(tmp_path):
    listed = tmp_path / "domains"
    listed.write_text("# comment\nfile.example\n")
    f = DomainFilter(f"a.example, !b.a.example, inline:{{t.example=1}}, {listed}", None, "t:x")
    assert f.allows("u@A.example") and f.allows("u@t.example") and f.allows("u@file.example")
    assert not f.allows("u@b.a.example") and not f.allows("u@other.example")
    assert not f.allows("bare") and not f.allows("@a.example")
    assert DomainFilter("", None, "t:x").allows("bare")


def test_host_order_puts_first_hosts_first_and_rests_failed_ones():
    hosts = HostList(["inet:a", "unix:/s", "inet:b"], 60, lambda h: h.startswith("unix:"))
    assert hosts.order()[0] == "unix:/s"
    assert sorted(hosts.order()) == sorted(hosts.hosts)
    hosts.failed("unix:/s")
    assert "unix:/s" not in hosts.order()
    hosts.worked("unix:/s")
    assert "unix:/s" in hosts.order()
    orders = {tuple(HostList(["a", "b", "c"], 60).order()) for _ in range(50)}
    assert len(orders) > 1                  # random, as Postfix tries them


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says a word (a hung server)."""
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


@pytest.mark.parametrize("type_, settings", [
    ("mysql", "hosts = inet:127.0.0.1:{port}\nquery = SELECT '%s'\n"),
    ("pgsql", "hosts = inet:127.0.0.1:{port}\nquery = SELECT '%s'\n"),
    ("ldap", "server_host = ldap://127.0.0.1:{port}\nsearch_base = dc=x\ntimeout = 1\n"
             "query_filter = (mail=%s)\n"),
], ids=["mysql", "pgsql", "ldap"])
def test_a_hung_server_is_a_temporary_failure(tmp_path, monkeypatch, silent_server,
                                              type_, settings):
    """Bounded by the connect and query timeouts (shortened here), never a hang."""
    pytest.importorskip({"mysql": "pymysql", "pgsql": "psycopg", "ldap": "ldap3"}[type_])
    from pymaster.util.tables import create_table, mysql, pgsql
    for module in (mysql, pgsql):
        monkeypatch.setattr(module, "CONNECT_TIMEOUT", 1)
        monkeypatch.setattr(module, "QUERY_TIMEOUT", 1)
    cf = tmp_path / "t.cf"
    cf.write_text(settings.format(port=silent_server))
    with pytest.raises(TableError, match="query error"):
        create_table(f"{type_}:{cf}").lookup("a@example.com")
