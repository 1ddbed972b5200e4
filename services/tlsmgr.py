"""tlsmgr: the TLS session cache and PRNG seed keeper (Postfix's tlsmgr(8)).

One process (master.cf `tlsmgr unix - - n 1000? 1 tlsmgr`) keeps, per cache
type (smtpd, smtp, lmtp), the sessions its clients store, each for the
cache's timeout (smtpd_tls_session_cache_timeout,
smtp_tls_session_cache_timeout, lmtp_tls_session_cache_timeout). A cache
type is enabled when its *_tls_session_cache_database is set, as in
Postfix; the sessions are kept in memory only (Postfix, too, empties the
databases at every start), so the database's file is never written.

What uses it: Python's ssl module can neither export a session
(SSLSession has no serialised form) nor share the server's ticket keys or
session cache between processes. So smtp and smtpd cannot hand their
sessions to this process: each process resumes only the sessions it made
itself. The cache answers any client that has bytes to store (a session
in its serialised ASN.1 form, for a future client built on a library that
has one); the protocol below is the whole of it.

PRNG duties: tls_random_exchange_name (default ${data_directory}/prng_exch)
is opened at start (pre_jail) and rewritten with 1024 bytes of
os.urandom() then and every tls_random_prng_update_period, so an
administrator's tools that expect the file find a fresh one. The kernel's
generator is the only entropy source Python's ssl uses.

Requests (JSON headers over the brokered endpoint private/tlsmgr; session
bytes travel as the one payload frame):
    {"op": "policy", "cache_type": T}  -> {"status": "ok", "cachable": bool, "timeout": S}
    {"op": "lookup", "cache_type": T, "cache_id": ID}  -> {"status": "ok"} + [session]
                                                       or {"status": "fail"}
    {"op": "update", "cache_type": T, "cache_id": ID} + [session]  -> {"status": "ok"|"fail"}
    {"op": "delete", "cache_type": T, "cache_id": ID}  -> {"status": "ok"}
    {"op": "seed", "size": N}          -> {"status": "ok"} + [N random bytes, at most 255]
    {"op": "wakeup"}                   the master's timer: expire sessions, renew the seed file

Interface:
    SessionCaches(cfg, clock=time.monotonic).handle(header, payload) -> (header, payload)
    main()   the body of libexec/tlsmgr
"""

from __future__ import annotations

import os
import time
from typing import Callable

from pymaster.mail.config import Config
from pymaster.master import service
from pymaster.util import log

CACHE_TYPES = ("smtpd", "smtp", "lmtp")
MAX_SEED = 255                  # the most one seed request returns, as Postfix
EXCHANGE_SIZE = 1024            # the PRNG exchange file's length
MAX_SESSION = 16 * 1024         # a serialised session is a few KB at most


class SessionCaches:
    """Sessions per cache type, each with its expiry time."""

    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.timeouts: dict[str, float] = {}
        for kind in CACHE_TYPES:
            if cfg.get(f"{kind}_tls_session_cache_database").strip():
                self.timeouts[kind] = float(cfg.time(f"{kind}_tls_session_cache_timeout"))
        self.sessions: dict[str, dict[str, tuple[float, bytes]]] = {k: {} for k in self.timeouts}

    def handle(self, header: dict, payload: list) -> tuple[dict, list]:
        """handle - one request; the reply header and payload."""
        op = header.get("op")
        if op == "seed":
            size = max(0, min(MAX_SEED, int(header.get("size", 32) or 0)))
            return {"status": "ok"}, [os.urandom(size)]
        if op == "wakeup":
            self.expire()
            return {"status": "ok"}, []
        kind = str(header.get("cache_type", ""))
        if op == "policy":
            timeout = self.timeouts.get(kind)
            return {"status": "ok", "cachable": timeout is not None,
                    "timeout": int(timeout or 0)}, []
        cache = self.sessions.get(kind)
        cache_id = str(header.get("cache_id", ""))
        if cache is None or not cache_id:
            return {"status": "fail"}, []
        if op == "lookup":
            hit = cache.get(cache_id)
            if hit is None or hit[0] <= self.clock():
                cache.pop(cache_id, None)
                return {"status": "fail"}, []
            return {"status": "ok"}, [hit[1]]
        if op == "update":
            blob = bytes(payload[0]) if payload else b""
            if not blob or len(blob) > MAX_SESSION:
                return {"status": "fail"}, []
            cache[cache_id] = (self.clock() + self.timeouts[kind], blob)
            return {"status": "ok"}, []
        if op == "delete":
            cache.pop(cache_id, None)
            return {"status": "ok"}, []
        return {"status": "error", "reason": f"unknown request: {op}"}, []

    def expire(self) -> int:
        """expire - forget the sessions past their timeout; how many."""
        now, gone = self.clock(), 0
        for cache in self.sessions.values():
            for cache_id in [i for i, (until, _) in cache.items() if until <= now]:
                del cache[cache_id]
                gone += 1
        return gone


class SeedFile:
    """The PRNG exchange file, opened before the jail and rewritten in place."""

    def __init__(self, path: str) -> None:
        self.fd: int | None = None
        if not path:
            return
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            log.warning(f"cannot open PRNG exchange file {path}: {e.strerror}")

    def renew(self) -> None:
        if self.fd is None:
            return
        try:
            os.pwrite(self.fd, os.urandom(EXCHANGE_SIZE), 0)
            os.ftruncate(self.fd, EXCHANGE_SIZE)
        except OSError as e:
            log.warning(f"cannot update PRNG exchange file: {e.strerror}")


def pre_jail(svc: service.Service) -> tuple[SessionCaches, SeedFile]:
    cfg = svc.cfg
    return SessionCaches(cfg), SeedFile(cfg.get("tls_random_exchange_name").strip())


def run(svc: service.Service) -> None:
    update = float(svc.cfg.time("tls_random_prng_update_period"))
    caches, seed = svc.enter_jail(pre_jail)
    seed.renew()
    renewed = time.monotonic()

    def handler(header: dict, payload: list) -> tuple[dict, list]:
        nonlocal renewed
        if time.monotonic() - renewed >= update:
            seed.renew()
            renewed = time.monotonic()
        return caches.handle(header, payload)

    # The sessions live in this process: it must not exit when idle.
    svc.cfg = svc.cfg.with_overrides({"max_idle": "1000000", "max_use": "0"})
    svc.serve_requests(handler, many=True)


def main() -> None:
    service.main("tlsmgr", run)
