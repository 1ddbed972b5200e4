"""The master's pid file, pid/master.pid, and its lock: who is running.

The master holds an exclusive lock on the file for as long as it runs and
writes its pid there; the lock, not the number, says whether it is alive.

Interface:
    PID_FILE                          relative to the queue directory
    lock_pid_file(queue_dir) -> fd    -1 when another master holds the lock
    write_pid_file(fd)
    running_pid(queue_dir) -> int | None   the pid of the master holding it
    master_running(queue_dir) -> bool      the same, read-only (for users)
"""

from __future__ import annotations

import errno
import fcntl
import os

PID_FILE = "pid/master.pid"



def lock_pid_file(queue_dir: str) -> int:
    """lock_pid_file - open and lock pid/master.pid; -1 when another holds it."""
    path = os.path.join(queue_dir, PID_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return -1
        raise
    return fd


def write_pid_file(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, b"%10d\n" % os.getpid(), 0)


def running_pid(queue_dir: str) -> int | None:
    """running_pid - the pid of the master that holds the lock, or None."""
    path = os.path.join(queue_dir, PID_FILE)
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            data = os.pread(fd, 64, 0).split()
            return int(data[0]) if data else None
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def master_running(queue_dir: str) -> bool:
    """master_running - whether the master of QUEUE_DIR is alive.

    Read-only on purpose: users run this through the set-group-ID wrapper
    and cannot open pid/master.pid for writing, as the lock test would."""
    path = os.path.join(queue_dir, PID_FILE)
    if os.access(path, os.W_OK):
        return running_pid(queue_dir) is not None      # the exact, lock-based answer
    try:
        with open(path) as f:
            pid = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True             # alive, and not ours
    return True
