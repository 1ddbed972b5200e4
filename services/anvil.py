"""anvil: connection and rate counting for smtpd's client limits (Postfix's anvil(8)).

One process (master.cf `anvil unix - - n - 1 anvil`) keeps, per client
ident ("smtp:192.0.2.1"), the number of open connections and the number of
connections, messages, recipients, new TLS sessions and AUTH commands in
the current time window of anvil_rate_time_unit. A window starts at a
client's first event and ends one time unit later; the next event starts a
new one. Idle entries are forgotten when they have no open connection and
their window has ended.

Requests (JSON headers over the brokered endpoint private/anvil):
    {"op": "connect", "ident": ...}    -> {"status": "ok", "count": N, "rate": R}
    {"op": "disconnect", "ident": ...} -> {"status": "ok", "count": N}
    {"op": "message" | "recipient" | "newtls" | "auth", "ident": ...}
                                       -> {"status": "ok", "rate": R}
    {"op": "lookup", "ident": ...}     -> {"status": "ok", "count", "connect", "message", ...}

Every anvil_status_update_time, and when the process ends, it logs the
peaks as Postfix does:
    statistics: max connection rate 3/60s for (smtp:192.0.2.1) at Nov 28 20:03:44
    statistics: max connection count 2 for (smtp:192.0.2.1) at Nov 28 20:03:44
    statistics: max message rate 1/60s for (smtp:192.0.2.1) at Nov 28 20:03:44
    statistics: max recipient rate 5/60s for (smtp:192.0.2.1) at Nov 28 20:03:44
    statistics: max cache size 1 at Nov 28 20:03:44

Interface:
    Anvil(rate_unit, clock=time.monotonic).handle(header) -> reply header
    pre_jail(svc) -> Anvil, run(svc), main()   the body of libexec/anvil
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from pymaster.master import service
from pymaster.util import log

RATE_EVENTS = ("connect", "message", "recipient", "newtls", "auth")
# How the statistics lines name each rate.
STAT_NAMES = {"connect": "connection rate", "message": "message rate",
              "recipient": "recipient rate", "newtls": "new tls session rate",
              "auth": "auth rate"}


@dataclass
class Client:
    count: int = 0
    window_start: float = 0.0
    rates: dict[str, int] = field(default_factory=dict)


@dataclass
class Peak:
    value: int = 0
    ident: str = ""
    when: float = 0.0


class Anvil:
    def __init__(self, rate_unit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_unit = max(1.0, rate_unit)
        self.clock = clock
        self.clients: dict[str, Client] = {}
        self.peaks: dict[str, Peak] = {}

    def _client(self, ident: str) -> Client:
        now = self.clock()
        client = self.clients.get(ident)
        if client is None:
            client = self.clients[ident] = Client(window_start=now)
            self._peak("cache size", len(self.clients), "")
        elif now - client.window_start >= self.rate_unit:
            client.window_start, client.rates = now, {}
        return client

    def _peak(self, name: str, value: int, ident: str) -> None:
        peak = self.peaks.setdefault(name, Peak())
        if value > peak.value:
            self.peaks[name] = Peak(value, ident, time.time())

    def _expire(self) -> None:
        now = self.clock()
        for ident in [i for i, c in self.clients.items()
                      if c.count == 0 and now - c.window_start >= self.rate_unit]:
            del self.clients[ident]

    def handle(self, header: dict) -> dict:
        """handle - one request; the reply header."""
        op, ident = header.get("op"), str(header.get("ident") or "")
        if not ident:
            return {"status": "error", "reason": "missing ident"}
        if op == "lookup":
            c = self.clients.get(ident, Client())
            return {"status": "ok", "count": c.count, **c.rates}
        if op == "disconnect":
            client = self.clients.get(ident)
            if client is not None and client.count > 0:
                client.count -= 1
            self._expire()
            return {"status": "ok", "count": client.count if client else 0}
        if op not in RATE_EVENTS:
            return {"status": "error", "reason": f"unknown request: {op}"}
        client = self._client(ident)
        rate = client.rates[op] = client.rates.get(op, 0) + 1
        self._peak(STAT_NAMES[op], rate, ident)
        reply = {"status": "ok", "rate": rate}
        if op == "connect":
            client.count += 1
            self._peak("connection count", client.count, ident)
            reply["count"] = client.count
        return reply

    def statistics(self) -> list[str]:
        """statistics - the peak lines, then forget the peaks (a new reporting period)."""
        unit = f"{int(self.rate_unit)}s"
        lines = []
        order = ["connection rate", "connection count", "message rate", "recipient rate",
                 "new tls session rate", "auth rate", "cache size"]
        for name in order:
            peak = self.peaks.get(name)
            if peak is None or peak.value == 0:
                continue
            when = time.strftime("%b %d %H:%M:%S", time.localtime(peak.when))
            if name == "cache size":
                lines.append(f"statistics: max cache size {peak.value} at {when}")
            elif name == "connection count":
                lines.append(f"statistics: max connection count {peak.value} "
                             f"for ({peak.ident}) at {when}")
            else:
                lines.append(f"statistics: max {name} {peak.value}/{unit} "
                             f"for ({peak.ident}) at {when}")
        self.peaks.clear()
        return lines


def pre_jail(svc: service.Service) -> Anvil:
    """pre_jail - the empty counters: anvil opens nothing."""
    return Anvil(float(svc.cfg.time("anvil_rate_time_unit")))


def run(svc: service.Service) -> None:
    """run - count client events, log the peaks now and then."""
    anvil = svc.enter_jail(pre_jail)
    cfg = svc.cfg
    update = float(cfg.time("anvil_status_update_time"))
    last = time.monotonic()

    def handler(header: dict, payload: list) -> tuple[dict, list]:
        nonlocal last
        reply = anvil.handle(header)
        if time.monotonic() - last >= update:
            last = time.monotonic()
            for line in anvil.statistics():
                log.info(line)
        return reply, []

    try:
        # anvil must keep its counts while smtpd sessions are open: no idle exit.
        svc.cfg = cfg.with_overrides({"max_idle": "1000000", "max_use": "0"})
        svc.serve_requests(handler, many=True)
    finally:
        for line in anvil.statistics():
            log.info(line)


def main() -> None:
    service.main("anvil", run)
