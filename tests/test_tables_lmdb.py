"""lmdb: tables (pymaster.util.tables.lmdb), per lmdb_table(5): building with
postmap and postalias, updates in place, reopening after a rebuild, and the
same files read and written by Debian's postmap and postalias."""

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from pymaster.mail.config import load_config
from pymaster.util.tables import TableError, TableUnavailable, create_table
from pymaster.util.tables import lmdb as lmdb_table

pytest.importorskip("lmdb")

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
DEBIAN = Path("/usr/sbin")
needs_debian = pytest.mark.skipif(not (DEBIAN / "postmap").exists(),
                                  reason="Debian's postfix is not installed")


@pytest.fixture
def env(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "main.cf").write_text("default_database_type = lmdb\n")
    return tmp_path


def run(env, program, *args, input=None, debian=False):
    binary = DEBIAN / program if debian else BIN / program
    return subprocess.run([str(binary), "-c", str(env / "config"), *args],
                          input=input, capture_output=True, text=True, timeout=60)


def source(env, text, name="virtual"):
    path = env / name
    path.write_text(text)
    return str(path)


def raw_pairs(path):
    import lmdb
    env = lmdb.open(path, subdir=False, lock=False, readonly=True)
    with env.begin() as txn:
        pairs = list(txn.cursor())
    env.close()
    return pairs


class TestPostmap:
    def test_build_query_list(self, env):
        path = source(env, "User@Example.com  box1\nother value\n")
        assert run(env, "postmap", f"lmdb:{path}").returncode == 0
        assert raw_pairs(path + ".lmdb") == [(b"other\0", b"value\0"),
                                             (b"user@example.com\0", b"box1\0")]
        query = run(env, "postmap", "-q", "USER@example.com", path)
        assert (query.returncode, query.stdout) == (0, "box1\n")
        assert run(env, "postmap", "-s", f"lmdb:{path}").stdout == \
            "other\tvalue\nuser@example.com\tbox1\n"

    def test_without_nul(self, env):
        path = source(env, "k v\n")
        assert run(env, "postmap", "-n", f"lmdb:{path}").returncode == 0
        assert raw_pairs(path + ".lmdb") == [(b"k", b"v")]
        assert run(env, "postmap", "-q", "k", f"lmdb:{path}").stdout == "v\n"

    def test_update_and_delete_in_place(self, env):
        path = source(env, "a 1\n")
        run(env, "postmap", f"lmdb:{path}")
        added = run(env, "postmap", "-i", f"lmdb:{path}", input="b 2\na 9\n")
        assert added.stderr == f"postmap: warning: lmdb:{path}: duplicate entry: \"a\"\n"
        assert run(env, "postmap", "-r", "-i", f"lmdb:{path}", input="a 3\n").stderr == ""
        assert run(env, "postmap", "-s", f"lmdb:{path}").stdout == "a\t3\nb\t2\n"
        assert run(env, "postmap", "-d", "a", f"lmdb:{path}").returncode == 0
        assert run(env, "postmap", "-d", "a", f"lmdb:{path}").returncode == 1
        assert run(env, "postmap", "-s", f"lmdb:{path}").stdout == "b\t2\n"

    def test_insert_creates_the_file(self, env):
        path = str(env / "new")
        assert run(env, "postmap", "-i", f"lmdb:{path}", input="k v\n").returncode == 0
        assert run(env, "postmap", "-q", "k", f"lmdb:{path}").stdout == "v\n"

    def test_postalias(self, env):
        path = source(env, "postmaster: root\nList: a, b\n", "aliases")
        assert run(env, "postalias", f"lmdb:{path}").returncode == 0
        assert run(env, "postalias", "-q", "list", f"lmdb:{path}").stdout == "a, b\n"
        assert run(env, "postalias", "-q", "@", f"lmdb:{path}").stdout == "@\n"


@needs_debian
class TestPostfixParity:
    """One file, two implementations: each reads and changes what the other wrote."""

    def test_postfix_reads_ours(self, env):
        path = source(env, "Joe@Example.com joe\nx y z\n")
        run(env, "postmap", f"lmdb:{path}")
        theirs = run(env, "postmap", "-q", "joe@example.com", f"lmdb:{path}", debian=True)
        assert (theirs.returncode, theirs.stdout) == (0, "joe\n")
        ours = run(env, "postmap", "-s", f"lmdb:{path}").stdout
        assert run(env, "postmap", "-s", f"lmdb:{path}", debian=True).stdout == ours

    def test_ours_reads_postfix(self, env):
        path = source(env, "Joe@Example.com joe\nx y z\n")
        assert run(env, "postmap", f"lmdb:{path}", debian=True).returncode == 0
        assert run(env, "postmap", "-q", "JOE@example.com", f"lmdb:{path}").stdout == "joe\n"
        assert run(env, "postmap", "-s", f"lmdb:{path}").stdout == "joe@example.com\tjoe\nx\ty z\n"

    def test_updates_cross_over(self, env):
        path = source(env, "a 1\n")
        run(env, "postmap", f"lmdb:{path}", debian=True)
        run(env, "postmap", "-i", f"lmdb:{path}", input="b 2\n")
        run(env, "postmap", "-i", f"lmdb:{path}", input="c 3\n", debian=True)
        assert run(env, "postmap", "-d", "a", f"lmdb:{path}", debian=True).returncode == 0
        expected = "b\t2\nc\t3\n"
        assert run(env, "postmap", "-s", f"lmdb:{path}").stdout == expected
        assert run(env, "postmap", "-s", f"lmdb:{path}", debian=True).stdout == expected

    def test_delete_from_a_missing_file_creates_it(self, env):
        for debian in (False, True):
            path = str(env / f"missing-{debian}")
            done = run(env, "postmap", "-d", "k", f"lmdb:{path}", debian=debian)
            assert (done.returncode, done.stdout, done.stderr) == (1, "", "")
            assert Path(path + ".lmdb").exists()

    def test_no_nul_files_cross_over(self, env):
        path = source(env, "k v\n")
        run(env, "postmap", "-n", f"lmdb:{path}", debian=True)
        assert run(env, "postmap", "-q", "k", f"lmdb:{path}").stdout == "v\n"
        run(env, "postmap", "-n", f"lmdb:{path}")
        assert run(env, "postmap", "-q", "k", f"lmdb:{path}", debian=True).stdout == "v\n"

    def test_postfix_reads_while_ours_writes(self, env):
        """Both sides take fcntl locks on the file (Postfix's protocol): Debian's
        readers see every committed update and never a torn one."""
        name = str(env / "busy")
        table = create_table(f"lmdb:{name}", create=True)
        table.update("stable", "kept")
        stop = threading.Event()

        def write():
            i = 0
            while not stop.is_set() and i < 5000:
                table.update(f"k{i}", "v" * 100)
                i += 1
        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(20):
                done = run(env, "postmap", "-q", "stable", f"lmdb:{name}", debian=True)
                assert (done.returncode, done.stdout, done.stderr) == (0, "kept\n", "")
        finally:
            stop.set()
            writer.join(60)
        assert run(env, "postmap", "-q", "k0", f"lmdb:{name}", debian=True).stdout == \
            "v" * 100 + "\n"

    def test_postalias_parity(self, env):
        path = source(env, "postmaster: root\nList: a, b\n", "aliases")
        run(env, "postalias", f"lmdb:{path}")
        assert run(env, "postalias", "-q", "list", f"lmdb:{path}", debian=True).stdout == \
            "a, b\n"
        run(env, "postalias", f"lmdb:{path}", debian=True)
        assert run(env, "postalias", "-s", f"lmdb:{path}").stdout == \
            run(env, "postalias", "-s", f"lmdb:{path}", debian=True).stdout


class TestTable:
    def test_missing_file_is_unavailable_unless_created(self, tmp_path):
        with pytest.raises(TableUnavailable, match="No such file"):
            create_table(f"lmdb:{tmp_path / 'none'}").lookup("k")
        table = create_table(f"lmdb:{tmp_path / 'made'}", create=True)
        assert table.lookup("k") is None
        table.update("K", "v")
        assert table.lookup("k") == "v"

    def test_map_grows_when_full(self, tmp_path):
        config = tmp_path / "etc"
        config.mkdir()
        (config / "main.cf").write_text("lmdb_map_size = 65536\n")
        table = create_table(f"lmdb:{tmp_path / 'small'}", load_config(str(config)),
                             create=True)
        for i in range(400):
            table.update(f"key{i}@example.com", "v" * 200)
        assert table.lookup("key399@example.com") == "v" * 200
        # Another process's table, opened with the small map, reads it all.
        other = create_table(f"lmdb:{tmp_path / 'small'}", load_config(str(config)))
        assert sum(1 for _ in other.items()) == 400

    def test_reader_sees_a_rebuild(self, tmp_path, monkeypatch):
        monkeypatch.setattr(lmdb_table, "CHECK_INTERVAL", 0)
        name = str(tmp_path / "t")
        lmdb_table.build(name, [("k", "old")])
        table = create_table(f"lmdb:{name}")
        assert table.lookup("k") == "old"
        lmdb_table.build(name, [("k", "new")])
        assert table.lookup("k") == "new"

    def test_lookups_during_rebuilds_see_old_or_new(self, tmp_path, monkeypatch):
        monkeypatch.setattr(lmdb_table, "CHECK_INTERVAL", 0)
        name = str(tmp_path / "t")
        entries = [(f"k{i}", "v") for i in range(200)]
        lmdb_table.build(name, entries + [("gen", "0")])
        table = create_table(f"lmdb:{name}")
        stop = threading.Event()
        errors: list[BaseException] = []

        def rebuild():
            try:
                for generation in range(1, 40):
                    lmdb_table.build(name, entries + [("gen", str(generation))])
            except BaseException as e:     # reported below, not lost in the thread
                errors.append(e)
            finally:
                stop.set()
        writer = threading.Thread(target=rebuild)
        writer.start()
        seen = set()
        for _ in range(5000):
            if stop.is_set():
                break
            seen.add(table.lookup("gen"))
            assert table.lookup("k199") == "v"
        writer.join(60)
        assert not errors and None not in seen
        assert table.lookup("gen") == "39"

    def test_writers_in_two_processes_lose_nothing(self, tmp_path):
        name = str(tmp_path / "shared")
        script = ("import sys\nfrom pymaster.util.tables import create_table\n"
                  f"t = create_table('lmdb:{name}', create=True)\n"
                  "for i in range(150):\n    t.update(f'{sys.argv[1]}{i}', 'v')\n")
        procs = [subprocess.Popen([str(BIN / "python"), "-c", script, tag],
                                  cwd=Path(__file__).resolve().parents[1]) for tag in "ab"]
        assert [p.wait(120) for p in procs] == [0, 0]
        keys = {k for k, _ in create_table(f"lmdb:{name}").items()}
        assert len(keys) == 300

    def test_read_only_file_refuses_updates(self, tmp_path):
        name = str(tmp_path / "ro")
        lmdb_table.build(name, [("k", "v")], mode=0o444)
        table = create_table(f"lmdb:{name}")
        assert table.lookup("k") == "v"
        if shutil.os.geteuid() != 0:    # root writes anyway, as with any file
            with pytest.raises(TableError):
                table.update("k", "w")
