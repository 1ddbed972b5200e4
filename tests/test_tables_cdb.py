"""The indexed table files: hash:, btree: and cdb: (pymaster.util.tables.cdb, hashdb)."""

import os

import pytest

from pymaster.util import tables
from pymaster.util.tables import TableError, cdb, create_table, hashdb


@pytest.fixture(autouse=True)
def no_check_delay(monkeypatch):
    # Tables normally look for a replaced file once a second; tests look at once.
    monkeypatch.setattr(tables, "CHECK_INTERVAL", 0)


class TestFormat:
    def test_every_key_is_found_and_a_missing_one_is_not(self, tmp_path):
        items = [(b"key%d" % i, b"value%d" % i) for i in range(5000)]
        for flavour in (cdb.FLAVOUR_CDB, cdb.FLAVOUR_PYDB):
            path = str(tmp_path / flavour)
            cdb.write(path, items, flavour)
            reader = cdb.Reader(path, flavour)
            assert all(reader.get(k) == v for k, v in items)
            assert reader.get(b"absent") is None
            assert list(reader.items()) == items

    def test_empty_database(self, tmp_path):
        path = str(tmp_path / "empty")
        cdb.write(path, [], cdb.FLAVOUR_PYDB)
        assert cdb.Reader(path, cdb.FLAVOUR_PYDB).get(b"x") is None

    def test_cdb_flavour_uses_the_djb_hash_of_genuine_cdb(self):
        assert cdb.djb_hash(b"") == 5381
        assert cdb.djb_hash(b"a") == ((5381 << 5) + 5381) ^ ord("a")

    def test_a_file_that_is_not_ours_is_refused(self, tmp_path):
        path = tmp_path / "berkeley.db"
        path.write_bytes(b"\0" * 4096)
        with pytest.raises(cdb.FormatError):
            cdb.Reader(str(path), cdb.FLAVOUR_PYDB)


def build(tmp_path, type_, entries, **kw):
    name = str(tmp_path / "table")
    hashdb.build(type_, name, entries, **kw)
    return name


class TestHashTable:
    @pytest.mark.parametrize("type_", ["hash", "btree", "cdb"])
    def test_lookup_folds_case(self, tmp_path, type_):
        name = build(tmp_path, type_, [("user@example.com", "Mailbox")])
        table = create_table(f"{type_}:{name}")
        assert table.lookup("USER@Example.COM") == "Mailbox"
        assert table.lookup("other") is None
        assert list(table.items()) == [("user@example.com", "Mailbox")]

    def test_file_names(self, tmp_path):
        assert create_table("hash:/x/y").db_path == "/x/y.db"
        assert create_table("cdb:/x/y").db_path == "/x/y.cdb"

    def test_without_folding_case_matters(self, tmp_path):
        name = build(tmp_path, "hash", [("Key", "v")])
        table = create_table(f"hash:{name}", fold=False)
        assert table.lookup("Key") == "v"
        assert table.lookup("key") is None

    def test_nul_terminated_entries_read_back_plain(self, tmp_path):
        name = build(tmp_path, "hash", [("k", "v")], nul=True)
        table = create_table(f"hash:{name}")
        assert table.lookup("k") == "v"
        assert list(table.items()) == [("k", "v")]

    def test_cdb_written_with_nul_keys_is_read(self, tmp_path):
        path = str(tmp_path / "t")
        cdb.write(path + ".cdb", [(b"k\0", b"v\0")], cdb.FLAVOUR_CDB)
        assert create_table(f"cdb:{path}").lookup("k") == "v"

    def test_missing_file_is_a_temporary_failure(self, tmp_path):
        table = create_table(f"hash:{tmp_path}/nothing")
        with pytest.raises(TableError, match="open database .*nothing.db"):
            table.lookup("x")

    def test_foreign_file_is_a_temporary_failure(self, tmp_path):
        (tmp_path / "t.db").write_bytes(b"\x00\x06\x15\x61" + b"\0" * 5000)
        with pytest.raises(TableError, match="rebuild it with postmap"):
            create_table(f"hash:{tmp_path}/t").lookup("x")

    def test_rebuilt_file_is_reopened_without_reload(self, tmp_path):
        name = build(tmp_path, "hash", [("k", "old")])
        table = create_table(f"hash:{name}")
        assert table.lookup("k") == "old"
        build(tmp_path, "hash", [("k", "new"), ("k2", "added")])
        assert table.lookup("k") == "new"
        assert table.lookup("k2") == "added"

    def test_atomic_rebuild_while_a_reader_reads(self, tmp_path):
        # The reader keeps its mapping of the old file: every answer it gives
        # comes from one complete table, old or new, never a mixture.
        name = build(tmp_path, "hash", [(f"k{i}", "old") for i in range(2000)])
        reader = cdb.Reader(name + ".db", cdb.FLAVOUR_PYDB)
        inode = os.stat(name + ".db").st_ino
        build(tmp_path, "hash", [(f"k{i}", "new") for i in range(3000)])
        assert os.stat(name + ".db").st_ino != inode
        assert {reader.get(b"k%d" % i) for i in range(2000)} == {b"old"}
        assert reader.get(b"k2500") is None
        fresh = create_table(f"hash:{name}")
        assert {fresh.lookup(f"k{i}") for i in range(3000)} == {"new"}
        assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]

    def test_deleted_file_keeps_the_last_good_copy(self, tmp_path):
        name = build(tmp_path, "hash", [("k", "v")])
        table = create_table(f"hash:{name}")
        assert table.lookup("k") == "v"
        os.unlink(name + ".db")
        assert table.lookup("k") == "v"
