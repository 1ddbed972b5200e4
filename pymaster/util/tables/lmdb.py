"""lmdb: tables: an OpenLDAP LMDB file, read and written in place, per lmdb_table(5).

`lmdb:/etc/postfix/virtual` is the file `/etc/postfix/virtual.lmdb` (one
file, no lock file beside it). postmap and postalias build it from the text
file; postmap -i/-d, proxywrite and the verify cache update it in place.

The file is Postfix's own: keys and values are stored with a terminating
NUL byte (Postfix's default for this type), a lookup tries the key with and
then without one (a file built with postmap -n), so Debian's postmap reads
what pymaster wrote and the other way round.

Locking is Postfix's, not LMDB's: LMDB's lock file would have to be
writable by every reader, so Postfix opens the environment without it
(MDB_NOLOCK) and wraps every transaction in an fcntl(2) lock on the
database file itself, shared to read and exclusive to write. pymaster does
the same, so its processes and Postfix's tools may share a file; a lock
inside the process (threads) comes first, since fcntl locks are per process.

A writer whose transaction finds the map full doubles the map size and
tries again (lmdb_map_size is the start); a reader whose map became too
small for what another process wrote takes the new size. postmap rebuilds
a table in a new file renamed over the old one; readers and writers look
at the file's inode at most every CHECK_INTERVAL seconds (writers before
each write) and reopen, so a rebuild is never seen half-done.

The Python binding (py-lmdb, the PyPI package `lmdb`) is imported when a
table of this type is first opened (or prepared, before a chroot), so a
system without lmdb: tables does not need it; `postfix check` names an
lmdb: table when it is missing.

Interface:
    LmdbTable(type, name, cfg=None, fold=True, create=False, nul=True)
        .lookup(key) .update(key, value) .delete(key) -> bool .items()
        create=True: a missing file is created empty (proxywrite, the verify cache)
    build(name, entries, map_size, nul=True, mode=0o644) -> path   postmap's bulk build
    SUFFIX, DEFAULT_MAP_SIZE
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from pymaster.util.tables import CHECK_INTERVAL, Table, TableError, TableUnavailable

SUFFIX = ".lmdb"
DEFAULT_MAP_SIZE = 16777216             # postconf(5) lmdb_map_size
_SURR = "surrogateescape"


def _binding():
    """_binding - the py-lmdb module, or a TableError saying what to install."""
    try:
        import lmdb
    except ImportError:
        raise TableError("lmdb: tables need the Python module lmdb "
                         "(pip install lmdb)") from None
    return lmdb


def _open_env(path: str, map_size: int, readonly: bool):
    """_open_env - an LMDB environment on the single file PATH, without LMDB's locks."""
    return _binding().open(path, subdir=False, lock=False, readonly=readonly,
                           map_size=map_size, max_dbs=0, readahead=False,
                           create=not readonly)


def _encoded(text: str, nul: bool) -> bytes:
    raw = text.encode("utf-8", _SURR)
    return raw + b"\0" if nul else raw


def _decoded(raw: bytes) -> str:
    return (raw[:-1] if raw.endswith(b"\0") else raw).decode("utf-8", _SURR)


class _Handle:
    """One open file: py-lmdb allows one environment per file and process, so
    every table of the process on that file (by inode) shares it, with the
    descriptor for the fcntl locks and the lock between threads."""

    def __init__(self, path: str, inode: tuple[int, int], map_size: int) -> None:
        self.inode = inode
        self.users = 0
        self.lock = threading.RLock()
        writable = os.access(path, os.W_OK)
        self.fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        try:
            with self.flock(fcntl.LOCK_SH):
                self.env = _open_env(path, map_size, readonly=not writable)
        except BaseException:
            os.close(self.fd)
            raise
        self.readonly = not writable
        self.closed = False

    @contextmanager
    def flock(self, how: int):
        """flock - Postfix's fcntl lock on the database file, for one transaction."""
        fcntl.lockf(self.fd, how)
        try:
            yield
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.closed = True
        self.env.close()
        os.close(self.fd)


_handles: dict[tuple[int, int], _Handle] = {}
_handles_lock = threading.Lock()


def _acquire(path: str, inode: tuple[int, int], map_size: int) -> _Handle:
    with _handles_lock:
        handle = _handles.get(inode)
        if handle is None:
            handle = _handles[inode] = _Handle(path, inode, map_size)
        handle.users += 1
        return handle


def _release(handle: _Handle) -> None:
    with _handles_lock:
        handle.users -= 1
        if handle.users == 0 and _handles.get(handle.inode) is handle:
            del _handles[handle.inode]
            with handle.lock:
                handle.close()


class LmdbTable(Table):
    """lmdb:/path (the file /path.lmdb)."""

    creatable = True    # takes create=True: a writer (proxywrite) may start a new file
    driver = "lmdb"
    driver_package = "lmdb"

    @classmethod
    def prepare(cls) -> None:
        try:
            _binding()
        except TableError:
            pass                # the table's opening says so

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True,
                 create: bool = False, nul: bool = True, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.path = self.db_path = name + SUFFIX
        self.fold = fold
        self.create = create
        self.nul = nul
        self.map_size = cfg.int("lmdb_map_size") if cfg is not None else DEFAULT_MAP_SIZE
        _binding()                          # fail at open, not at the first lookup
        self._lock = threading.RLock()      # this table's own state
        self._handle: _Handle | None = None
        self._checked = 0.0
        try:
            # Opened now, so that a service that chroots next keeps it open.
            self._current()
        except TableError:
            pass                            # the first lookup reports it

    # -- opening and reopening ----------------------------------------------
    def _current(self, force_check: bool = False) -> _Handle:
        """_current - the open file, reopened when the file was replaced."""
        now = time.monotonic()
        if self._handle is not None and not force_check \
                and now - self._checked < CHECK_INTERVAL:
            return self._handle
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._handle is not None:
                # Deleted, or out of sight in a chroot jail: keep the open
                # file, as file tables do (never create another in the jail).
                return self._handle
            if not self.create:
                raise TableUnavailable(self.spec, f"open database {self.path}: "
                                       "No such file or directory") from None
            try:
                st = self._make_empty()
            except OSError as e:
                raise TableUnavailable(self.spec, f"create database {self.path}: "
                                       f"{e.strerror}") from None
        except OSError as e:
            raise TableUnavailable(self.spec, f"open database {self.path}: {e.strerror}") \
                from None
        if self._handle is None or (st.st_dev, st.st_ino) != self._handle.inode:
            self._reopen((st.st_dev, st.st_ino))
        assert self._handle is not None
        return self._handle

    def _make_empty(self) -> os.stat_result:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        os.close(fd)
        return os.stat(self.path)

    def _reopen(self, inode: tuple[int, int]) -> None:
        self._close()
        try:
            self._handle = _acquire(self.path, inode, self.map_size)
        except OSError as e:
            raise TableUnavailable(self.spec, f"open database {self.path}: {e.strerror}") \
                from None
        except _binding().Error as e:
            raise TableUnavailable(self.spec, f"open database {self.path}: {e}") from None

    def _close(self) -> None:
        if self._handle is not None:
            _release(self._handle)
        self._handle = None

    # -- transactions --------------------------------------------------------
    @contextmanager
    def _held(self, force_check: bool) -> Iterator[_Handle]:
        """_held - the current file with its thread lock held: another thread
        of this table may have closed the handle it found after a rebuild,
        so one found closed is looked up again."""
        while True:
            with self._lock:
                handle = self._current(force_check)
            handle.lock.acquire()
            if not handle.closed:
                break
            handle.lock.release()
            force_check = True
        try:
            yield handle
        finally:
            handle.lock.release()

    def _read(self, fn, force_check: bool = False):
        """_read - FN(transaction) in a read transaction under a shared lock."""
        lmdb = _binding()
        with self._held(force_check) as handle:
            env = handle.env
            for _ in range(2):
                try:
                    with handle.flock(fcntl.LOCK_SH), env.begin(buffers=False) as txn:
                        return fn(txn)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)      # another process grew the map: adopt its size
                except lmdb.Error as e:
                    raise TableError(f"{self.spec}: {e}") from None
            raise TableError(f"{self.spec}: map resized while reading")

    def _write(self, fn):
        """_write - FN(transaction) in a write transaction under an exclusive
        lock; a full map is doubled and the transaction run again."""
        lmdb = _binding()
        with self._held(force_check=True) as handle:
            env = handle.env
            if handle.readonly:
                raise TableError(f"{self.spec}: open database {self.path}: "
                                 "Permission denied")
            while True:
                try:
                    with handle.flock(fcntl.LOCK_EX), env.begin(write=True) as txn:
                        return fn(txn)
                except lmdb.MapFullError:
                    env.set_mapsize(env.info()["map_size"] * 2)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)
                except lmdb.Error as e:
                    raise TableError(f"{self.spec}: {e}") from None

    # -- the table interface -------------------------------------------------
    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        raw = key.encode("utf-8", _SURR)

        def get(txn):
            value = txn.get(raw + b"\0")
            return txn.get(raw) if value is None else value
        value = self._read(get)
        return None if value is None else _decoded(value)

    def update(self, key: str, value: str) -> None:
        """update - store VALUE under KEY (replacing either NUL form of it)."""
        if self.fold:
            key = key.lower()
        k, v = _encoded(key, self.nul), _encoded(value, self.nul)

        def put(txn):
            txn.delete(_encoded(key, not self.nul))
            txn.put(k, v)
        self._write(put)

    def delete(self, key: str) -> bool:
        """delete - remove KEY; False when it was not there."""
        if self.fold:
            key = key.lower()

        def remove(txn):
            with_nul = txn.delete(_encoded(key, True))
            return txn.delete(_encoded(key, False)) or with_nul
        return bool(self._write(remove))

    def items(self) -> Iterator[tuple[str, str]]:
        pairs = self._read(lambda txn: list(txn.cursor()), force_check=True)
        return ((_decoded(k), _decoded(v)) for k, v in pairs)

    def close(self) -> None:
        with self._lock:
            self._close()


def build(name: str, entries: Iterable[tuple[str, str]], map_size: int = DEFAULT_MAP_SIZE,
          nul: bool = True, mode: int = 0o644) -> str:
    """build - write NAME.lmdb afresh from ENTRIES; returns its path.

    The new database is written beside the old one and renamed over it, so a
    reader sees the old table or the new one, never a mix."""
    path = name + SUFFIX
    temp = f"{path}.{os.getpid()}.tmp"
    pairs = [(_encoded(k, nul), _encoded(v, nul)) for k, v in entries]
    lmdb = _binding()
    try:
        while True:
            if os.path.exists(temp):
                os.unlink(temp)
            env = _open_env(temp, map_size, readonly=False)
            try:
                with env.begin(write=True) as txn:
                    for k, v in pairs:
                        txn.put(k, v)
                env.sync(True)
                break
            except lmdb.MapFullError:
                map_size *= 2
            finally:
                env.close()
        os.chmod(temp, mode)
        os.rename(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path
