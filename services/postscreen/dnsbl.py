"""postscreen's DNS block list test: ask dnsblog about every site at once.

Each site of postscreen_dnsbl_sites is one request to the dnsblog service
(private/$dnsblog_service_name); the requests run in parallel and each
waits at most postscreen_dnsbl_timeout. A client's score is the sum of the
weights of the sites whose answer matches the site's filter (a domain
listed twice with different filters can score twice). The first listing
site with the largest positive weight names the list in the reply, through
postscreen_dnsbl_reply_map when that maps its domain to another text.

A result is kept (in the cache) for the smallest TTL of the answers, no
longer than postscreen_dnsbl_max_ttl and no shorter than
postscreen_dnsbl_min_ttl; postscreen_dnsbl_max_ttl when no answer said.

Interface:
    Query(settings, endpoint, context).start(address); await .wait(timeout)
    .score() -> (score, name); .ttl() -> seconds
"""

from __future__ import annotations

import asyncio
import itertools

import zmq
import zmq.asyncio

from pymaster.util import ipc, log
from pymaster.util.tables import TableError, open_table

from .settings import Settings, Site

_ids = itertools.count(1)


class Query:
    """The DNSBL lookups of one client, started at once, scored on demand."""

    def __init__(self, settings: Settings, endpoint: str, context: zmq.asyncio.Context) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.context = context
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, address: str) -> None:
        """start - one request per distinct domain."""
        for site in self.settings.sites:
            if site.domain not in self.tasks:
                self.tasks[site.domain] = asyncio.create_task(self._ask(site.domain, address))

    async def _ask(self, domain: str, address: str) -> tuple[list[str], int | None]:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            header = {"op": "query", "domain": domain, "address": address, "id": next(_ids)}
            await sock.send_multipart([b"", *ipc.pack(header)])
            async with asyncio.timeout(self.settings.dnsbl_timeout):
                frames = await sock.recv_multipart()
            reply, _ = ipc.unpack(frames[1:])
        except asyncio.TimeoutError:
            log.warning(f"dnsblog reply timeout {self.settings.dnsbl_timeout:g}s "
                        f"for {domain}")
            return [], None
        except (zmq.ZMQError, ipc.IpcError) as e:
            log.warning(f"dnsblog request for {domain}: {e}")
            return [], None
        finally:
            sock.close()
        if reply.get("status") != "ok":
            return [], None
        ttl = reply.get("ttl")
        return [str(a) for a in reply.get("answers") or []], ttl if isinstance(ttl, int) else None

    def done(self) -> bool:
        return all(t.done() for t in self.tasks.values())

    async def wait(self, timeout: float) -> None:
        """wait - until every answer is in, at most TIMEOUT seconds."""
        pending = [t for t in self.tasks.values() if not t.done()]
        if pending and timeout > 0:
            await asyncio.wait(pending, timeout=timeout)

    def score(self) -> tuple[int, str]:
        """score - the client's score and the name of the list that counts most."""
        total, best, name = 0, 0, ""
        for site in self.settings.sites:
            task = self.tasks.get(site.domain)
            if task is None or not task.done() or task.cancelled():
                continue
            if any(site.matches(a) for a in task.result()[0]):
                total += site.weight
                if site.weight > best:
                    best, name = site.weight, site.domain
        return total, self._reply_name(name)

    def ttl(self) -> int:
        """ttl - how long the answers hold, within the min and max TTL."""
        ttls = [t.result()[1] for t in self.tasks.values()
                if t.done() and not t.cancelled() and t.result()[1] is not None]
        ttl = min(ttls) if ttls else self.settings.dnsbl_ttl
        return max(self.settings.dnsbl_min_ttl, min(ttl, self.settings.dnsbl_ttl))

    def _reply_name(self, domain: str) -> str:
        """_reply_name - what the reply says for DOMAIN (postscreen_dnsbl_reply_map)."""
        spec = self.settings.dnsbl_reply_map
        if not spec or not domain:
            return domain
        try:
            value = open_table(spec).lookup(domain)
        except TableError as e:
            log.warning(f"{spec}: lookup {domain}: {e}")
            return domain
        return value.strip() if value else domain

    def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()


__all__ = ["Query", "Site"]
