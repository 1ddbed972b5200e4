"""Waiting until something has happened: the tests' one polling loop.

Work the tests start runs in other processes and threads (a delivery, a
worker leaving, a log line), so a test asks again until the answer is yes or
the time is up. Timeouts are generous limits on a slow machine, never what a
test measures.

Interface:
    poll(predicate, timeout, interval)          PREDICATE()'s first true value,
                                                or its last false one at the deadline
    wait_until(predicate, timeout, what, ...)   the same, but failing the test
                                                (AssertionError saying WHAT) at the deadline
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INTERVAL = 0.05


def poll(predicate: Callable[[], T], timeout: float = 20, interval: float = INTERVAL) -> T:
    """poll - call PREDICATE until it returns a true value or TIMEOUT seconds
    have passed; its last value either way. It is asked once more after the
    deadline, so a slow first answer still gets its chance."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(predicate: Callable[[], T], timeout: float = 20,
               what: str | Callable[[], str] = "condition",
               interval: float = INTERVAL) -> T:
    """wait_until - PREDICATE()'s first true value; fails the test if none
    comes within TIMEOUT seconds. WHAT describes what was awaited; a callable
    is asked only on failure (for a log tail read at that moment)."""
    value = poll(predicate, timeout, interval)
    if not value:
        description = what() if callable(what) else what
        raise AssertionError(f"not within {timeout}s: {description}")
    return value
