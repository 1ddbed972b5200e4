"""Connection reuse: open sessions kept for the next request, by any smtp process.

After a delivery the client may keep its session open so that the next
message for that destination (or that server) skips the DNS lookups, the
TCP handshake, the greeting and EHLO. A session is kept when the
destination is listed in smtp_connection_cache_destinations, or with
smtp_connection_cache_on_demand = yes when qmgr says the destination has
more mail waiting (deliver.py decides); it is not kept once it is older
than smtp_connection_reuse_time_limit or has carried
smtp_connection_reuse_count_limit transactions. A reused session starts
its next transaction with RSET (transaction.py).

Where it is kept (SessionCache):
  - with scache in master.cf, a plaintext session goes to scache
    (pymaster/mail/scache_client.py): the connection travels as a
    descriptor, with its endpoint label (transport, address, port, TLS
    level, SASL user) and what the server said to EHLO, and the
    destination label (transport:nexthop) is mapped to it, both for
    smtp_connection_cache_time_limit (scache cuts that to
    connection_cache_ttl_limit). Any smtp process then finds it by
    destination before it looks up hosts (find_dest), or by endpoint before
    it connects to an address (find_endp), so one connection carries mail
    that several processes deliver;
  - a TLS session stays in the process that made it: Python's ssl cannot
    hand its TLS state to another process with the descriptor. So only
    plaintext connections (TLS level none, or `may` where the server did
    not offer STARTTLS or the handshake failed) are shared;
  - without scache (not in master.cf, or down), every session stays in the
    process's own ConnectionCache, reused only by that process.
A process-own session is closed (QUIT) when it has sat idle longer than
smtp_connection_cache_time_limit; a background thread closes those that
expire while the process waits for work, so a remote server never sees a
connection held idle for long. scache closes its own expired ones.

Interface:
    SessionCache(settings, local, shared=None)
    sessions.find_dest(label) / sessions.find_endp(label) -> Session | None
    sessions.save(session, dest_label)   kept where it can be, or closed
    sessions.close_all()
    ConnectionCache(time_limit, reuse_limit, max_sessions=8, reuse_count=0)
    cache.take(key) -> Session | None   (the caller owns it until put back)
    cache.put(key, session)             (closes it if it may not be kept)
    cache.close_expired(), cache.close_all()
"""

from __future__ import annotations

import threading
import time

from pymaster.mail.scache_client import ScacheClient
from pymaster.util import fdpass
from services.smtp.session import Session
from services.smtp.settings import Settings


class SessionCache:
    """The sessions of one smtp process between requests: shared through
    scache when they can be, else kept here."""

    def __init__(self, settings: Settings, local: "ConnectionCache",
                 shared: ScacheClient | None = None) -> None:
        self.settings = settings
        self.local = local
        self.shared = shared

    def find_dest(self, label: str) -> Session | None:
        """find_dest - a session to the destination LABEL, ours or scache's."""
        session = self.local.take(label)
        if session is not None or self.shared is None:
            return session
        found = self.shared.find_dest(label)
        if found is None:
            return None
        _, endp_label, props, fd = found
        return self._adopt(fd, props, endp_label)

    def find_endp(self, label: str) -> Session | None:
        """find_endp - a session scache holds for the endpoint LABEL."""
        if self.shared is None:
            return None
        found = self.shared.find_endp(label)
        return None if found is None else self._adopt(found[1], found[0], label)

    def _adopt(self, fd: int, props: dict, label: str) -> Session | None:
        try:
            session = Session.adopt(fd, props, self.settings)
        except (OSError, ValueError, TypeError):
            fdpass.close_fds([fd])
            return None
        session.label = label
        return session

    def save(self, session: Session, dest_label: str) -> None:
        """save - keep SESSION for DEST_LABEL (and its endpoint), or close it."""
        if not self.local.reusable(session):
            session.close()
            return
        ttl = self.local.time_limit
        if self.shared is not None and not session.tls and session.label \
                and session.sock is not None \
                and self.shared.save_endp(session.label, session.props(),
                                          session.sock.fileno(), ttl):
            self.shared.save_dest(dest_label, {}, session.label, ttl)
            session.detach()            # scache holds the connection now
            return
        self.local.put(dest_label, session)

    def close_all(self) -> None:
        self.local.close_all()
        if self.shared is not None:
            self.shared.close()


class ConnectionCache:
    """Idle sessions by next hop, at most MAX_SESSIONS of them."""

    def __init__(self, time_limit: float, reuse_limit: float, max_sessions: int = 8,
                 reaper: bool = True, reuse_count: int = 0) -> None:
        self.time_limit = time_limit
        self.reuse_limit = reuse_limit
        self.reuse_count = reuse_count
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
        if not self.reusable(session):
            session.close()
            return
        session.idle_since = time.monotonic()
        evicted = None
        with self._lock:
            self._idle.setdefault(key, []).append(session)
            if self._count() > self.max_sessions:
                evicted = self._oldest()
        if evicted is not None:
            evicted.close()

    def reusable(self, session: Session) -> bool:
        """reusable - SESSION may be kept: usable, young enough, used few enough times."""
        return session.usable and self.time_limit > 0 \
            and time.monotonic() - session.created < self.reuse_limit \
            and not (self.reuse_count and session.uses >= self.reuse_count)

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
