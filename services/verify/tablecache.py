"""The verify cache in a writable lookup table: lmdb:, memcache:, proxy:…

When address_verify_map names a table that pymaster can update in place
(`lmdb:/var/lib/postfix/verify_cache`, `memcache:/etc/postfix/verify.cf`,
`proxy:lmdb:…` through proxywrite), the verify service keeps its answers
there instead of in its own SQLite file, so that several hosts (memcache)
or several instances (proxywrite) share them.

Entries are stored as Postfix's verify(8) stores them, one value per
address, `STATUS:PROBED:UPDATED:TEXT` with STATUS 0 (OK), 1 (DEFER),
2 (BOUNCE) or 3 (TODO), and the time of the last cleanup under the key
`_LAST_CACHE_CLEANUP_COMPLETED_`, so a cache shared with Postfix hosts
reads the same on both.

What a table cannot do:
  - count the probes in flight (address_verify_pending_request_limit): a
    table has no query for that, so the count is of the probes this process
    sent and has not heard back about;
  - list its entries when it has no sequence operation (memcache: without
    a backup): the cleanup then logs that it cannot run; set
    address_verify_cache_cleanup_interval = 0 there and let memcached's ttl
    expire the entries, as memcache_table(5) says.
A table that fails (the server is down) raises CacheError: the verify
request gets an error answer and smtpd its temporary failure.

Which settings are kept in a table, and how it is opened:
pymaster/master/cachefile.py (in_table, open_table), shared with postscreen.

Interface:
    TableCache(table)                    VerifyCache's interface (cache.py)
    encode(entry) -> str / decode(value) -> Entry | None
"""

from __future__ import annotations

from typing import Any, Callable

from pymaster.mail.verify_client import BOUNCE, DEFER, OK, TODO
from pymaster.util import log
from pymaster.util.tables import Table, TableError

from .cache import CacheError, Entry

STATUS_CODES = {OK: 0, DEFER: 1, BOUNCE: 2, TODO: 3}     # Postfix's DEL_RCPT_STAT_*
STATUS_NAMES = {code: name for name, code in STATUS_CODES.items()}
META_KEYS = {"last_cleanup": "_LAST_CACHE_CLEANUP_COMPLETED_"}


def encode(entry: Entry) -> str:
    """encode - ENTRY as Postfix's verify(8) stores it."""
    return f"{STATUS_CODES[entry.status]}:{entry.probed}:{entry.updated}:{entry.text}"


def decode(value: str) -> Entry | None:
    """decode - a stored value as an Entry; None for one that is malformed."""
    parts = value.split(":", 3)
    if len(parts) != 4:
        return None
    try:
        status = STATUS_NAMES[int(parts[0])]
        return Entry(status, int(parts[1]), int(parts[2]), parts[3])
    except (KeyError, ValueError):
        return None


class TableCache:
    """Address verification results in a writable table."""

    def __init__(self, table: Table) -> None:
        for op in ("update", "delete"):
            if not hasattr(table, op):
                raise CacheError(f"table {table.spec} does not support updates")
        self.table: Any = table             # a Table with update and delete
        self.path = table.spec
        self.probes: dict[str, int] = {}     # address -> when this process probed it
        self.remembered: dict[str, str] = {}   # meta values, for when the table fails

    def _call(self, fn: Callable, *args):
        try:
            return fn(*args)
        except TableError as e:
            raise CacheError(str(e)) from None

    def get(self, address: str) -> Entry | None:
        value = self._call(self.table.lookup, address)
        if value is None:
            return None
        entry = decode(value)
        if entry is None:
            log.warning(f"{self.path}: bad cache entry for {address}: \"{value}\"")
        return entry

    def put(self, address: str, entry: Entry) -> None:
        if entry.probed:
            self.probes[address] = int(entry.probed)
        else:
            self.probes.pop(address, None)
        self._call(self.table.update, address, encode(entry))

    def delete(self, address: str) -> None:
        self.probes.pop(address, None)
        self._call(self.table.delete, address)

    def probing_count(self, since: float) -> int:
        """probing_count - this process's probes sent after SINCE, no verdict yet."""
        for address in [a for a, when in self.probes.items() if when <= since]:
            del self.probes[address]
        return len(self.probes)

    def sweep(self, keep: Callable[[Entry], bool]) -> tuple[int, int]:
        """sweep - delete every entry KEEP rejects; (retained, dropped).
        A table that cannot list its entries is left alone (logged)."""
        try:
            rows = [(k, v) for k, v in self.table.items() if k not in META_KEYS.values()]
        except TableError as e:
            log.warning(f"{self.path}: cache cleanup is not possible: {e}")
            return 0, 0
        dropped = 0
        for address, value in rows:
            entry = decode(value)
            if entry is None or not keep(entry):
                self.delete(address)
                dropped += 1
        return len(rows) - dropped, dropped

    def meta(self, name: str) -> str | None:
        """meta - NAME's value; the one this process last wrote when the table
        cannot answer (upkeep must not fail a request, nor the start-up)."""
        try:
            value = self.table.lookup(META_KEYS[name])
        except TableError as e:
            log.warning(str(e))
            return self.remembered.get(name)
        return value if value is not None else self.remembered.get(name)

    def set_meta(self, name: str, value: str) -> None:
        self.remembered[name] = value
        try:
            self.table.update(META_KEYS[name], value)
        except TableError as e:
            log.warning(str(e))

    def close(self) -> None:
        close = getattr(self.table, "close", None)
        if close is not None:
            close()
