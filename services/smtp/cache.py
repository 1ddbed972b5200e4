"""Connection reuse: open sessions kept in the process for the next request.

After a delivery the client may keep its session open, keyed by the next
hop it served, so that the next message for that destination skips the
DNS lookups, the TCP handshake, the greeting and EHLO. Postfix does this
through its scache service; here each smtp process keeps its own cache,
which is enough because qmgr sends one process request after request.

A session is kept when smtp_connection_cache_on_demand = yes or its next
hop is listed in smtp_connection_cache_destinations; it is closed (QUIT)
when it has sat idle longer than smtp_connection_cache_time_limit, or
when it is older than smtp_connection_reuse_time_limit. A reused session
starts its next transaction with RSET (transaction.py). A background
thread closes sessions that expire while the process waits for work, so
a remote server never sees a connection held idle for long.

Interface:
    ConnectionCache(time_limit, reuse_limit, max_sessions=8)
    cache.take(key) -> Session | None   (the caller owns it until put back)
    cache.put(key, session)             (closes it if it may not be kept)
    cache.close_expired(), cache.close_all()
"""

from __future__ import annotations

import threading
import time

from services.smtp.session import Session


class ConnectionCache:
    """Idle sessions by next hop, at most MAX_SESSIONS of them."""

    def __init__(self, time_limit: float, reuse_limit: float, max_sessions: int = 8,
                 reaper: bool = True) -> None:
        self.time_limit = time_limit
        self.reuse_limit = reuse_limit
        self.max_sessions = max_sessions
        self._idle: dict[str, list[Session]] = {}
        self._lock = threading.Lock()
        if reaper and time_limit > 0:
            t = threading.Thread(target=self._reap, name="smtp-cache-reaper", daemon=True)
            t.start()

    def take(self, key: str) -> Session | None:
        """take - a live idle session for KEY, removed from the cache."""
        self.close_expired()
        with self._lock:
            sessions = self._idle.get(key)
            if not sessions:
                return None
            session = sessions.pop()
            if not sessions:
                del self._idle[key]
            return session

    def put(self, key: str, session: Session) -> None:
        """put - keep SESSION for KEY, or close it when it may not be kept."""
        now = time.monotonic()
        if not session.usable or now - session.created >= self.reuse_limit \
                or self.time_limit <= 0:
            session.close()
            return
        session.idle_since = now
        evicted = None
        with self._lock:
            self._idle.setdefault(key, []).append(session)
            if self._count() > self.max_sessions:
                evicted = self._oldest()
        if evicted is not None:
            evicted.close()

    def close_expired(self) -> None:
        """close_expired - QUIT the sessions idle or alive for too long."""
        now = time.monotonic()
        expired = []
        with self._lock:
            for key in list(self._idle):
                keep = []
                for s in self._idle[key]:
                    if now - s.idle_since >= self.time_limit or \
                            now - s.created >= self.reuse_limit:
                        expired.append(s)
                    else:
                        keep.append(s)
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
        for s in expired:
            s.close()

    def close_all(self) -> None:
        with self._lock:
            sessions = [s for group in self._idle.values() for s in group]
            self._idle.clear()
        for s in sessions:
            s.close()

    def __len__(self) -> int:
        with self._lock:
            return self._count()

    def _count(self) -> int:
        return sum(len(g) for g in self._idle.values())

    def _oldest(self) -> Session | None:
        """_oldest - remove and return the session idle longest (lock held)."""
        best_key, best = None, None
        for key, group in self._idle.items():
            for s in group:
                if best is None or s.idle_since < best.idle_since:
                    best_key, best = key, s
        if best is not None and best_key is not None:  # set together
            self._idle[best_key].remove(best)
            if not self._idle[best_key]:
                del self._idle[best_key]
        return best

    def _reap(self) -> None:
        interval = max(0.2, min(1.0, self.time_limit / 2))
        while True:
            time.sleep(interval)
            try:
                self.close_expired()
            except Exception:     # never let the reaper kill the process
                pass
