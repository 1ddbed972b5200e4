"""The queue store: queue IDs, queue directories, writing, moving and scanning files.

Every path here is relative to the queue directory, which is every pymaster
program's working directory (so the same code runs inside a chroot).

Directories (create_layout): the message queues `maildrop incoming active
deferred hold corrupt`, the per-message logs `bounce defer trace flush`, and
`saved pid private public etc`. The queues named in `hash_queue_names`
(default `deferred, defer`) are split into `hash_queue_depth` levels of
one-character subdirectories, created on demand: `deferred/X/ID`.

Queue IDs follow Postfix's long form: the arrival time in seconds (6
characters) and microseconds (4 characters) in base 52, the separator `z`,
then the file's inode number in base 51 (an alphabet without `z`). IDs are
unique across restarts (the inode is unique among live files, the time moves
on), and plain string order is arrival order. The hashed subdirectories use
the low microsecond characters, which are evenly spread.

A file is written under a temporary name (`.tmp.PID.N`, never picked up by
scan), named by its ID once its inode is known, and is complete once its
owner-execute bit is set, after the data is fsynced (commit). Readers skip
incomplete files; `postsuper -p` removes stale ones.

A file may also be reserved first and written later, by another process
(smtpd learns the queue ID at the first accepted recipient, as in Postfix,
and any cleanup worker writes the message at end of data): `reserve`
leaves an empty incomplete file, `open_reserved` takes it over (truncated),
`release` removes one that was not written. Whoever writes, releases or
sweeps a reserved file holds an exclusive flock on it and checks that it is
still linked and incomplete, so a sweep can never remove a file a writer
has taken, and a writer never writes into a removed file.

Interface:
    configure(cfg)                      hash_queue_names / hash_queue_depth / mail_owner
    make_dirs(path)                     a queue directory: 0700, mail_owner's when root
    create(queue_name, fs=None, mode=0o600) -> QueueWriter
        .queue_id .path .write_envelope(...) .write_content(chunks) .commit() .abort()
    reserve(queue_name) -> queue_id     an empty incomplete file, written later
    open_reserved(queue_name, queue_id, fs=None) -> QueueWriter
                                        FileNotFoundError: gone or already complete
    release(queue_name, queue_id) -> bool   remove a reserved file not yet complete
    sweep_reserved(queue_name, max_age) -> list[queue_id]   remove stale ones
    path_of(queue_name, queue_id) -> str
    move(queue_id, src, dst) -> str     rename; hashed subdirectories made on demand
    remove(queue_id, queue_name) -> bool   the file and its defer/bounce/trace logs
    unlink_if_present(path) -> bool     False when it was already gone
    flushing_log(path) -> context of bool   one flush of a bounce or trace log at a time
    quarantine(queue_id, src_queue, reason="") -> str   move to corrupt/ with a warning
    scan(queue_name) -> Iterator[(queue_id, path)]
    find(queue_id, queues=MESSAGE_QUEUES) -> (queue_name, path) | None
    is_complete(path) / set_retry_time(path, when) / retry_time(path)
    defer_log_path(id) / bounce_log_path(id) / trace_log_path(id)
    log_paths(id) -> [defer, bounce, trace]
    create_layout(queue_dir, owner=None, setgid_group=None)
    enter_spool(cfg)                    configure, then chdir to queue_directory
    new_queue_id(inode, when) / queue_id_time(queue_id) / is_queue_id(name)
    queue_id_inode(queue_id) / with_inode(queue_id, inode)
    FileSystem: the write/fsync seam a test replaces to simulate a full disk
"""

from __future__ import annotations

import errno
import fcntl
import grp
import itertools
import os
import pwd
import re
import stat
import time
from contextlib import contextmanager
from typing import Iterable, Iterator

from pymaster.mail import records
from pymaster.util import log

MESSAGE_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold", "corrupt")
LOG_QUEUES = ("bounce", "defer", "trace", "flush")
QUEUE_NAMES = MESSAGE_QUEUES + LOG_QUEUES
OTHER_DIRS = ("saved", "pid", "private", "public", "etc")
ALL_DIRS = QUEUE_NAMES + OTHER_DIRS

# Base 52: digits, then consonants upper and lower case. ASCII order equals
# digit order, so string order of IDs is numeric order of the time.
ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
INODE_ALPHABET = ALPHABET[:-1]            # base 51: no `z`, the separator
SEC_WIDTH, USEC_WIDTH = 6, 4
SEPARATOR = "z"
TEMP_PREFIX = ".tmp."
COMPLETE_MODE = 0o700
INCOMPLETE_MODE = 0o600
QUEUE_ID_RE = re.compile(r"[0-9A-Za-z]{6,}")
_LONG_ID_RE = re.compile(f"[{ALPHABET}]{{{SEC_WIDTH + USEC_WIDTH}}}{SEPARATOR}")
WRITE_BUFFER = 1 << 16

_hash_names: frozenset[str] = frozenset(("deferred", "defer"))
_hash_depth = 1
_temp_counter = itertools.count(1)     # next() is atomic: safe across threads


def configure(cfg) -> None:
    """configure - take hash_queue_names, hash_queue_depth and mail_owner from CFG."""
    global _hash_names, _hash_depth, _dir_owner
    _hash_names = frozenset(cfg.list("hash_queue_names"))
    _hash_depth = max(0, cfg.int("hash_queue_depth"))
    try:
        owner = pwd.getpwnam(cfg.get("mail_owner"))
        _dir_owner = (owner.pw_uid, owner.pw_gid)
    except KeyError:
        _dir_owner = None


# (uid, gid) of mail_owner: a directory a root process creates in the spool
# must be mail_owner's, or the unprivileged daemons cannot use it.
_dir_owner: tuple[int, int] | None = None
QUEUE_DIR_MODE = 0o700


def make_dirs(path: str) -> None:
    """make_dirs - create PATH and its missing parents as queue directories:
    mode 0700, and, when run as root, owned by mail_owner (as Postfix's
    commands create hashed subdirectories after dropping to mail_owner), or
    by the parent directory's owner when no configuration named one."""
    if not path or os.path.isdir(path):
        return
    make_dirs(os.path.dirname(path))
    try:
        os.mkdir(path, QUEUE_DIR_MODE)
    except FileExistsError:
        return
    if os.geteuid() == 0:
        # Unconfigured (a tool that built a spool by hand): the parent's owner,
        # which create_layout made mail_owner for every queue directory.
        parent = os.stat(os.path.dirname(os.path.abspath(path)))
        os.chown(path, *(_dir_owner or (parent.st_uid, parent.st_gid)))


# -- queue IDs ----------------------------------------------------------------

def _encode(n: int, alphabet: str, width: int = 0) -> str:
    base = len(alphabet)
    digits = []
    while n:
        n, d = divmod(n, base)
        digits.append(alphabet[d])
    text = "".join(reversed(digits)) or alphabet[0]
    return text.rjust(width, alphabet[0])


def _decode(text: str, alphabet: str) -> int:
    n = 0
    for c in text:
        n = n * len(alphabet) + alphabet.index(c)
    return n


# The seconds part of the last ID made: every ID within the same second
# shares it, and encoding it was a third of new_queue_id's time.
_last_seconds: tuple[int, str] = (-1, "")


def new_queue_id(inode: int, when: float | None = None) -> str:
    """new_queue_id - the long-form ID for a file with INODE created at WHEN."""
    global _last_seconds
    if when is None:
        when = time.time()
    sec = int(when)
    usec = min(999999, int(round((when - sec) * 1e6)))
    last = _last_seconds        # one read: another thread may replace it
    if last[0] != sec:
        last = _last_seconds = (sec, _encode(sec, ALPHABET, SEC_WIDTH))
    return (last[1] + _encode(usec, ALPHABET, USEC_WIDTH)
            + SEPARATOR + _encode(inode, INODE_ALPHABET))


def queue_id_time(queue_id: str) -> float | None:
    """queue_id_time - the creation time encoded in a long ID, else None."""
    head = queue_id[:SEC_WIDTH + USEC_WIDTH]
    if len(queue_id) <= len(head) or queue_id[len(head)] != SEPARATOR:
        return None
    try:
        sec = _decode(head[:SEC_WIDTH], ALPHABET)
        usec = _decode(head[SEC_WIDTH:], ALPHABET)
    except ValueError:
        return None
    return sec + usec / 1e6


def queue_id_inode(queue_id: str) -> int | None:
    """queue_id_inode - the inode number encoded in a long ID, else None."""
    if queue_id_time(queue_id) is None:
        return None
    try:
        return _decode(queue_id[SEC_WIDTH + USEC_WIDTH + 1:], INODE_ALPHABET)
    except ValueError:
        return None


def with_inode(queue_id: str, inode: int) -> str:
    """with_inode - QUEUE_ID with its inode part replaced (postsuper -s)."""
    return queue_id[:SEC_WIDTH + USEC_WIDTH + 1] + _encode(inode, INODE_ALPHABET)


def is_queue_id(name: str) -> bool:
    """is_queue_id - whether NAME can be a queue file name (no temp files)."""
    return bool(QUEUE_ID_RE.fullmatch(name))


# -- paths --------------------------------------------------------------------

def _hash_dirs(queue_id: str) -> list[str]:
    """_hash_dirs - the subdirectory names for QUEUE_ID, outermost first."""
    # The low microsecond characters vary fastest; for an ID that is not in
    # the long form (a Postfix short ID), its first characters do the job.
    if _LONG_ID_RE.match(queue_id):     # what queue_id_time accepts, without decoding
        source = queue_id[SEC_WIDTH + USEC_WIDTH - 1::-1]
    else:
        source = queue_id
    return list(source[:_hash_depth])


def is_hashed(queue_name: str) -> bool:
    return queue_name in _hash_names and _hash_depth > 0


def path_of(queue_name: str, queue_id: str) -> str:
    """path_of - where QUEUE_ID lives in QUEUE_NAME, relative to the queue dir."""
    # Joined by hand: qmgr makes six paths per message, and os.path.join
    # was most of their cost. An empty name or one with a slash (not a queue
    # ID, which find() and the tools may be given) keeps os.path.join's meaning.
    if "/" in queue_id or not queue_id or not queue_name or queue_name[-1] == "/":
        return _joined_path(queue_name, queue_id)
    if queue_name in _hash_names and _hash_depth > 0:
        return f"{queue_name}/{'/'.join(_hash_dirs(queue_id))}/{queue_id}"
    return f"{queue_name}/{queue_id}"


def _joined_path(queue_name: str, queue_id: str) -> str:
    if is_hashed(queue_name):
        return os.path.join(queue_name, *_hash_dirs(queue_id), queue_id)
    return os.path.join(queue_name, queue_id)


def defer_log_path(queue_id: str) -> str:
    return path_of("defer", queue_id)


def bounce_log_path(queue_id: str) -> str:
    return path_of("bounce", queue_id)


def trace_log_path(queue_id: str) -> str:
    return path_of("trace", queue_id)


def log_paths(queue_id: str) -> list[str]:
    """log_paths - QUEUE_ID's defer, bounce and trace log paths."""
    return [defer_log_path(queue_id), bounce_log_path(queue_id), trace_log_path(queue_id)]


# -- the write seam -------------------------------------------------------------

class FileSystem:
    """The system calls the writer makes that can fail with a full disk.

    A test subclasses this to raise OSError(ENOSPC) from write or fsync."""

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)


DEFAULT_FS = FileSystem()


# -- the writer ------------------------------------------------------------------

class QueueWriter:
    """One new queue file, from creation to commit (or abort).

    Any OSError while writing (a full disk: ENOSPC, EDQUOT) removes the
    half-written file and is raised again, so the caller answers with a
    temporary failure and nothing incomplete stays behind."""

    def __init__(self, queue_name: str, fs: FileSystem | None = None,
                 mode: int = INCOMPLETE_MODE, reserved_id: str = "") -> None:
        self.queue_name = queue_name
        self.mode = mode
        self.fs = fs or DEFAULT_FS
        self.fd = -1
        self.path = ""
        self.queue_id = ""
        self.offset = 0
        self.buffer = bytearray()
        self.rcpt_count = 0
        self.content_header = -1
        self.content_length = 0
        self.done = False
        if reserved_id:
            self._reopen(reserved_id)
        else:
            self._open()

    def _open(self) -> None:
        temp = os.path.join(self.queue_name, f"{TEMP_PREFIX}{os.getpid()}.{next(_temp_counter)}")
        self.fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, self.mode)
        try:
            st = os.fstat(self.fd)
            if stat.S_IMODE(st.st_mode) != self.mode:
                os.fchmod(self.fd, self.mode)        # whatever the umask says
            self._name(temp, st.st_ino)
        except BaseException:
            os.close(self.fd)
            unlink_if_present(temp)
            raise

    def _reopen(self, queue_id: str) -> None:
        """_reopen - take over the reserved file QUEUE_ID: locked, emptied."""
        path = path_of(self.queue_name, queue_id)
        fd = _lock_reserved(path, empty=True)
        if fd < 0:
            raise FileNotFoundError(errno.ENOENT, "no reserved queue file", path)
        # The lock stays until commit or abort closes the descriptor.
        self.fd, self.queue_id, self.path = fd, queue_id, path

    def _name(self, temp: str, inode: int) -> None:
        """_name - link the temporary file under a fresh queue ID."""
        while True:
            queue_id = new_queue_id(inode)
            path = path_of(self.queue_name, queue_id)
            try:
                os.link(temp, path)
            except FileExistsError:
                # Same inode and microsecond: only after the clock went back.
                time.sleep(0.000001)
                continue
            except FileNotFoundError:
                make_dirs(os.path.dirname(path))
                continue
            break
        os.unlink(temp)
        self.queue_id, self.path = queue_id, path

    # -- records -----------------------------------------------------------
    def _put(self, data: bytes) -> None:
        self.buffer += data
        self.offset += len(data)
        if len(self.buffer) >= WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        view = memoryview(self.buffer)
        try:
            while view:
                n = self.fs.write(self.fd, view)
                view = view[n:]
        finally:
            view.release()
        self.buffer.clear()

    def _guard(self, func, *args):
        """_guard - run FUNC; on an OSError remove the file and raise again."""
        if self.done:
            raise ValueError(f"queue file {self.path} already committed or aborted")
        try:
            return func(*args)
        except OSError:
            self.abort()
            raise

    def write_envelope(self, arrival_time: float, sender: str,
                       recipients: list[records.Recipient], attrs: dict[str, str]) -> None:
        """write_envelope - size placeholder, time, attributes, sender, recipients."""
        self._guard(self._write_envelope, arrival_time, sender, recipients, attrs)

    def _write_envelope(self, arrival_time, sender, recipients, attrs) -> None:
        if self.offset == 0:
            self._put(records.size_record(0, 0, 0))
        data = records.envelope_records(arrival_time, sender, [], attrs)
        self._put(data)
        for r in recipients:
            self._add_recipient(r)

    def add_recipient(self, r: records.Recipient) -> int:
        """add_recipient - one more recipient; returns its record's offset.

        After write_content it lands in the extracted section."""
        return self._guard(self._add_recipient, r)

    def _add_recipient(self, r: records.Recipient) -> int:
        data = records.recipient_records(r)
        rcpt_len = records.HEADER_SIZE + len(r.address.encode("utf-8", "surrogateescape"))
        r.offset = self.offset + len(data) - rcpt_len
        self._put(data)
        self.rcpt_count += 1
        return r.offset

    def write_content(self, chunks: Iterable[bytes]) -> None:
        """write_content - append message content (may be called repeatedly)."""
        self._guard(self._write_content, chunks)

    def _write_content(self, chunks: Iterable[bytes]) -> None:
        if self.content_header < 0:
            if self.offset == 0:
                self._put(records.size_record(0, 0, 0))
            self.content_header = self.offset
            self._put(records.HEADER.pack(records.REC_CONTENT, 0))
        for chunk in chunks:
            if not chunk:
                continue
            self.content_length += len(chunk)
            if len(chunk) >= WRITE_BUFFER:
                self._flush()
                self.offset += len(chunk)
                self.buffer += chunk
                self._flush()
            else:
                self._put(bytes(chunk))
        if self.content_length > records.MAX_RECORD:
            raise OSError(errno.EFBIG, "message content too large for one queue file")

    def commit(self, into: str | None = None) -> str:
        """commit - end record, patch sizes, fsync, mark complete; the queue ID.

        INTO names another queue (hold) that the file moves to while it is
        still incomplete, so that qmgr, which takes only complete files from
        incoming, can never see it there."""
        return self._guard(self._commit, into)

    def _commit(self, into: str | None) -> str:
        if into is not None and into != self.queue_name:
            self._move_incomplete(into)
        if self.content_header < 0:
            self._write_content(())
        self._put(records.encode(records.REC_END, b""))
        content_offset = self.content_header + records.HEADER_SIZE
        patches = ((records.HEADER.pack(records.REC_CONTENT, self.content_length),
                    self.content_header),
                   (records.size_record(self.content_length, content_offset,
                                        self.rcpt_count), 0))
        if len(self.buffer) == self.offset:
            # Nothing written yet (a message smaller than WRITE_BUFFER): patch
            # the buffer, and the whole file goes out in one write().
            for data, at in patches:
                self.buffer[at:at + len(data)] = data
            self._flush()
        else:
            self._flush()
            for data, at in patches:
                self.fs.pwrite(self.fd, data, at)
        # The completion mark goes on before the one fsync, so the data and
        # the mark reach the disk together and the caller may then say 250.
        os.fchmod(self.fd, self.mode | stat.S_IXUSR)
        self.fs.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        self.done = True
        return self.queue_id

    def _move_incomplete(self, queue_name: str) -> None:
        """_move_incomplete - rename the unfinished file into QUEUE_NAME."""
        path = path_of(queue_name, self.queue_id)
        try:
            os.rename(self.path, path)
        except FileNotFoundError:
            make_dirs(os.path.dirname(path))
            os.rename(self.path, path)
        self.queue_name, self.path = queue_name, path

    def abort(self) -> None:
        """abort - close and remove the unfinished file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.done and self.path:
            unlink_if_present(self.path)
        self.done = True

    def __enter__(self) -> "QueueWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.done:
            self.abort()


def create(queue_name: str, fs: FileSystem | None = None,
           mode: int = INCOMPLETE_MODE) -> QueueWriter:
    """create - a new, incomplete queue file in QUEUE_NAME.

    MODE is the file's mode while it is written (0600; maildrop files are
    0644 so pickup, running as mail_owner, can read a user's file); commit
    adds the owner-execute bit."""
    return QueueWriter(queue_name, fs, mode)


def reserve(queue_name: str) -> str:
    """reserve - an empty, incomplete file in QUEUE_NAME; its queue ID.

    Readers skip it like any incomplete file until open_reserved's writer
    commits it."""
    writer = QueueWriter(queue_name)
    os.close(writer.fd)
    writer.fd, writer.done = -1, True
    return writer.queue_id


def open_reserved(queue_name: str, queue_id: str, fs: FileSystem | None = None) -> QueueWriter:
    """open_reserved - a writer for the reserved file QUEUE_ID, emptied.

    Raises FileNotFoundError when the reservation is gone (released, swept,
    removed by postsuper) or the file is already complete."""
    if not is_queue_id(queue_id):
        raise FileNotFoundError(errno.ENOENT, "bad queue ID", queue_id)
    return QueueWriter(queue_name, fs, reserved_id=queue_id)


def release(queue_name: str, queue_id: str) -> bool:
    """release - remove the reserved file QUEUE_ID unless it was completed."""
    if not is_queue_id(queue_id):
        return False
    path = path_of(queue_name, queue_id)
    fd = _lock_reserved(path)     # waits while a writer holds it
    if fd < 0:
        return False
    try:
        os.unlink(path)
    finally:
        os.close(fd)
    return True


def sweep_reserved(queue_name: str, max_age: float) -> list[str]:
    """sweep_reserved - remove incomplete files untouched for MAX_AGE seconds.

    They are reservations whose client went away without a word (a killed
    smtpd) or files of a writer that crashed. A file being written is
    locked, or was touched recently, and stays."""
    removed = []
    limit = time.time() - max_age
    for queue_id, path in list(scan(queue_name)):
        try:
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if st.st_mode & stat.S_IXUSR or st.st_mtime > limit:
            continue
        fd = _lock_reserved(path, wait=False)
        if fd < 0:
            continue
        try:
            if os.fstat(fd).st_mtime <= limit:
                os.unlink(path)
                removed.append(queue_id)
        finally:
            os.close(fd)
    return removed


def _lock_reserved(path: str, wait: bool = True, empty: bool = False) -> int:
    """_lock_reserved - PATH opened and flocked while still linked and
    incomplete; -1 when it is not (or, without WAIT, when someone holds it).
    EMPTY: truncated as well, when it is not empty already."""
    fd, st = _lock_linked(path, os.O_RDWR, wait)
    if st is None:
        return -1
    try:
        # Committed, or not a plain file: not ours.
        if st.st_mode & stat.S_IXUSR or not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return -1
        # A reservation is empty unless a writer died mid-way: no ftruncate
        # (a system call) for the usual case.
        if empty and st.st_size > 0:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _lock_linked(path: str, mode: int,
                 wait: bool = True) -> tuple[int, os.stat_result | None]:
    """_lock_linked - PATH opened (MODE) and flocked while still linked:
    (descriptor, its stat); (-1, None) when it is gone, unlinked while we
    waited for the lock, or (without WAIT) held by someone else."""
    try:
        fd = os.open(path, mode | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ELOOP):
            return -1, None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return -1, None
        st = os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise
    if st.st_nlink == 0:
        os.close(fd)
        return -1, None
    return fd, st


@contextmanager
def flushing_log(path: str) -> Iterator[bool]:
    """flushing_log - hold the bounce or trace log PATH for one flush: True
    while it is there to flush, False when it is gone, also when another
    flush removed it while this one waited for the lock.

    A flush removes the log before it lets go, so a second request for the
    same message (one that qmgr gave up on while the first still waited on
    cleanup, and sent again) finds nothing and sends no second notice."""
    fd, _ = _lock_linked(path, os.O_RDONLY)
    try:
        yield fd >= 0
    finally:
        if fd >= 0:
            os.close(fd)


def unlink_if_present(path: str) -> bool:
    """unlink_if_present - remove PATH; False when it was already gone."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


# -- moving, removing, scanning ------------------------------------------------------

def move(queue_id: str, src: str, dst: str) -> str:
    """move - rename QUEUE_ID from queue SRC to queue DST; the new path."""
    old, new = path_of(src, queue_id), path_of(dst, queue_id)
    try:
        os.rename(old, new)
    except FileNotFoundError:
        if not os.path.exists(old):
            raise
        make_dirs(os.path.dirname(new))
        os.rename(old, new)
    return new


def remove(queue_id: str, queue_name: str, notice_logs: bool = True) -> bool:
    """remove - delete a message file and its defer, bounce and trace logs.

    NOTICE_LOGS False: the caller has just seen that there is no bounce or
    trace log (qmgr, finishing a message no agent works on any more), so
    only the defer log is tried: two failing unlink()s fewer per message."""
    found = unlink_if_present(path_of(queue_name, queue_id))
    for log_path in log_paths(queue_id) if notice_logs else [defer_log_path(queue_id)]:
        unlink_if_present(log_path)
    return found


def quarantine(queue_id: str, src_queue: str, reason: str = "") -> str:
    """quarantine - move a corrupt file to corrupt/ and say so in the log."""
    new = move(queue_id, src_queue, "corrupt")
    why = f": {reason}" if reason else ""
    log.warning(f"corrupt queue file {src_queue}/{queue_id}{why}; "
                f"saved to queue corrupt as {new}")
    return new


def scan(queue_name: str) -> Iterator[tuple[str, str]]:
    """scan - (queue_id, path) of every queue file in QUEUE_NAME, any depth.

    Hashed subdirectories are searched whatever the current depth, so files
    left by an earlier hash_queue_depth are still found. Temporary files
    (dot names) are not listed."""
    for name, path, _ in _scan_dir(queue_name, 0):
        yield name, path


def scan_by_inode(queue_name: str) -> list[tuple[str, str]]:
    """scan_by_inode - scan, in the order of the files' inode numbers.

    A pass that unlinks or rewrites every file touches each inode table
    block once this way; in directory (hash) order it dirties them at
    random, and a big queue's deletion waits on the journal."""
    return [(name, path) for name, path, _ in
            sorted(_scan_dir(queue_name, 0), key=lambda found: found[2])]


def _scan_dir(directory: str, depth: int) -> Iterator[tuple[str, str, int]]:
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    # qmgr walks incoming/ at every wakeup: the entry's own path (joined in
    # C) and the pattern itself, not os.path.join and is_queue_id per file.
    fullmatch = QUEUE_ID_RE.fullmatch
    for entry in entries:
        name = entry.name
        if name[0] == ".":
            continue
        if len(name) == 1 and depth < 16 and entry.is_dir(follow_symlinks=False):
            yield from _scan_dir(entry.path, depth + 1)
        elif fullmatch(name):
            yield name, entry.path, entry.inode()


def find(queue_id: str, queues: Iterable[str] = MESSAGE_QUEUES) -> tuple[str, str] | None:
    """find - (queue_name, path) of QUEUE_ID in the first queue that holds it."""
    for name in queues:
        path = path_of(name, queue_id)
        if os.path.exists(path):
            return name, path
    return None


def is_complete(path: str) -> bool:
    """is_complete - whether the completion mark (owner-execute bit) is set."""
    try:
        return bool(os.stat(path).st_mode & stat.S_IXUSR)
    except FileNotFoundError:
        return False


def set_retry_time(path: str, when: float) -> None:
    """set_retry_time - when qmgr may try a deferred file again (its mtime)."""
    os.utime(path, (when, when))


def retry_time(path: str) -> float:
    return os.stat(path).st_mtime


# -- the directory layout ----------------------------------------------------------

def _layout_modes(name: str) -> tuple[int, bool, bool]:
    """_layout_modes - (mode, owned by mail_owner, group setgid_group) for NAME."""
    if name == "maildrop":
        return 0o730, True, True
    if name == "public":
        return 0o710, True, True
    if name in ("pid", "etc"):
        return 0o755, False, False
    return 0o700, True, False


def create_layout(queue_dir: str, owner: str | None = None,
                  setgid_group: str | None = None) -> None:
    """create_layout - make every queue directory under QUEUE_DIR.

    Running as root with OWNER known, directories get Postfix's owners and
    modes (maildrop 0730 and public 0710 with group SETGID_GROUP). Otherwise
    they are plain 0700 (0755 for pid and etc) directories of this user."""
    os.makedirs(queue_dir, exist_ok=True)
    uid = gid = None
    if os.geteuid() == 0 and owner:
        try:
            uid = pwd.getpwnam(owner).pw_uid
        except KeyError:
            uid = None
        if uid is not None and setgid_group:
            try:
                gid = grp.getgrnam(setgid_group).gr_gid
            except KeyError:
                gid = None
    for name in ALL_DIRS:
        path = os.path.join(queue_dir, name)
        os.makedirs(path, exist_ok=True)
        mode, owned, grouped = _layout_modes(name)
        if uid is None:
            os.chmod(path, 0o755 if mode == 0o755 else 0o700)
            continue
        os.chown(path, uid if owned else 0, gid if grouped and gid is not None else -1)
        os.chmod(path, mode if (gid is not None or not grouped) else 0o700)


# -- for the command-line tools ----------------------------------------------------

def enter_spool(cfg) -> None:
    """enter_spool - configure hashing from CFG and chdir to its queue directory."""
    configure(cfg)
    os.chdir(cfg.get("queue_directory"))
