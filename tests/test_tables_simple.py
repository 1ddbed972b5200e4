"""The table interface (pymaster.util.tables) and the file-less and composite types."""

import os
import pwd

import pytest

from pymaster.util import tables
from pymaster.util.tables import TableError, create_table, open_table, split_spec


class TestInterface:
    def test_spec_is_type_colon_name(self):
        assert split_spec("hash:/etc/postfix/virtual") == ("hash", "/etc/postfix/virtual")
        assert split_spec("proxy:unix:passwd.byname") == ("proxy", "unix:passwd.byname")
        with pytest.raises(TableError, match="need dictionary type:name"):
            split_spec("/etc/postfix/virtual")

    def test_unknown_type(self):
        with pytest.raises(TableError, match="unsupported dictionary type: nosuch"):
            create_table("nosuch:/x")

    def test_a_table_that_cannot_be_opened_fails_each_lookup(self):
        # A service keeps running: the table stands in and every lookup is a
        # temporary failure that names the table, as Postfix's surrogate does.
        table = open_table("sdbm:/etc/postfix/nosuch")
        for _ in range(2):
            with pytest.raises(tables.TableUnavailable) as failed:
                table.lookup("x")
            assert failed.value.warning == ("sdbm:/etc/postfix/nosuch is unavailable. "
                                            "unsupported dictionary type: sdbm")

    def test_a_missing_file_table_is_unavailable(self, tmp_path):
        table = open_table(f"texthash:{tmp_path}/none")
        with pytest.raises(tables.TableUnavailable) as failed:
            table.lookup("x")
        assert failed.value.warning == (f"texthash:{tmp_path}/none is unavailable. open "
                                        f"database {tmp_path}/none: No such file or directory")

    def test_tables_are_opened_once_per_spec(self):
        assert open_table("static:one") is open_table("static:one")
        assert create_table("static:one") is not open_table("static:one")

    def test_every_type_is_registered(self):
        for type_ in ("hash", "btree", "cdb", "texthash", "regexp", "pcre", "cidr", "static",
                      "inline", "fail", "environ", "unix", "sqlite", "socketmap", "unionmap",
                      "pipemap", "proxy"):
            assert tables.table_class(type_)


class TestSimple:
    def test_static(self):
        assert create_table("static:OK").lookup("anything") == "OK"
        assert create_table("static:{a value with spaces}").lookup("x") == "a value with spaces"

    def test_inline(self):
        table = create_table("inline:{ Key1=value1, {key2 = value, with comma} }")
        assert table.lookup("KEY1") == "value1"
        assert table.lookup("key2") == "value, with comma"
        assert table.lookup("key3") is None
        assert dict(table.items()) == {"key1": "value1", "key2": "value, with comma"}

    def test_inline_errors(self):
        with pytest.raises(TableError):
            create_table("inline:{ novalue }")
        with pytest.raises(TableError):
            create_table("inline:a=b")

    def test_fail_is_always_a_temporary_failure(self):
        with pytest.raises(TableError, match="fail:x"):
            create_table("fail:x").lookup("key")

    def test_environ(self, monkeypatch):
        monkeypatch.setenv("PYMASTER_TEST_VAR", "set")
        table = create_table("environ:")
        assert table.lookup("PYMASTER_TEST_VAR") == "set"
        assert table.lookup("PYMASTER_TEST_UNSET_VAR") is None

    def test_unix_passwd_and_group(self):
        me = pwd.getpwuid(os.getuid())
        line = create_table("unix:passwd.byname").lookup(me.pw_name)
        assert line.split(":")[0] == me.pw_name and line.split(":")[5] == me.pw_dir
        assert create_table("unix:passwd.byname").lookup("no-such-user-xyz") is None
        assert create_table("unix:group.byname").lookup("root").startswith("root:")
        with pytest.raises(TableError):
            create_table("unix:hosts.byname")


class TestTexthash:
    def test_reads_the_source_format(self, tmp_path, monkeypatch):
        monkeypatch.setattr(tables, "CHECK_INTERVAL", 0)
        path = tmp_path / "t"
        path.write_text("# comment\nUser@Example.com  one\n  two\nk v\nk dup\n")
        table = create_table(f"texthash:{path}")
        assert table.lookup("user@example.com") == "one  two"
        assert table.lookup("k") == "v"
        path.write_text("k changed\n")
        assert table.lookup("k") == "changed"


class TestComposite:
    def test_unionmap_joins_every_answer(self):
        table = create_table("unionmap:{inline:{a=1}, static:2, inline:{b=3}}")
        assert table.lookup("a") == "1,2"

    def test_unionmap_not_found(self):
        assert create_table("unionmap:{inline:{a=1}, inline:{b=2}}").lookup("c") is None

    def test_pipemap_feeds_each_answer_onward(self):
        table = create_table("pipemap:{inline:{a=b}, inline:{b=c}}")
        assert table.lookup("a") == "c"
        assert table.lookup("b") is None

    def test_composite_failure_propagates(self):
        with pytest.raises(TableError):
            create_table("unionmap:{static:x, fail:y}").lookup("a")

    def test_proxy_without_a_proxymap_service_opens_the_table_itself(self):
        table = create_table("proxy:inline:{a=b}")
        assert table.lookup("a") == "b"
        assert table.spec == "proxy:inline:{a=b}"
