"""Writing one message into a mailbox: Maildir or mbox, with locks.

Shared by the local and virtual delivery agents. The agent decides where
and as whom; this module does the writing so that a mailbox never holds
half a message:

  Maildir  the message goes to tmp/ (created with O_EXCL), is fsynced, then
           linked into new/ under Postfix's unique name
           TIME.VdevIinodeMusec.HOST, and new/ is fsynced.
  mbox     the mailbox is locked (dotlock, fcntl and/or flock, in the order
           Postfix takes them), a `From sender  DATE` line, the envelope
           headers and the message (body lines `From ` quoted as `>From `)
           are appended, with an empty line after it, then fsync. A failed
           append is truncated back to the old size.

Failures raise MailboxError carrying an enhanced status code: a 4.x.x code
means "try again later" (lock busy, disk full), a 5.x.x code means "this
will never work" (file too large for the size limit, not a regular file).

Interface:
    MailboxError(dsn, reason).temporary
    as_user(uid, gid)                      context: effective ids of a recipient
    envelope_headers(sender, orig_rcpt, delivered_to) -> bytes
    has_delivered_to(content, address) -> bool     loop detection
    from_line(sender, when=None) -> bytes
    quote_from(content) -> bytes
    deliver_maildir(maildir, prefix, content, size_limit=0) -> path
    deliver_mbox(path, prefix, content, sender, locks, size_limit=0,
                 lock_attempts=20, lock_delay=1.0, stale_time=500,
                 create_owner=None, strict_owner=False) -> None
    LOCK_STYLES, parse_lock_styles(names) -> list[str]
"""

from __future__ import annotations

import errno
import fcntl
import functools
import itertools
import os
import re
import socket
import stat
import time
from contextlib import contextmanager
from typing import Iterator

from pymaster.util import safeio, thread_ids

LOCK_STYLES = ("fcntl", "flock", "dotlock")
_maildir_counter = itertools.count()
_FROM_LINE_RE = re.compile(rb"^From ", re.M)


class MailboxError(Exception):
    """A delivery into a mailbox failed; DSN's class says whether to retry."""

    def __init__(self, dsn: str, reason: str) -> None:
        super().__init__(reason)
        self.dsn = dsn
        self.reason = reason

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")


def errno_dsn(err: int | None) -> str:
    """errno_dsn - the status code for a failed write: full mailbox bounces, the rest retries."""
    if err in (errno.EFBIG, errno.EDQUOT):
        return "5.2.2"
    if err == errno.ENOSPC:
        return "4.3.1"
    return "4.2.0"


# -- privileges ------------------------------------------------------------

@contextmanager
def as_user(uid: int | None, gid: int | None) -> Iterator[None]:
    """as_user - run the block with the recipient's effective uid and gid.

    Only root can switch; run as anyone else (the in-tree instance) the
    block runs with the process's own ids. The real uid stays root, so the
    switch back is always possible."""
    if uid is None or os.geteuid() != 0:
        yield
        return
    gid = gid if gid is not None else uid
    saved_groups = os.getgroups()
    # This thread only (thread_ids): zeromq's threads need not follow.
    thread_ids.set_effective(uid, gid, [gid])
    try:
        yield
    finally:
        thread_ids.set_root(saved_groups)


# -- headers ----------------------------------------------------------------

def envelope_headers(sender: str, orig_rcpt: str | None, delivered_to: str | None) -> bytes:
    """envelope_headers - Return-Path, X-Original-To and Delivered-To, as local(8) adds them."""
    lines = [f"Return-Path: <{sender}>\n"]
    if orig_rcpt:
        lines.append(f"X-Original-To: {orig_rcpt}\n")
    if delivered_to:
        lines.append(f"Delivered-To: {delivered_to}\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


def header_section(content: bytes) -> bytes:
    """header_section - the message's headers, up to the first empty line."""
    if content.startswith(b"\n"):
        return b""
    end = content.find(b"\n\n")
    return content if end < 0 else content[:end + 1]


def has_delivered_to(content: bytes, address: str) -> bool:
    """has_delivered_to - whether a Delivered-To: header names ADDRESS (a mail loop)."""
    want = address.strip().lower().encode("utf-8", "surrogateescape")
    for line in header_section(content).split(b"\n"):
        if line[:13].lower() == b"delivered-to:" and line[13:].strip().lower() == want:
            return True
    return False


# -- mbox ---------------------------------------------------------------------

def from_line(sender: str, when: float | None = None) -> bytes:
    """from_line - the mbox separator `From sender  Sat Nov 28 20:03:44 2026`."""
    stamp = time.asctime(time.localtime(time.time() if when is None else when))
    return f"From {sender or 'MAILER-DAEMON'}  {stamp}\n".encode("utf-8", "surrogateescape")


def quote_from(content: bytes) -> bytes:
    """quote_from - `>From ` for every line that starts with `From `, so readers
    do not split there."""
    return _FROM_LINE_RE.sub(b">From ", content)


def mbox_entry(prefix: bytes, content: bytes, sender: str) -> bytes:
    """mbox_entry - the bytes appended to an mbox for one message."""
    body = quote_from(content)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return b"".join((from_line(sender), prefix, body, b"\n"))


def parse_lock_styles(names: list[str]) -> list[str]:
    """parse_lock_styles - validate a mailbox_delivery_lock style list."""
    styles = [n.strip().lower() for n in names if n.strip()]
    for name in styles:
        if name not in LOCK_STYLES:
            raise MailboxError("4.3.5", f"unknown mailbox lock method: {name}")
    if not styles:
        raise MailboxError("4.3.5", "no applicable mailbox locking method")
    return styles


def dotlock(path: str, attempts: int, delay: float, stale_time: float) -> str:
    """dotlock - create PATH.lock exclusively; a lock older than STALE_TIME is broken."""
    lock = path + ".lock"
    for attempt in range(max(1, attempts)):
        try:
            os.close(os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return lock
        except FileExistsError:
            _remove_stale(lock, stale_time)
        except OSError as e:
            raise MailboxError("4.2.0",
                               f"unable to create lock file {lock}: {e.strerror}") from None
        if attempt + 1 < attempts:
            time.sleep(delay)
    raise MailboxError("4.2.0", f"unable to create lock file {lock}: File exists")


def _remove_stale(lock: str, stale_time: float) -> None:
    try:
        if time.time() - os.stat(lock).st_mtime > stale_time:
            os.unlink(lock)
    except OSError:
        pass


def kernel_lock(fd: int, style: str, attempts: int, delay: float) -> None:
    """kernel_lock - an exclusive fcntl or flock lock on FD, retried ATTEMPTS times."""
    for attempt in range(max(1, attempts)):
        try:
            if style == "fcntl":
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise MailboxError("4.2.0", "unable to lock for exclusive access: "
                                   f"{e.strerror}") from None
        if attempt + 1 < attempts:
            time.sleep(delay)
    raise MailboxError("4.2.0", "unable to lock for exclusive access: "
                       + os.strerror(errno.EAGAIN))


def open_mbox(path: str, create_owner: tuple[int, int] | None, strict_owner: bool = False) -> int:
    """open_mbox - open PATH for appending, creating it 0600; refuse anything but a regular file.

    CREATE_OWNER (uid, gid): a mailbox root creates in a spool directory is
    given to its user; with STRICT_OWNER an existing one owned by somebody
    else is refused (strict_mailbox_ownership)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise MailboxError("5.2.0", f"destination {path} is not a regular file")
    if create_owner is not None and os.geteuid() == 0 and st.st_uid != create_owner[0]:
        if st.st_size == 0 and st.st_uid == 0:
            os.fchown(fd, *create_owner)
        elif strict_owner:
            os.close(fd)
            raise MailboxError("4.2.0", f"destination {path} is not owned by recipient")
    return fd


def append_all(fd: int, data: bytes, size_limit: int) -> None:
    """append_all - write DATA at the end of FD, or put the file back as it was."""
    old_size = os.fstat(fd).st_size
    try:
        if size_limit and old_size + len(data) > size_limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        os.ftruncate(fd, old_size)
        raise MailboxError(errno_dsn(e.errno), f"error writing message: {e.strerror}") from None


def deliver_mbox(path: str, prefix: bytes, content: bytes, sender: str,
                 locks: list[str], size_limit: int = 0, lock_attempts: int = 20,
                 lock_delay: float = 1.0, stale_time: float = 500,
                 create_owner: tuple[int, int] | None = None,
                 strict_owner: bool = False) -> None:
    """deliver_mbox - append one message to the mbox PATH under LOCKS (dotlock first).

    Missing parent directories are created (mode 0700) by whoever writes."""
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    except OSError as e:
        raise MailboxError("4.2.0", f"cannot create directory for {path}: {e.strerror}") from None
    dot = dotlock(path, lock_attempts, lock_delay, stale_time) if "dotlock" in locks else None
    try:
        try:
            fd = open_mbox(path, create_owner, strict_owner)
        except OSError as e:
            raise MailboxError("4.2.0", f"cannot open file: {e.strerror}") from None
        try:
            for style in locks:
                if style != "dotlock":
                    kernel_lock(fd, style, lock_attempts, lock_delay)
            append_all(fd, mbox_entry(prefix, content, sender), size_limit)
        finally:
            os.close(fd)  # closing drops the fcntl and flock locks
    finally:
        if dot is not None:
            try:
                os.unlink(dot)
            except OSError:
                pass


# -- Maildir ------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _hostname() -> str:
    # Asked once per process (two names per message), as Postfix's own
    # get_hostname() does. The Maildir specification reserves '/' and ':'.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072")


def maildir_tmp_name(now: float) -> str:
    """maildir_tmp_name - TIME.PPID_N.HOST: unique within this host, process and run."""
    return f"{int(now)}.P{os.getpid()}_{next(_maildir_counter)}.{_hostname()}"


def maildir_new_name(now: float, st: os.stat_result) -> str:
    """maildir_new_name - TIME.VdevIinodeMusec.HOST, the name Postfix gives a new message."""
    usec = int((now - int(now)) * 1_000_000)
    return f"{int(now)}.V{st.st_dev:x}I{st.st_ino:x}M{usec}.{_hostname()}"


def make_maildir(maildir: str) -> None:
    """make_maildir - create MAILDIR and its tmp/, new/ and cur/ (and parents) if missing."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), mode=0o700, exist_ok=True)


def deliver_maildir(maildir: str, prefix: bytes, content: bytes, size_limit: int = 0) -> str:
    """deliver_maildir - write one message into MAILDIR/new; return the file's path.

    MAILDIR and its subdirectories are created when a write finds one
    missing, so a delivery to an existing Maildir costs no mkdir."""
    now = time.time()
    tail = b"\n" if content and not content.endswith(b"\n") else b""
    tmp = os.path.join(maildir, "tmp", maildir_tmp_name(now))
    if size_limit and len(prefix) + len(content) + len(tail) > size_limit:
        # Refused unwritten; the Maildir is there afterwards all the same.
        _with_maildir(maildir, os.stat, os.path.join(maildir, "cur"))
        raise MailboxError("5.2.2", f"create maildir file {tmp}: {os.strerror(errno.EFBIG)}")
    try:
        st = _with_maildir(maildir, _write_new, tmp, (prefix, content, tail))
    except MailboxError:
        raise
    except OSError as e:
        raise MailboxError(errno_dsn(e.errno), f"create maildir file {tmp}: {e.strerror}") from None
    new = os.path.join(maildir, "new", maildir_new_name(now, st))
    try:
        _with_maildir(maildir, os.link, tmp, new)
        safeio.fsync_dir(os.path.dirname(new))
    except MailboxError:
        raise
    except OSError as e:
        raise MailboxError("4.2.0", f"create maildir file {new}: {e.strerror}") from None
    finally:
        _unlink_quietly(tmp)
    return new


def _with_maildir(maildir: str, op, *args):
    """_with_maildir - OP(*ARGS); when a directory is missing, create the
    Maildir's and try once more."""
    try:
        return op(*args)
    except FileNotFoundError:
        pass
    try:
        make_maildir(maildir)
    except OSError as e:
        raise MailboxError("4.2.0", f"create maildir file {maildir}: {e.strerror}") from None
    return op(*args)


def _write_new(path: str, parts: tuple[bytes, ...]) -> os.stat_result:
    """_write_new - a new file PATH holding PARTS, fsynced; its status."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_parts(fd, parts)
        os.fsync(fd)
        return os.fstat(fd)
    except OSError:
        _unlink_quietly(path)
        raise
    finally:
        os.close(fd)


def _write_parts(fd: int, parts: tuple[bytes, ...]) -> None:
    """_write_parts - all of PARTS to FD, in order, without joining them first."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
