"""How many clients postscreen holds: the pre-queue limit, the per-client
limit, and stress mode.

Every connection counts from CONNECT until postscreen hands it on or ends
it. At postscreen_pre_queue_limit connections (this one included) a new
client is refused `421 4.3.2 All screening ports are busy` and logged
`reject: connect from [a]:p: all screening ports busy`; a client with more
than postscreen_client_connection_count_limit connections at once is
refused `421 4.7.0 Error: too many connections` and logged `NOQUEUE:
reject: CONNECT from [a]:p: too many connections` (0: no limit).

Stress mode, as Postfix's postscreen: at 90% of the pre-queue limit it logs
`entering STRESS mode with N connections` and new sessions use the
parameters main.cf gives under `stress = yes` (`postscreen_greet_wait =
${stress?{2}:{6}}s` ...); at 70% or less it logs `leaving STRESS mode with
N connections`.

Interface:
    Load(pre_queue_limit, per_client_limit)
        .admit(addr) -> None | "busy" | "too many"   counts the connection either way
        .release(addr)
        .stress -> bool
"""

from __future__ import annotations

from collections import Counter

from pymaster.util import log

HIGH_WATER = 0.9
LOW_WATER = 0.7


class Load:
    def __init__(self, pre_queue_limit: int, per_client_limit: int) -> None:
        self.limit = pre_queue_limit
        self.per_client_limit = per_client_limit
        self.active = 0
        self.clients: Counter[str] = Counter()
        self.stress = False

    def admit(self, addr: str) -> str | None:
        """admit - count a new connection; why it must be refused, if it must."""
        self.active += 1
        self.clients[addr] += 1
        if self.limit and self.active >= self.limit:
            return "busy"
        if not self.stress and self.limit and self.active >= HIGH_WATER * self.limit:
            self.stress = True
            log.info(f"entering STRESS mode with {self.active} connections")
        if self.per_client_limit and self.clients[addr] > self.per_client_limit:
            return "too many"
        return None

    def release(self, addr: str) -> None:
        self.active -= 1
        self.clients[addr] -= 1
        if self.clients[addr] <= 0:
            del self.clients[addr]
        if self.stress and self.active <= LOW_WATER * self.limit:
            self.stress = False
            log.info(f"leaving STRESS mode with {self.active} connections")
