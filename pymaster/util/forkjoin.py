"""One pass over a long list, split between two processes.

A command that spends its time in Python per item (postqueue -p reading
100,000 queue files) runs at the speed of one core; Postfix's own listing
takes two processes (postqueue and showq); a command that waits on the
file system per item (postsuper -d ALL) overlaps the waits of two
processes. split() hands the first half of
the items to a forked child and works the second half itself; the child's
result, bytes, comes back over a pipe, so the two halves come back in order.

The child shares nothing but the pipe: it ends with os._exit, so buffers
the parent has not flushed are not written twice. When the child fails
(an exception, a signal), its half is done again in the parent, which then
raises what the work raises or gets the same result: a failure in the child
never changes what the caller sees. (Work with side effects, such as
postsuper's, finds what the child already did done: a file the child
deleted before it failed is not deleted, nor counted, again.)

Interface: split(items, work, min_items=2000) -> [bytes]   (one or two results,
           in the order of ITEMS)
"""

from __future__ import annotations

import os
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
CHUNK = 1 << 16
OK, FAILED = b"\0", b"\1"


def split(items: Sequence[T], work: Callable[[Sequence[T]], bytes],
          min_items: int = 2000) -> list[bytes]:
    """split - WORK over ITEMS, the first half in a forked child when ITEMS is
    long and a second core can take it; the results in order."""
    if len(items) < min_items or _cores() < 2:
        return [work(items)]
    mid = len(items) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # the child: first half, then exit
        os.close(read_end)
        _child(write_end, lambda: work(items[:mid]))
    os.close(write_end)
    try:
        mine = work(items[mid:])
        theirs = _read_all(read_end)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if theirs[:1] != OK:
        return [work(items[:mid]), mine]            # raises what the child met, if anything
    return [theirs[1:], mine]


def _child(fd: int, job: Callable[[], bytes]) -> None:
    """_child - run JOB, send OK and its result (or FAILED) down FD, exit."""
    status = 0
    try:
        data = OK + job()
    except BaseException:                           # the parent redoes the half and says why
        data, status = FAILED, 1
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:CHUNK]):]
    finally:
        os._exit(status)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, CHUNK):
        chunks.append(chunk)
    return b"".join(chunks)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
