"""Postfix-shaped logging for every pymaster program.

Lines look exactly like Postfix's, because pflogsumm, fail2ban and
administrators' grep habits parse them:

    Nov 28 20:03:44 HOST postfix/smtpd[1234]: 4XSgKk1Bwz: client=localhost[127.0.0.1]

Severities other than info are prefixes of the text: `warning: `, `error: `,
`fatal: ` (then the program exits 1) and `panic: ` (exit 2).

Destination, with `maillog_file` set (DESIGN.md: one log, lines never
interleaved):

  * The fast path: a process that can open maillog_file (the master, every
    service, root's commands) appends each line itself with one write() on
    a descriptor opened O_APPEND. This keeps throughput: a line costs one
    system call and no other process. It is still "never interleaved":
    Linux appends a single write to a regular file atomically with respect
    to other appenders, so every line lands whole, after the one before it,
    exactly as if one writer (Postfix's postlogd) had written them all.
  * The postlog service: a process that cannot open the file (an ordinary
    user's sendmail, postqueue, postdrop or mailq: permission denied) sends
    each line as one datagram to `$queue_directory/public/$postlog_service_name`,
    where postlogd(8) (services/postlogd.py) appends it. So does a process
    whose file was renamed (`postfix logrotate`) and that cannot reopen the
    name: it runs unprivileged, or chrooted where the name is out of sight.
  * When the postlog socket cannot be reached either (the mail system is
    down, or the caller may not enter public/), a line falls back to what
    it had before: the descriptor still held, else syslog, else standard
    error. A command that copies its lines to standard error (sendmail,
    postqueue) has already shown the text there, so nothing is lost silently.
  * `/dev/stdout` and `/dev/stderr` (`make run`, containers) are the
    inherited descriptors themselves.
Without `maillog_file`, lines go to syslog (`/dev/log`) under
`syslog_facility`; if there is no syslog socket, to standard error.

Rotation (`postfix logrotate` renames the file): before a write, at most once
per REOPEN_CHECK seconds, a process compares the inode of maillog_file's name
with the one it holds and reopens the name when they differ. A process that
cannot reopen switches to the postlog service; the master's reload (which
logrotate asks for) replaces such processes and postlogd itself, and each new
one opens the new file before it drops privileges.

Interface:
    setup(program, cfg=None, verbose=0, stderr=False)  once per process, before anything logs
    set_tag(text)                         a whole tag of one's own (postlog -t)
    set_syslog_name(name)                 the tag's first part before setup() reads main.cf
    info / warning / error / fatal / panic / debug(text)
    emit(priority, text)                  a line with no prefix added (postlog)
    format_line(text, when=None) -> str   the line as maillog_file holds it
    open_destination(maillog_file, postlog=None, mode=0o600) / close()
    MaillogWriter(path, mode)             appending to maillog_file, following renames
    PostlogClient(queue_dir, service)     sending lines to postlogd
    serve_postlog(writer)                 postlogd: its own lines go to WRITER only
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from typing import NoReturn

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5,
    "lpr": 6, "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
LOG_INFO, LOG_WARNING, LOG_ERR, LOG_CRIT, LOG_DEBUG = 6, 4, 3, 2, 7
# Seconds between checks whether maillog_file was renamed (log rotation):
# a stat() per line would cost more than the write.
REOPEN_CHECK = 1.0
# The longest record sent to postlogd, in bytes; postlogd cuts longer ones.
RECORD_LIMIT = 4096
# How long a sender waits when postlogd's socket queue is full.
SEND_TIMEOUT = 5.0
STANDARD_STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}
DEFAULT_MODE = 0o600
# Opening maillog_file failed because of who we are, not because of the file.
DENIED = (errno.EACCES, errno.EPERM, errno.EROFS)


class MaillogWriter:
    """Appends whole lines to maillog_file and follows the name to a new file."""

    def __init__(self, path: str, mode: int = DEFAULT_MODE) -> None:
        """Opens PATH (raises OSError); MODE is for a file that must be created."""
        self.path = path
        self.mode = mode
        self.fd = self._open()
        self.checked = time.monotonic()
        self.error = ""             # why the last write failed
        self.torn = False           # a failed write may have left half a line

    def _open(self) -> int:
        # /dev/stdout and /dev/stderr: reopening them through /proc fails for a
        # pipe or socket, or for a file another user opened for us.
        if self.path in STANDARD_STREAMS:
            return os.dup(STANDARD_STREAMS[self.path])
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                       self.mode)

    def write(self, data: bytes) -> bool:
        """write - DATA (whole lines) in one write(); False (and .error) when
        it failed. A full disk may take part of a write: the rest is retried
        once, and the next write after a failure starts on a new line."""
        if self.torn:
            data = b"\n" + data
        done = 0
        try:
            done = os.write(self.fd, data)
            if done < len(data):
                os.write(self.fd, data[done:])
        except OSError as e:
            self.error = e.strerror or str(e)
            self.torn = self.torn or done > 0
            return False
        self.torn = False
        return True

    def follow(self) -> bool:
        """follow - whether the descriptor is still maillog_file's; after a
        rename, reopen the name. False: renamed, and we cannot follow."""
        now = time.monotonic()
        if now - self.checked < REOPEN_CHECK or self.path in STANDARD_STREAMS:
            return True
        self.checked = now
        if self._current():
            return True
        try:
            fd = self._open()
        except OSError:
            return False
        os.close(self.fd)
        self.fd = fd
        return True

    def _current(self) -> bool:
        """_current - the name still leads to the file we hold."""
        try:
            held = os.fstat(self.fd)
            now = os.stat(self.path)
        except OSError:
            return False
        return (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PostlogClient:
    """Sends log lines to postlogd over its unix-domain datagram socket."""

    def __init__(self, queue_dir: str, service: str = "postlog") -> None:
        self.path = os.path.join(queue_dir, "public", service)
        # Inside the chroot jail (the queue directory) the same socket is
        # /public/NAME; the jail is recognised by its root's inode.
        self.jail_path = "/" + os.path.join("public", service)
        try:
            st = os.stat(queue_dir)
            self.queue_dir_id: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            self.queue_dir_id = None
        self.sock: socket.socket | None = None

    def send(self, line: str) -> bool:
        """send - LINE (without newline) as one record; False when undelivered."""
        data = line.encode("utf-8", "surrogateescape")[:RECORD_LIMIT]
        try:
            if self.sock is None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendto(data, self._address())
            return True
        except OSError:
            return False

    def _address(self) -> str:
        if self.queue_dir_id is not None and not os.path.exists(self.path):
            try:
                root = os.stat("/")
                if (root.st_dev, root.st_ino) == self.queue_dir_id:
                    return self.jail_path
            except OSError:
                pass
        return self.path

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _State:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pymaster"
    syslog_name = ""           # set_syslog_name(): the mail layer knows the default
    facility = FACILITIES["mail"]
    hostname = socket.gethostname().split(".")[0]
    writer: MaillogWriter | None = None
    stale = False              # the writer's file was renamed and we cannot follow
    postlog: PostlogClient | None = None
    syslog_sock: socket.socket | None = None
    use_stderr = True
    verbose = 0
    also_stderr = False
    fixed_tag: str | None = None


_state = _State()


def setup(program: str, cfg=None, verbose: int = 0, stderr: bool = False) -> None:
    """setup - name this process in log lines and open the log destination.

    PROGRAM is the part after the slash (`smtpd`). STDERR also copies each
    line to standard error, as Postfix's command-line tools do."""
    _state.program = program
    _state.verbose = verbose
    _state.also_stderr = stderr
    if cfg is None:
        return
    _state.syslog_name = cfg.get("syslog_name")
    _state.facility = FACILITIES.get(cfg.get("syslog_facility"), FACILITIES["mail"])
    host = cfg.get("myhostname")
    if host:
        _state.hostname = host.split(".")[0]
    maillog_file = cfg.get("maillog_file")
    postlog = None
    if maillog_file:
        postlog = PostlogClient(cfg.get("queue_directory"),
                                cfg.get("postlog_service_name"))
    open_destination(maillog_file, postlog, file_mode(cfg.get("maillog_file_permissions")))


def set_syslog_name(name: str) -> None:
    """set_syslog_name - the first part of the tag until setup() reads
    syslog_name: the parameter table's default, which this layer cannot see."""
    _state.syslog_name = name


def file_mode(text: str | None) -> int:
    """file_mode - maillog_file_permissions as a mode (0600 when unusable)."""
    try:
        mode = int(text or "", 8)
    except ValueError:
        return DEFAULT_MODE
    return mode if 0 <= mode <= 0o777 else DEFAULT_MODE


def open_destination(maillog_file: str, postlog: PostlogClient | None = None,
                     mode: int = DEFAULT_MODE) -> None:
    """open_destination - maillog_file when set (directly, else through
    POSTLOG when we may not open it), else syslog."""
    close()
    if maillog_file:
        _state.postlog = postlog
        _state.use_stderr = False
        try:
            _state.writer = MaillogWriter(maillog_file, mode)
            return
        except OSError as e:
            if postlog is not None and e.errno in DENIED:
                return      # not ours to open: postlogd writes it for us
            sys.stderr.write(f"{_state.syslog_name}/{_state.program}: warning: "
                             f"open {maillog_file}: {e.strerror}\n")
    _open_syslog()


def _open_syslog() -> None:
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect("/dev/log")
        _state.syslog_sock = sock
        _state.use_stderr = False
    except OSError:
        _state.use_stderr = True


def close() -> None:
    """close - release the log destination (before exec, or for reopen)."""
    if _state.writer is not None:
        _state.writer.close()
        _state.writer = None
    _state.stale = False
    if _state.postlog is not None:
        _state.postlog.close()
        _state.postlog = None
    if _state.syslog_sock is not None:
        _state.syslog_sock.close()
        _state.syslog_sock = None


def serve_postlog(writer: MaillogWriter) -> None:
    """serve_postlog - this process is postlogd: its own lines go to WRITER,
    never through its own socket."""
    close()
    _state.writer = writer
    _state.use_stderr = False


def set_tag(text: str | None) -> None:
    """set_tag - use TEXT as the whole tag instead of syslog_name/program
    (postlog -t); None restores the usual tag."""
    _state.fixed_tag = text


def tag() -> str:
    """tag - `postfix/smtpd`, as it appears before the pid."""
    if _state.fixed_tag:
        return _state.fixed_tag
    return f"{_state.syslog_name}/{_state.program}"


class _Stamps:
    """The time stamp of the current second and this process's pid, made
    once: strftime, localtime and getpid per line were a tenth of the cost
    of a log line, and a message is logged four to six times."""
    second = -1
    text = ""
    pid = os.getpid()


def _reset_pid() -> None:
    _Stamps.pid = os.getpid()


os.register_at_fork(after_in_child=_reset_pid)


def _stamp(when: float | None) -> str:
    second = int(time.time() if when is None else when)
    if second != _Stamps.second:
        _Stamps.text = time.strftime("%b %d %H:%M:%S", time.localtime(second))
        _Stamps.second = second
    return _Stamps.text


def format_line(text: str, when: float | None = None) -> str:
    """format_line - one maillog_file line, without the newline."""
    return f"{_stamp(when)} {_state.hostname} {tag()}[{_Stamps.pid}]: {text}"


def _to_maillog(line: str) -> bool:
    """_to_maillog - LINE into maillog_file, directly or through postlogd."""
    writer = _state.writer
    if writer is not None and not _state.stale:
        if writer.follow() or _state.postlog is None:
            return writer.write((line + "\n").encode("utf-8", "surrogateescape"))
        _state.stale = True
    if _state.postlog is not None and _state.postlog.send(line):
        return True
    # postlogd is out of reach: the old file still beats losing the line.
    return writer is not None and writer.write((line + "\n").encode("utf-8", "surrogateescape"))


def _emit(priority: int, text: str) -> None:
    text = text.replace("\n", " ")
    if _state.also_stderr:
        sys.stderr.write(f"{_state.program}: {text}\n")
        sys.stderr.flush()
    if _state.writer is not None or _state.postlog is not None:
        if _to_maillog(format_line(text)):
            return
        if _state.syslog_sock is None and not _state.use_stderr:
            _open_syslog()
    if _state.syslog_sock is not None:
        msg = f"<{_state.facility * 8 + priority}>{_stamp(None)} {tag()}[{_Stamps.pid}]: {text}"
        try:
            _state.syslog_sock.send(msg.encode("utf-8", "surrogateescape"))
            return
        except OSError:
            pass
    if not _state.also_stderr:
        sys.stderr.write(format_line(text) + "\n")
        sys.stderr.flush()


def emit(priority: int, text: str) -> None:
    """emit - log TEXT at syslog PRIORITY as is (the caller adds any prefix)."""
    _emit(priority, text)


def info(text: str) -> None:
    _emit(LOG_INFO, text)


def debug(text: str, level: int = 1) -> None:
    """debug - logged only when -v was given LEVEL times or more."""
    if _state.verbose >= level:
        _emit(LOG_DEBUG, text)


def warning(text: str) -> None:
    _emit(LOG_WARNING, "warning: " + text)


def error(text: str) -> None:
    _emit(LOG_ERR, "error: " + text)


def fatal(text: str, status: int = 1) -> NoReturn:
    _emit(LOG_CRIT, "fatal: " + text)
    sys.exit(status)


def panic(text: str) -> NoReturn:
    _emit(LOG_CRIT, "panic: " + text)
    os._exit(2)


def verbosity() -> int:
    return _state.verbose
