"""memcache: tables (pymaster.util.tables.memcache), per memcache_table(5),
against a real memcached; what ours stores, Debian's postmap reads and deletes."""

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from pymaster.util.tables import TableError, create_table
from pymaster.util.tables.memcache import parse_server
from tests.support.memcached import Memcached, available
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(bool(available()), reason=available() or "ok")

DEBIAN_POSTMAP = "/usr/sbin/postmap"
PYMASTER_POSTMAP = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "postmap")


@pytest.fixture(scope="module")
def server():
    with Memcached() as mc:
        yield mc


def table(tmp_path, server_spec, name="mc.cf", **settings):
    lines = [f"memcache = {server_spec}"] + [f"{k} = {v}" for k, v in settings.items()]
    cf = tmp_path / name
    cf.write_text("\n".join(lines) + "\n")
    return create_table(f"memcache:{cf}")


def test_update_lookup_delete(tmp_path, server):
    t = table(tmp_path, server.server, key_format="t1:%s")
    assert t.lookup("someone@example.com") is None
    t.update("Someone@Example.com", "value one")
    assert t.lookup("someone@EXAMPLE.com") == "value one"
    assert server.get(b"t1:someone@example.com") == \
        b"VALUE t1:someone@example.com 0 9\r\nvalue one\r\nEND\r\n"
    assert t.delete("someone@example.com") is True
    assert t.delete("someone@example.com") is False
    assert t.lookup("someone@example.com") is None


def test_flags_ttl_and_key_format_escapes(tmp_path, server):
    t = table(tmp_path, server.server, key_format="d:%d:%u:%2", flags=7, ttl=100)
    t.update("joe@mail.example.org", "x")
    assert server.get(b"d:mail.example.org:joe:example") == \
        b"VALUE d:mail.example.org:joe:example 7 1\r\nx\r\nEND\r\n"
    # A key without a domain cannot fill %d: no lookup, and no update.
    assert t.lookup("joe") is None
    t.update("joe", "y")
    assert server.get(b"d::joe:") == b"END\r\n"


def test_domain_list_limits_keys(tmp_path, server):
    t = table(tmp_path, server.server, key_format="dom:%s", domain="example.com")
    t.update("a@example.com", "in")
    t.update("a@example.net", "out")
    assert t.lookup("a@example.com") == "in"
    assert t.lookup("a@example.net") is None
    assert server.get(b"dom:a@example.net") == b"END\r\n"
    assert t.lookup("@example.com") is None


def test_keys_memcached_cannot_take_are_not_found(tmp_path, server):
    t = table(tmp_path, server.server, key_format="k:%s")
    assert t.lookup("a b") is None
    assert t.lookup("x" * 300) is None
    t.update("a b", "never stored")
    assert server.get(b"k:a") == b"END\r\n"


def test_data_size_limit(tmp_path, server):
    t = table(tmp_path, server.server, key_format="big:%s", data_size_limit=10, max_try=1)
    t.update("k", "0123456789abc")
    with pytest.raises(TableError, match="longer than 10 bytes"):
        t.lookup("k")


def test_server_down_is_a_temporary_failure(tmp_path):
    down = Memcached()                      # a port with nobody listening
    t = table(tmp_path, down.server, max_try=3, retry_pause=5)
    with pytest.raises(TableError, match="Connection refused"):
        t.lookup("k")                       # refused: not retried (no 10 s pause)
    with pytest.raises(TableError):
        t.update("k", "v")


def test_server_restart_reconnects(tmp_path):
    with Memcached() as mc:
        t = table(tmp_path, mc.server, retry_pause=0)
        t.update("k", "v")
        mc.stop()
        with pytest.raises(TableError):
            t.lookup("k")
        mc.start()
        assert t.lookup("k") is None        # memcached forgets everything
        t.update("k", "w")
        assert t.lookup("k") == "w"


def test_backup_answers_misses_and_gets_every_write(tmp_path, server):
    backup_cf = tmp_path / "mc-backup.cf"
    backup_cf.write_text(f"memcache = {server.server}\nkey_format = persistent:%s\n")
    t = table(tmp_path, server.server, key_format="cache:%s", backup=f"memcache:{backup_cf}")
    backing = create_table(f"memcache:{backup_cf}")
    backing.update("only@backup.example", "from backup")
    assert t.lookup("only@backup.example") == "from backup"
    # The backup's answer is now cached under the table's own key.
    assert b"from backup" in server.get(b"cache:only@backup.example")
    t.update("both@example.com", "v")
    assert backing.lookup("both@example.com") == "v"
    assert t.delete("both@example.com") is True
    assert backing.lookup("both@example.com") is None


def test_backup_covers_a_cache_that_is_down(tmp_path, server):
    backup_cf = tmp_path / "mc-backup2.cf"
    backup_cf.write_text(f"memcache = {server.server}\nkey_format = p2:%s\n")
    create_table(f"memcache:{backup_cf}").update("k", "kept")
    t = table(tmp_path, Memcached().server, backup=f"memcache:{backup_cf}")
    assert t.lookup("k") == "kept"


def test_sequence_needs_a_backup(tmp_path, server):
    assert list(table(tmp_path, server.server).items()) == []


def test_unix_socket_server(tmp_path):
    path = tmp_path / "mc.sock"
    argv = ["memcached", "-s", str(path), "-U", "0", "-m", "8"]
    proc = subprocess.Popen(argv + (["-u", "root"] if os.geteuid() == 0 else []))
    try:
        wait_until(path.exists, 10, "memcached's unix socket")
        t = table(tmp_path, f"unix:{path}")
        t.update("k", "over unix")
        assert t.lookup("k") == "over unix"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("spec, expected", [
    ("inet:127.0.0.1:11211", (socket.AF_INET, ("127.0.0.1", 11211))),
    ("inet:[::1]:11211", (socket.AF_INET6, ("::1", 11211))),
    ("localhost:11211", (socket.AF_INET, ("localhost", 11211))),
    ("unix:/run/mc.sock", (socket.AF_UNIX, "/run/mc.sock")),
])
def test_parse_server(spec, expected):
    assert parse_server(spec) == expected


@pytest.mark.skipif(not shutil.which(DEBIAN_POSTMAP), reason="Debian's postfix is not installed")
class TestPostfixParity:
    """Debian's postmap reads what ours stored, and deletes it for ours."""

    def debian(self, tmp_path, *args):
        etc = tmp_path / "etc"
        etc.mkdir(exist_ok=True)
        (etc / "main.cf").touch()
        return subprocess.run([DEBIAN_POSTMAP, "-c", str(etc), *args],
                              capture_output=True, text=True, timeout=30)

    def test_postfix_reads_ours_and_deletes_for_ours(self, tmp_path, server):
        t = table(tmp_path, server.server, key_format="parity:%s")
        t.update("Joe@Example.com", "joe@mailbox.example, other")
        cf = f"memcache:{tmp_path / 'mc.cf'}"
        done = self.debian(tmp_path, "-q", "joe@example.com", cf)
        assert (done.returncode, done.stdout) == (0, "joe@mailbox.example, other\n")
        assert self.debian(tmp_path, "-d", "joe@example.com", cf).returncode == 0
        assert t.lookup("joe@example.com") is None

    def test_server_down_says_the_same(self, tmp_path):
        table(tmp_path, Memcached().server)          # nothing listens there
        cf = f"memcache:{tmp_path / 'mc.cf'}"
        theirs = self.debian(tmp_path, "-q", "k", cf)
        mine = subprocess.run([PYMASTER_POSTMAP, "-c", str(tmp_path / "etc"), "-q", "k", cf],
                              capture_output=True, text=True, timeout=30)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr)
        assert mine.returncode == 1 and "query error: Connection refused" in mine.stderr

    def test_listing_without_a_backup(self, tmp_path, server):
        table(tmp_path, server.server)
        cf = f"memcache:{tmp_path / 'mc.cf'}"
        theirs = self.debian(tmp_path, "-s", cf)
        mine = subprocess.run([PYMASTER_POSTMAP, "-c", str(tmp_path / "etc"), "-s", cf],
                              capture_output=True, text=True, timeout=30)
        assert (mine.returncode, mine.stdout, mine.stderr) == \
            (theirs.returncode, theirs.stdout, theirs.stderr)
        assert "first/next support requires backup database" in mine.stderr

    def test_same_answers_for_missing_and_unusable_keys(self, tmp_path, server):
        table(tmp_path, server.server, key_format="parity2:%s")
        cf = f"memcache:{tmp_path / 'mc.cf'}"
        for key in ("nobody@example.com", "a b"):
            theirs = self.debian(tmp_path, "-q", key, cf)
            mine = subprocess.run([PYMASTER_POSTMAP, "-c", str(tmp_path / "etc"), "-q", key, cf],
                                  capture_output=True, text=True, timeout=30)
            assert (mine.returncode, mine.stdout, mine.stderr) == \
                (theirs.returncode, theirs.stdout, theirs.stderr) == (1, "", "")
