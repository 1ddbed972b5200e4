"""qmgr: the queue manager, as Postfix's qmgr(8).

One process (master.cf `qmgr unix n - n 300 1 qmgr`) moves complete queue
files from incoming (and due ones from deferred) into active, resolves
their recipients, and hands them to delivery agents (private/TRANSPORT)
within per-transport process limits and per-destination concurrency; it
then finishes each message: removed, deferred with a backoff, or expired.

Modules, one job each:
    manager   the event loop, triggers, feeding, finishing messages
    scan      lazy walks over incoming and deferred; requeue of active at start
    active    one active message and its recipient accounting
    schedule  transports, destination queues, concurrency feedback
    dispatch  request connections to agents and the bounce service
    backoff   retry delays and queue lifetimes

Interface: main() (libexec/qmgr), pre_jail(svc) -> QueueManager, run(svc).
"""

from __future__ import annotations

from pymaster.master import service
from services.qmgr.manager import QueueManager


def pre_jail(svc: service.Service) -> QueueManager:
    """pre_jail - the manager with its resolver, tables and transports read."""
    return QueueManager(svc)


def run(svc: service.Service) -> None:
    """run - enter the jail, manage the queue."""
    svc.enter_jail(pre_jail).run()


def main() -> None:
    service.main("qmgr", run)
