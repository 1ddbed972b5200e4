"""Switching the effective uid, gid and groups of the calling thread only.

Linux keeps credentials per thread. glibc's seteuid(), setegid() and
setgroups() (what os.seteuid & co. call) make every thread of the process
follow: they signal each other thread and wait for it. A delivery agent has
zeromq's I/O threads beside its own, and that broadcast made a switch to a
recipient and back cost about 0.2 ms of CPU, more than writing the message.
The agents write mailboxes from their one Python thread, so switching that
thread alone is enough, and zeromq's threads (which only move bytes between
sockets) stay root. Where the system call numbers are not known (not Linux,
or another architecture), the process-wide os functions are used.

Interface:
    set_effective(uid, gid, groups)    the calling thread's groups, egid and euid
    set_root(groups)                   back to euid and egid 0 with GROUPS
    PER_THREAD -> bool                 whether the switch is per thread here
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# (setgroups, setresuid, setresgid) system call numbers.
_SYSCALLS = {"x86_64": (116, 117, 119), "aarch64": (159, 147, 149)}
_KEEP = -1      # setresuid/setresgid: leave this id as it is


def _libc_syscall():
    if not sys.platform.startswith("linux") or platform.machine() not in _SYSCALLS:
        return None
    try:
        # Resolved now, while the process can still see its libraries (chroot).
        return ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None


_syscall = _libc_syscall()
PER_THREAD = _syscall is not None
_SETGROUPS, _SETRESUID, _SETRESGID = _SYSCALLS.get(platform.machine(), (0, 0, 0))


def _call(number: int, *args) -> None:
    # Numbers as C longs, what syscall(2) reads for each argument.
    args = tuple(a if isinstance(a, ctypes.Array) else ctypes.c_long(a) for a in args)
    if _syscall(ctypes.c_long(number), *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _set_groups(groups: list[int]) -> None:
    array = (ctypes.c_uint * max(1, len(groups)))(*groups)     # gid_t is 32 bits
    _call(_SETGROUPS, len(groups), array)


def set_effective(uid: int, gid: int, groups: list[int]) -> None:
    """set_effective - the calling thread's groups, effective gid and effective uid.

    The order matters: groups and gid while still root, the uid last (and
    back to root, the uid first: set_root)."""
    if not PER_THREAD:
        os.setgroups(groups)
        os.setegid(gid)
        os.seteuid(uid)
        return
    _set_groups(groups)
    _call(_SETRESGID, _KEEP, gid, _KEEP)
    _call(_SETRESUID, _KEEP, uid, _KEEP)


def set_root(groups: list[int]) -> None:
    """set_root - back to effective uid and gid 0 with GROUPS (the saved list)."""
    if not PER_THREAD:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)
        return
    _call(_SETRESUID, _KEEP, 0, _KEEP)
    _call(_SETRESGID, _KEEP, 0, _KEEP)
    _set_groups(groups)
