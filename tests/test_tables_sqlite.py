"""sqlite: tables (pymaster.util.tables.sqlite), per sqlite_table(5)."""

import sqlite3

import pytest

from pymaster.util.tables import TableError, create_table
from pymaster.util.tables.dbcommon import Templates, sql_quote


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "mail.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE alias (address TEXT, goto TEXT, domain TEXT)")
    conn.executemany("INSERT INTO alias VALUES (?, ?, ?)", [
        ("joe@example.com", "joe@mailbox.example", "example.com"),
        ("list@example.com", "a@x.example", "example.com"),
        ("list@example.com", "b@x.example", "example.com"),
        ("o'brien@example.com", "quoted", "example.com"),
    ])
    conn.commit()
    conn.close()
    return path


def config(tmp_path, db, **extra):
    lines = [f"dbpath = {db}",
             "query = SELECT goto FROM alias WHERE address='%s'"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    cf = tmp_path / "sqlite.cf"
    cf.write_text("\n".join(lines) + "\n")
    return create_table(f"sqlite:{cf}")


def test_lookup_and_multiple_rows(tmp_path, db):
    table = config(tmp_path, db)
    assert table.lookup("Joe@Example.com") == "joe@mailbox.example"
    # Joined with a bare comma, as every Postfix database table joins them.
    assert table.lookup("list@example.com") == "a@x.example,b@x.example"
    assert table.lookup("nobody@example.com") is None


def test_values_are_quoted(tmp_path, db):
    assert config(tmp_path, db).lookup("o'brien@example.com") == "quoted"


def test_domain_restricts_the_keys_queried(tmp_path, db):
    table = config(tmp_path, db, domain="example.org, inline:{example.net=1}")
    assert table.lookup("joe@example.com") is None
    table = config(tmp_path, db, domain="example.com")
    assert table.lookup("joe@example.com") == "joe@mailbox.example"
    assert table.lookup("joe") is None


def test_result_format_and_expansion_limit(tmp_path, db):
    assert config(tmp_path, db, result_format="smtp:[%d]").lookup("joe@example.com") == \
        "smtp:[mailbox.example]"
    with pytest.raises(TableError, match="query error"):
        config(tmp_path, db, expansion_limit=1).lookup("list@example.com")


def test_query_expansion():
    def expand_query(template, key):
        return Templates(template, "%s", "sqlite:x").expand_query(key, sql_quote)

    assert expand_query("%s|%u|%d|%1|%2|%%", "a@b.example.com") == \
        "a@b.example.com|a|b.example.com|com|example|%"
    assert expand_query("%d", "plainkey") is None
    assert expand_query("%u", "@domain") is None
    assert expand_query("%4", "a@b.c") is None
    assert expand_query("%2", "a@.c") is None
    assert expand_query("'%s'", "o'b") == "'o''b'"
    with pytest.raises(TableError):
        expand_query("%q", "x")


def test_database_problems_are_temporary_failures(tmp_path):
    with pytest.raises(TableError):
        config(tmp_path, tmp_path / "missing.sqlite").lookup("x")
    with pytest.raises(TableError):
        create_table(f"sqlite:{tmp_path}/no-such.cf").lookup("x")
