"""The verify service's cache of address verification results (address_verify_map).

One row per address: (status, probed, updated, text), as Postfix's verify(8)
keeps them. status is OK, DEFER, BOUNCE or TODO; probed is the time the
outstanding probe was sent (0: none); updated the time of the last verdict
(0: none yet); text the reason given to smtpd.

Format: an SQLite database. postconf(5)'s default `btree:$data_directory/verify_cache`
names a Berkeley DB file that Python here cannot write, and pymaster's own
`hash:`/`btree:` files are constant databases rebuilt whole by postmap. The
cache needs single-row updates that survive a crash of the process at any
moment, which SQLite gives with its write-ahead log; so `TYPE:NAME` (btree,
hash, lmdb, sdbm, dbm; a `proxy:` prefix is ignored) is kept in
`NAME.sqlite`, beside any Postfix `NAME.db` it must not touch. An empty
address_verify_map keeps the cache in memory only. Updates are committed one
by one with synchronous=NORMAL: a crashed process loses nothing, a power loss
may lose the last verdicts, which only means probing those addresses again.

The database is opened before the service enters its chroot jail (the WAL
files too, by a first read), so it works when master.cf chroots verify.
A new database (and its WAL files) is created mode 0600: the addresses
asked about are nobody else's business. Addresses are attacker-chosen:
they are bound as parameters, never spliced into SQL, and text that is not
UTF-8 (an 8-bit address kept as surrogate escapes) is stored with
backslash escapes instead of failing the request.

Interface:
    Entry(status, probed, updated, text)
    cache_path(spec) -> str | None          None: memory only; CacheError: bad spec
    VerifyCache(path=None)                  .get(address) -> Entry | None
        .put(address, entry) .delete(address)
        .probing_count(since) -> int        probes sent after SINCE, no verdict yet
        .sweep(keep) -> (retained, dropped) drop the rows KEEP(entry) says no to
        .meta(name) -> str | None / .set_meta(name, value)
        .close()
    CacheError                              cannot open or use the database
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import Callable

from pymaster.master import cachefile

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries (address TEXT PRIMARY KEY, status TEXT NOT NULL,"
    " probed INTEGER NOT NULL, updated INTEGER NOT NULL, text TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class CacheError(Exception):
    """The cache database cannot be opened or used."""


@dataclass(frozen=True)
class Entry:
    status: str
    probed: int
    updated: int
    text: str


def cache_path(spec: str) -> str | None:
    """cache_path - the database file for address_verify_map SPEC; None for memory."""
    try:
        return cachefile.sqlite_path("address_verify_map", spec)
    except cachefile.CacheFileError as e:
        raise CacheError(str(e)) from None


def _storable(text: str) -> str:
    """_storable - TEXT as SQLite can take it: surrogate escapes (bytes that
    were not UTF-8) become backslash escapes."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "backslashreplace")


class VerifyCache:
    """Address verification results, in SQLite (a file, or memory when PATH is None)."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        old_umask = os.umask(0o077)     # SQLite creates its files with 0644
        try:
            self.db = sqlite3.connect(path or ":memory:", isolation_level=None)
            if path:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                self.db.execute(statement)
            # A first read opens the WAL and shared-memory files now, before a chroot.
            self.db.execute("SELECT count(*) FROM entries").fetchone()
        except sqlite3.Error as e:
            raise CacheError(f"open {path or 'memory cache'}: {e}") from None
        finally:
            os.umask(old_umask)

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        args = tuple(_storable(a) if isinstance(a, str) else a for a in args)
        try:
            return self.db.execute(sql, args)
        except sqlite3.Error as e:
            raise CacheError(f"{self.path or 'memory cache'}: {e}") from None

    def get(self, address: str) -> Entry | None:
        row = self._run("SELECT status, probed, updated, text FROM entries WHERE address = ?",
                        (address,)).fetchone()
        return Entry(*row) if row else None

    def put(self, address: str, entry: Entry) -> None:
        self._run("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)",
                  (address, entry.status, int(entry.probed), int(entry.updated), entry.text))

    def delete(self, address: str) -> None:
        self._run("DELETE FROM entries WHERE address = ?", (address,))

    def probing_count(self, since: float) -> int:
        """probing_count - rows whose probe went out after SINCE (still in flight)."""
        return self._run("SELECT count(*) FROM entries WHERE probed > ?",
                         (int(since),)).fetchone()[0]

    def sweep(self, keep: Callable[[Entry], bool]) -> tuple[int, int]:
        """sweep - delete every row KEEP rejects; (retained, dropped)."""
        rows = self._run("SELECT address, status, probed, updated, text FROM entries").fetchall()
        drop = [(address,) for address, *rest in rows if not keep(Entry(*rest))]
        if drop:
            try:
                self.db.execute("BEGIN")
                self.db.executemany("DELETE FROM entries WHERE address = ?", drop)
                self.db.execute("COMMIT")
            except sqlite3.Error as e:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise CacheError(f"{self.path or 'memory cache'}: {e}") from None
        return len(rows) - len(drop), len(drop)

    def meta(self, name: str) -> str | None:
        row = self._run("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        self._run("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass
