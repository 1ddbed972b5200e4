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

Interface: main() (libexec/qmgr), run(svc).
"""

from __future__ import annotations

from pymaster.master import service


def run(svc: service.Service) -> None:
    """run - open what qmgr needs, enter the jail, manage the queue."""
    from services.qmgr.manager import QueueManager
    manager = QueueManager(svc)
    svc.enter_jail()
    manager.run()


def main() -> None:
    service.main("qmgr", run)
