"""scache: the shared SMTP connection cache (Postfix's scache(8)), request side only.

Postfix's scache keeps open SMTP connections that one smtp process saved
so that another may reuse them: the connections travel as descriptors
(SCM_RIGHTS), which zeromq cannot carry. pymaster's smtp keeps its
connection cache in each process (services/smtp/cache.py, with
smtp_connection_cache_on_demand, smtp_connection_cache_destinations,
smtp_connection_cache_time_limit and smtp_connection_reuse_time_limit), and
this program is the master.cf entry `scache unix - - n - 1 scache`: it takes
the requests of Postfix's protocol and answers every lookup "not found", so
a client falls back to its own cache, and every save "not cached" (the
client closes the connection itself). It counts them and logs, every
connection_cache_status_update_time and at exit, the statistics lines
Postfix's scache logs, so log watchers see the shape they know.

Requests (JSON headers over the brokered endpoint private/scache):
    {"op": "find_dest" | "find_endp", "label": L}  -> {"status": "fail", "reason": "not found"}
    {"op": "save_dest" | "save_endp", "label": L, "ttl": T}
                                                   -> {"status": "fail", "reason": "not cached"}

Interface:
    ConnectionCache().handle(header) -> reply header
    pre_jail(svc) -> ConnectionCache
    main()   the body of libexec/scache
"""

from __future__ import annotations

import time

from pymaster.master import service
from pymaster.util import log

FIND_OPS = ("find_dest", "find_endp")
SAVE_OPS = ("save_dest", "save_endp")


class ConnectionCache:
    """Answers and counters; no connection is ever held."""

    def __init__(self) -> None:
        self.started = time.time()
        self.counts = {op: 0 for op in FIND_OPS + SAVE_OPS}

    def handle(self, header: dict) -> dict:
        """handle - one request; the reply header."""
        op = header.get("op")
        if op in FIND_OPS:
            self.counts[op] += 1
            return {"status": "fail", "reason": "not found"}
        if op in SAVE_OPS:
            self.counts[op] += 1
            return {"status": "fail", "reason": "not cached"}
        return {"status": "error", "reason": f"unknown request: {op}"}

    def statistics(self) -> list[str]:
        """statistics - the period's lines, then a new period."""
        start = time.strftime("%b %d %H:%M:%S", time.localtime(self.started))
        lines = [f"statistics: start interval {start}"]
        for kind, find, save in (("domain", "find_dest", "save_dest"),
                                 ("address", "find_endp", "save_endp")):
            if self.counts[find] or self.counts[save]:
                lines.append(f"statistics: {kind} lookup hits=0 miss={self.counts[find]} "
                             f"success=0%")
        lines.append("statistics: max simultaneous domains=0 addresses=0 connection=0")
        self.started = time.time()
        self.counts = dict.fromkeys(self.counts, 0)
        return lines


def pre_jail(svc: service.Service) -> ConnectionCache:
    return ConnectionCache()


def run(svc: service.Service) -> None:
    update = float(svc.cfg.time("connection_cache_status_update_time"))
    cache, last = svc.enter_jail(pre_jail), time.monotonic()

    def handler(header: dict, payload: list) -> tuple[dict, list]:
        nonlocal last
        reply = cache.handle(header)
        if time.monotonic() - last >= update:
            last = time.monotonic()
            for line in cache.statistics():
                log.info(line)
        return reply, []

    svc.serve_requests(handler)


def main() -> None:
    service.main("scache", run)
