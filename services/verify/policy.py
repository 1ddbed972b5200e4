"""When a cached verification answer is good, stale or gone, and when to probe.

The rules of Postfix's verify(8), over a VerifyCache (cache.py):

  - a verdict is good for address_verify_positive_expire_time (OK, 31d) or
    address_verify_negative_expire_time (DEFER/BOUNCE, 3d) after it came;
    after that the address is unknown again (TODO, "Address verification
    in progress")
  - a QUERY is answered at once; then, when the answer is older than
    address_verify_positive_refresh_time (7d) or
    address_verify_negative_refresh_time (3h), or there is none, a probe is
    sent, so a stale answer is still given while its refresh runs
  - at most one probe per address is in flight: a probe sent less than
    PROBE_TTL seconds ago and not yet answered stops another one (a probe
    that got lost is retried after that)
  - an UPDATE stores the verdict, except that a failed probe does not
    overwrite an OK answer that has not expired (the address stays OK; it
    is probed again at the next query)
  - address_verify_negative_cache = no: failed verdicts are not kept, and
    an address without an answer is not written to the map (its probe in
    flight is remembered in memory), so every lookup of it probes again
  - address_verify_pending_request_limit: no new probe while that many are
    in flight (Postfix's queue manager enforces this by deferring probes;
    here the verify service simply sends none, and smtpd keeps getting
    "in progress", a temporary answer)
  - every address_verify_cache_cleanup_interval (12h; 0: never) the rows
    that expired and have no probe in flight are deleted; the time of the
    last cleanup is kept in the map, so short-lived processes still run it

Addresses are folded to lower case.

Interface:
    Settings.from_config(cfg)
    Verifier(settings, cache, send_probe, clock=time.time)
        .query(address) -> (status, text)   send_probe(address) -> bool is called as needed
        .update(address, status, text) -> bool   False: not cached (negative cache off)
        .cleanup_due() -> (retained, dropped) | None
    IN_PROGRESS   the TODO text
    PROBE_TTL     seconds a probe counts as in flight
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

from pymaster.mail.config import Config
from pymaster.mail.verify_client import OK, TODO
from pymaster.util import log

from .cache import Entry, VerifyCache
from .tablecache import TableCache

IN_PROGRESS = "Address verification in progress"
PROBE_TTL = 1000                # as Postfix: a probe unanswered this long is lost
LAST_CLEANUP = "last_cleanup"   # meta row: time of the last cache cleanup
LIMIT_WARNING_INTERVAL = 60     # seconds between "pending request limit" warnings


@dataclass(frozen=True)
class Settings:
    """The verify policy's parameters; their defaults are the table's."""
    positive_expire: int
    positive_refresh: int
    negative_expire: int
    negative_refresh: int
    negative_cache: bool
    pending_limit: int
    cleanup_interval: int

    @classmethod
    def from_config(cls, cfg: Config) -> "Settings":
        return cls(positive_expire=cfg.time("address_verify_positive_expire_time"),
                   positive_refresh=cfg.time("address_verify_positive_refresh_time"),
                   negative_expire=cfg.time("address_verify_negative_expire_time"),
                   negative_refresh=cfg.time("address_verify_negative_refresh_time"),
                   negative_cache=cfg.bool("address_verify_negative_cache"),
                   pending_limit=cfg.int("address_verify_pending_request_limit"),
                   cleanup_interval=cfg.time("address_verify_cache_cleanup_interval"))


class Verifier:
    """The verify service's answers, probes and cache upkeep."""

    def __init__(self, settings: Settings, cache: VerifyCache | TableCache,
                 send_probe: Callable[[str], bool],
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.cache = cache
        self.send_probe = send_probe
        self.clock = clock
        self.pending: dict[str, int] = {}   # probes in flight for addresses not in the map
        self._limit_warned = 0.0
        if cache.meta(LAST_CLEANUP) is None:
            cache.set_meta(LAST_CLEANUP, str(int(clock())))

    # -- the age of an entry -------------------------------------------------------
    def _probing(self, entry: Entry, now: int) -> bool:
        return entry.probed != 0 and now - entry.probed <= PROBE_TTL

    def _expired(self, entry: Entry, now: int) -> bool:
        s = self.settings
        life = s.positive_expire if entry.status == OK else s.negative_expire
        return entry.updated + life < now

    def _refresh_due(self, entry: Entry, now: int) -> bool:
        s = self.settings
        every = s.positive_refresh if entry.status == OK else s.negative_refresh
        return entry.updated + every < now

    # -- requests ------------------------------------------------------------------
    def query(self, address: str) -> tuple[str, str]:
        """query - the answer for ADDRESS now; a probe goes out when one is due."""
        key, now = address.lower(), int(self.clock())
        entry = self.cache.get(key)
        if entry is None or (entry.status == TODO and not self._probing(entry, now)) or \
                (not self._probing(entry, now) and self._expired(entry, now)):
            if entry is not None and not self.settings.negative_cache:
                self.cache.delete(key)
            entry = Entry(TODO, self.pending.get(key, 0), 0, IN_PROGRESS)
        answer = (entry.status, entry.text)
        if not self._probing(entry, now) and self._refresh_due(entry, now):
            self._probe(key, entry, now)
        return answer

    def _probe(self, key: str, entry: Entry, now: int) -> None:
        if self._in_flight(now) >= self.settings.pending_limit > 0:
            if now - self._limit_warned >= LIMIT_WARNING_INTERVAL:
                self._limit_warned = now
                log.warning(f"address_verify_pending_request_limit "
                            f"({self.settings.pending_limit}) reached: not probing {key}")
            return
        if not self.send_probe(key):
            return
        if entry.updated or self.settings.negative_cache:
            self.cache.put(key, replace(entry, probed=now))
        else:
            self.pending[key] = now

    def _in_flight(self, now: int) -> int:
        for key in [k for k, when in self.pending.items() if now - when > PROBE_TTL]:
            del self.pending[key]
        return self.cache.probing_count(now - PROBE_TTL) + len(self.pending)

    def update(self, address: str, status: str, text: str) -> bool:
        """update - a probe's verdict for ADDRESS; False when it is not kept."""
        key, now = address.lower(), int(self.clock())
        self.pending.pop(key, None)
        entry = self.cache.get(key)
        if status != OK and entry is not None and entry.status == OK \
                and not self._expired(entry, now):
            # Robustness, as Postfix: one failed probe does not turn a known
            # good address bad before its answer expires.
            self.cache.put(key, replace(entry, probed=0))
            return True
        if status != OK and not self.settings.negative_cache:
            if entry is not None:
                self.cache.delete(key)
            return False
        self.cache.put(key, Entry(status, 0, now, text))
        return True

    # -- upkeep --------------------------------------------------------------------
    def cleanup_due(self) -> tuple[int, int] | None:
        """cleanup_due - run the periodic cache cleanup if it is due: (retained, dropped)."""
        interval = self.settings.cleanup_interval
        now = int(self.clock())
        last = int(self.cache.meta(LAST_CLEANUP) or 0)
        if interval <= 0 or now - last < interval:
            return None
        counts = self.cache.sweep(lambda e: self._probing(e, now) or
                                  (e.status != TODO and not self._expired(e, now)))
        self.cache.set_meta(LAST_CLEANUP, str(now))
        return counts
