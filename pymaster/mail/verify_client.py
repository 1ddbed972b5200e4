"""Talking to the address verification service (verify(8), services/verify/).

Two requests over the brokered endpoint of `address_verify_service_name`
(master.cf `verify unix - - n - 1 verify`, so private/verify):

    {"op": "query", "address": A}
        -> {"status": "ok", "addr_status": OK|DEFER|BOUNCE|TODO, "reason": TEXT}
    {"op": "update", "address": A, "addr_status": OK|DEFER|BOUNCE, "reason": TEXT}
        -> {"status": "ok", "cached": true|false}

smtpd asks (QUERY, polling while the answer is TODO: reject_unverified_*);
a delivery agent that handled an address probe reports its verdict (UPDATE)
instead of writing a trace log. A probe is a message whose trace_flags
attribute holds both `verify` and `probe` (pymaster.mail.traceflags).

Interface:
    OK, DEFER, BOUNCE, TODO            address status names
    VerifyError                        the service cannot be asked (down, timeout, nonsense)
    VerifyClient(cfg, timeout=None, name="")   name: address_verify_service_name
        .query(address) -> (status, reason)
        .poll(address, count, delay, sleep=time.sleep) -> (status, reason)
        .update(address, status, reason) -> bool     False: not cached (negative cache off)
    client_for(cfg) -> VerifyClient    one per process and service name (cfg None: `verify`)
    status_of(deliverable, dsn) -> OK | DEFER | BOUNCE  an agent's verdict as a status
    report_probe(cfg, address, orig, status, reason) -> bool   UPDATE for both addresses

Caveats: zeromq sockets belong to one thread; smtpd runs checks in threads,
so each thread gets its own connection (threading.local).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

from pymaster.mail import endpoints
from pymaster.mail.config import Config
from pymaster.util import ipc

OK, DEFER, BOUNCE, TODO = "OK", "DEFER", "BOUNCE", "TODO"
STATUSES = (OK, DEFER, BOUNCE, TODO)
# How long a client waits for the single verify process before it gives up:
# smtpd then applies unverified_*_tempfail_action, an agent defers the probe.
TIMEOUT = 20.0


class VerifyError(Exception):
    """The verify service could not answer."""


class VerifyClient:
    """Requests to the verify service, one zeromq connection per thread."""

    def __init__(self, cfg: Config | None, timeout: float | None = None,
                 name: str = "") -> None:
        self.name = name or endpoints.service_name(cfg, "verify")
        self.timeout = TIMEOUT if timeout is None else timeout
        self._local = threading.local()

    def _client(self) -> ipc.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            ep = ipc.service_endpoint(self.name)
            # No socket: the service is not in master.cf (or the master is
            # down); say so now rather than after a timeout.
            if not os.path.exists(ep):
                raise VerifyError(f"{self.name} service is not available")
            client = self._local.client = ipc.Client(ep, self.timeout)
        return client

    def _call(self, header: dict) -> dict:
        try:
            reply, _ = self._client().call(header)
        except ipc.IpcError as e:
            self._local.client = None       # call() closed the socket on timeout
            raise VerifyError(str(e)) from None
        if reply.get("status") != "ok":
            raise VerifyError(str(reply.get("reason") or f"bad reply from {self.name}"))
        return reply

    def query(self, address: str) -> tuple[str, str]:
        """query - the service's status of ADDRESS and the reason text."""
        reply = self._call({"op": "query", "address": address})
        status = str(reply.get("addr_status") or "")
        if status not in STATUSES:
            raise VerifyError(f"bad address status from {self.name}: {status!r}")
        return status, str(reply.get("reason") or "")

    def poll(self, address: str, count: int, delay: float,
             sleep: Callable[[float], None] = time.sleep) -> tuple[str, str]:
        """poll - query up to COUNT times, DELAY apart, while the answer is TODO."""
        tries = 0
        while True:
            status, reason = self.query(address)
            tries += 1
            if status != TODO or tries >= max(1, count):
                return status, reason
            sleep(delay)

    def update(self, address: str, status: str, reason: str) -> bool:
        """update - report a probe's verdict; False when the service did not keep it."""
        if status not in (OK, DEFER, BOUNCE):
            raise ValueError(f"bad address status: {status}")
        reply = self._call({"op": "update", "address": address,
                            "addr_status": status, "reason": reason})
        return bool(reply.get("cached", True))


def status_of(deliverable: bool, dsn: str) -> str:
    """status_of - an agent's verdict as an address status: a temporary
    failure (4.x.x) is DEFER, a permanent one BOUNCE."""
    if deliverable:
        return OK
    return DEFER if dsn.startswith("4") else BOUNCE


_clients: dict[str, VerifyClient] = {}


def client_for(cfg: Config | None) -> VerifyClient:
    """client_for - the process's client of the verify service CFG names."""
    key = endpoints.service_name(cfg, "verify")
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = VerifyClient(cfg, name=key)
    return client


def report_probe(cfg: Config | None, address: str, orig: str, status: str,
                 reason: str) -> bool:
    """report_probe - UPDATE the probed (original) address and, when it was
    rewritten, the final one too, as Postfix's agents do. False when the
    verdict was not cached; VerifyError when the service cannot be told."""
    client = client_for(cfg)
    cached = client.update(orig or address, status, reason)
    if orig and orig.lower() != address.lower():
        cached = client.update(address, status, reason) and cached
    return cached
