"""cleanup's queue file reservations: smtpd learns the queue ID early.

Postfix's smtpd opens its cleanup stream when the first recipient of a
transaction is accepted, so the queue ID exists from then on: smtpd logs
`ID: client=NAME[ADDR]` at that moment, names the ID in later reject lines
and in its Received: header. pymaster's smtpd does the same with two
requests besides `message` (docs/architecture.md, "cleanup"):

    {"op": "reserve"}                  -> {"status": "ok", "queue_id": ID}
                                          or {"status": "defer", "dsn", "reason"}
    {"op": "abandon", "queue_id": ID}  one-way: the transaction ended without
                                          a message (RSET, QUIT, a lost client,
                                          a refused message); nothing is logged,
                                          as Postfix logs nothing then

`reserve` leaves an empty incomplete file in incoming/ (invisible to qmgr,
mailq and pickup); the `message` request that names the ID is written into
that file by whichever cleanup worker the broker picks (message.py).
Reservations whose client vanished without an `abandon` (a killed smtpd)
are swept: every SWEEP_INTERVAL seconds, on a reserve, a worker removes
incomplete incoming files untouched for `ipc_timeout`.

Interface:
    handle_reserve(cfg, header) -> (reply_header, reply_payload)
    handle_abandon(cfg, header) -> (reply_header, reply_payload)
"""

from __future__ import annotations

import time

from pymaster.mail import queue
from pymaster.mail.config import Config
from pymaster.util import log

from .state import WRITE_ERROR

INCOMING = "incoming"
SWEEP_INTERVAL = 300.0      # seconds between sweeps by one worker

_next_sweep = 0.0


def handle_reserve(cfg: Config, header: dict) -> tuple[dict, list]:
    """handle_reserve - create an empty incomplete queue file; its ID."""
    _sweep_if_due(cfg)
    try:
        queue_id = queue.reserve(INCOMING)
    except OSError as e:
        log.warning(f"{INCOMING}: create queue file: {e.strerror or e}")
        dsn, reason = WRITE_ERROR
        return {"status": "defer", "dsn": dsn, "reason": reason}, []
    return {"status": "ok", "queue_id": queue_id}, []


def handle_abandon(cfg: Config, header: dict) -> tuple[dict, list]:
    """handle_abandon - remove a reservation that will not be written.

    A file already written and committed is never touched."""
    try:
        queue.release(INCOMING, str(header.get("queue_id") or ""))
    except OSError as e:
        log.warning(f"{header.get('queue_id')}: remove queue file: {e.strerror or e}")
    return {"status": "ok"}, []


def _sweep_if_due(cfg: Config) -> None:
    """_sweep_if_due - remove stale reservations, at most once per interval."""
    global _next_sweep
    now = time.monotonic()
    if now < _next_sweep:
        return
    _next_sweep = now + SWEEP_INTERVAL
    try:
        removed = queue.sweep_reserved(INCOMING, float(cfg.time("ipc_timeout")))
    except OSError as e:
        log.warning(f"{INCOMING}: sweep of stale queue files: {e.strerror or e}")
        return
    for queue_id in removed:
        log.info(f"{queue_id}: removed stale incomplete queue file")
