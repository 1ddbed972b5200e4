"""qmgr queue scans: which files in incoming and deferred are due, in batches.

A scan walks one queue directory lazily, so a large backlog is fed to the
active queue a batch at a time between answers from delivery agents. A scan
requested while one is running is remembered and started when the current
one ends (Postfix's "scan again"), so triggers that arrive in bursts cost
one directory walk, not one each.

Interface:
    Scan(queue_name): .request(ignore_time=False) .next(now) -> (queue_id, path) | None
                      .busy -> bool  .ignore_time (of the walk that gave the last file)
                      .take_walks_done() -> [files seen by each walk finished since]
    requeue_active() -> int   at start: active files back to incoming
"""

from __future__ import annotations

from typing import Iterator

from pymaster.mail import queue
from pymaster.util import log


class Scan:
    """A lazy walk over one queue directory."""

    def __init__(self, queue_name: str) -> None:
        self.queue_name = queue_name
        self.walk: Iterator[tuple[str, str]] | None = None
        self.again = False
        self.ignore_time = False
        self.ignore_time_next = False
        self.seen = 0                  # files looked at by the current walk
        self.walks_done: list[int] = []

    @property
    def busy(self) -> bool:
        return self.walk is not None

    def request(self, ignore_time: bool = False) -> None:
        """request - walk the directory (again, once the current walk ends)."""
        if self.walk is None:
            self.walk = queue.scan(self.queue_name)
            self.ignore_time = ignore_time
        else:
            self.again = True
            self.ignore_time_next = self.ignore_time_next or ignore_time

    def next(self, now: float) -> tuple[str, str] | None:
        """next - the next file that is ready to enter the active queue."""
        while self.walk is not None:
            for queue_id, path in self.walk:
                self.seen += 1
                if self._ready(path, now):
                    return queue_id, path
            self.walk = None
            self.walks_done.append(self.seen)
            self.seen = 0
            if self.again:
                self.again = False
                self.walk = queue.scan(self.queue_name)
                self.ignore_time, self.ignore_time_next = self.ignore_time_next, False
        return None

    def take_walks_done(self) -> list[int]:
        """take_walks_done - the file counts of the walks finished since last asked."""
        done, self.walks_done = self.walks_done, []
        return done

    def _ready(self, path: str, now: float) -> bool:
        try:
            if self.queue_name == "deferred":
                return self.ignore_time or queue.retry_time(path) <= now
            return queue.is_complete(path)
        except FileNotFoundError:
            return False


def requeue_active() -> int:
    """requeue_active - move what a previous qmgr left in active back to incoming.

    Its recipients not marked done are delivered again; done ones never."""
    count = 0
    for queue_id, _ in list(queue.scan("active")):
        try:
            queue.move(queue_id, "active", "incoming")
            count += 1
        except OSError as e:
            log.warning(f"{queue_id}: cannot requeue from active: {e}")
    return count
