"""postscreen's cache of client test results (postscreen_cache_map).

One row per client address; the value is Postfix's: the expiry times of
the pregreet, DNSBL, pipelining, non-SMTP command and bare newline tests,
`pregr;dnsbl;pipel;nsmtp;barlf`, seconds since the epoch. A test whose
time is in the future has passed and need not run again; 0 is a test never
passed, 1 one that was disabled when the row was written (it runs once it
is enabled and the row is older).

Format: an SQLite database at NAME.sqlite for `btree:NAME`
(pymaster.master.cachefile says why and where); its write-ahead log lets
several postscreen processes share it (readers do not block the writer).
An empty postscreen_cache_map keeps the cache in memory.

Every postscreen_cache_cleanup_interval the rows whose every test expired
more than postscreen_cache_retention_time ago are deleted, and the
cleanup is logged as Postfix does: `cache NAME full cleanup: retained=R
dropped=D entries`.

Interface:
    Stamps(pregr, dnsbl, pipel, nsmtp, barlf)   .text() / Stamps.parse(text)
    ClientCache(path, label)  .get(addr) -> Stamps | None  .put(addr, stamps)
        .cleanup(now, retention)  .close()
    CacheError
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import astuple, dataclass

from pymaster.util import log

NEVER = 0
DISABLED = 1


class CacheError(Exception):
    """The cache cannot be opened or used."""


@dataclass
class Stamps:
    pregr: int = NEVER
    dnsbl: int = NEVER
    pipel: int = NEVER
    nsmtp: int = NEVER
    barlf: int = NEVER

    def text(self) -> str:
        return ";".join(str(int(v)) for v in astuple(self))

    @classmethod
    def parse(cls, text: str) -> "Stamps | None":
        """parse - a row's value; None for one this version cannot read."""
        try:
            values = [int(v) for v in text.split(";")]
        except ValueError:
            return None
        if len(values) != 5:
            return None
        return cls(*values)

    def latest(self) -> int:
        return max(astuple(self))


class ClientCache:
    def __init__(self, path: str | None, label: str = "") -> None:
        self.path = path
        self.label = label or (path or "memory")
        old_umask = os.umask(0o077)
        try:
            self.db = sqlite3.connect(path or ":memory:", isolation_level=None, timeout=5)
            if path:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS clients "
                            "(address TEXT PRIMARY KEY, value TEXT NOT NULL)")
            # A first read opens the WAL files now, before a chroot.
            self.db.execute("SELECT count(*) FROM clients").fetchone()
        except sqlite3.Error as e:
            raise CacheError(f"open {path or 'memory cache'}: {e}") from None
        finally:
            os.umask(old_umask)

    def get(self, address: str) -> Stamps | None:
        try:
            row = self.db.execute("SELECT value FROM clients WHERE address = ?",
                                  (address,)).fetchone()
        except sqlite3.Error as e:
            log.warning(f"{self.label}: lookup {address}: {e}")
            return None
        return Stamps.parse(row[0]) if row else None

    def put(self, address: str, stamps: Stamps) -> None:
        try:
            self.db.execute("INSERT OR REPLACE INTO clients VALUES (?, ?)",
                            (address, stamps.text()))
        except sqlite3.Error as e:
            log.warning(f"{self.label}: update {address}: {e}")

    def cleanup(self, now: float, retention: int) -> tuple[int, int]:
        """cleanup - drop rows expired RETENTION seconds ago; (retained, dropped)."""
        try:
            rows = self.db.execute("SELECT address, value FROM clients").fetchall()
            drop = []
            for address, value in rows:
                stamps = Stamps.parse(value)
                if stamps is None or stamps.latest() + retention < now:
                    drop.append((address,))
            if drop:
                self.db.executemany("DELETE FROM clients WHERE address = ?", drop)
        except sqlite3.Error as e:
            log.warning(f"{self.label}: cleanup: {e}")
            return 0, 0
        log.info(f"cache {self.label} full cleanup: retained={len(rows) - len(drop)} "
                 f"dropped={len(drop)} entries")
        return len(rows) - len(drop), len(drop)

    def close(self) -> None:
        try:
            self.db.close()
        except sqlite3.Error:
            pass
