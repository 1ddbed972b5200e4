"""Postfix-shaped logging for every pymaster program.

Lines look exactly like Postfix's, because pflogsumm, fail2ban and
administrators' grep habits parse them:

    Nov 28 20:03:44 HOST postfix/smtpd[1234]: 4XSgKk1Bwz: client=localhost[127.0.0.1]

Severities other than info are prefixes of the text: `warning: `, `error: `,
`fatal: ` (then the program exits 1) and `panic: ` (exit 2).

Destination: with `maillog_file` set, each line is appended to that file with
one write() on a descriptor opened O_APPEND. Linux appends a single write to a
regular file atomically with respect to other appenders, so lines from many
processes never interleave or tear (the job Postfix gives postlogd). Without
`maillog_file`, lines go to syslog (`/dev/log`) under `syslog_facility`; if
there is no syslog socket, to standard error.

Rotation (`postfix logrotate` renames the file): before a write, at most once
per REOPEN_CHECK seconds, a process compares the inode of maillog_file's name
with the one it holds and reopens the name when they differ. A process that
cannot reopen (chrooted, or no longer privileged) keeps its old descriptor,
so a line is never dropped; the master's reload replaces such processes.

Interface:
    setup(program, cfg=None, verbose=0)   once per process, before anything logs
    set_tag(text)                         a whole tag of one's own (postlog -t)
    info / warning / error / fatal / panic / debug(text)
    emit(priority, text)                  a line with no prefix added (postlog)
"""

from __future__ import annotations

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


class _State:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "pymaster"
    syslog_name = "postfix"
    facility = FACILITIES["mail"]
    hostname = socket.gethostname().split(".")[0]
    maillog_fd: int | None = None
    maillog_path = ""
    maillog_checked = 0.0      # time.monotonic() of the last inode comparison
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
    _state.syslog_name = cfg.get("syslog_name") or "postfix"
    _state.facility = FACILITIES.get(cfg.get("syslog_facility"), FACILITIES["mail"])
    host = cfg.get("myhostname")
    if host:
        _state.hostname = host.split(".")[0]
    open_destination(cfg.get("maillog_file"))


def open_destination(maillog_file: str) -> None:
    """open_destination - choose maillog_file when set, else syslog."""
    close()
    if maillog_file:
        try:
            _state.maillog_fd = _open_maillog(maillog_file)
            _state.maillog_path = maillog_file
            _state.maillog_checked = time.monotonic()
            _state.use_stderr = False
            return
        except OSError as e:
            sys.stderr.write(f"{_state.syslog_name}/{_state.program}: warning: "
                             f"open {maillog_file}: {e.strerror}\n")
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect("/dev/log")
        _state.syslog_sock = sock
        _state.use_stderr = False
    except OSError:
        _state.use_stderr = True


STANDARD_STREAMS = {"/dev/stdout": 1, "/dev/stderr": 2}


def _open_maillog(path: str) -> int:
    """_open_maillog - a descriptor that appends to PATH.

    /dev/stdout and /dev/stderr (the foreground set-up of `make run` and
    containers) are the inherited descriptors themselves: reopening them
    through /proc fails for a pipe or socket, or for a file another user
    opened for us."""
    if path in STANDARD_STREAMS:
        return os.dup(STANDARD_STREAMS[path])
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def close() -> None:
    """close - release the log destination (before exec, or for reopen)."""
    if _state.maillog_fd is not None:
        os.close(_state.maillog_fd)
        _state.maillog_fd = None
    if _state.syslog_sock is not None:
        _state.syslog_sock.close()
        _state.syslog_sock = None


def _reopen_if_rotated() -> None:
    """_reopen_if_rotated - follow maillog_file to a new file after a rename.

    Only a successful open replaces the descriptor: inside a chroot or
    after the privilege drop the name may be out of reach, and then the
    old file keeps receiving the lines."""
    now = time.monotonic()
    if now - _state.maillog_checked < REOPEN_CHECK or _state.maillog_path.startswith("/dev/"):
        return
    _state.maillog_checked = now
    try:
        held = os.fstat(_state.maillog_fd)
        current = os.stat(_state.maillog_path)
        if (current.st_ino, current.st_dev) == (held.st_ino, held.st_dev):
            return
    except FileNotFoundError:
        pass
    except OSError:
        return
    try:
        fd = os.open(_state.maillog_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError:
        return
    os.close(_state.maillog_fd)
    _state.maillog_fd = fd


def set_tag(text: str | None) -> None:
    """set_tag - use TEXT as the whole tag instead of syslog_name/program
    (postlog -t); None restores the usual tag."""
    _state.fixed_tag = text


def tag() -> str:
    """tag - `postfix/smtpd`, as it appears before the pid."""
    if _state.fixed_tag:
        return _state.fixed_tag
    return f"{_state.syslog_name}/{_state.program}"


def format_line(text: str, when: float | None = None) -> str:
    """format_line - one maillog_file line, without the newline."""
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(when))
    return f"{stamp} {_state.hostname} {tag()}[{os.getpid()}]: {text}"


def _emit(priority: int, text: str) -> None:
    text = text.replace("\n", " ")
    if _state.also_stderr:
        sys.stderr.write(f"{_state.program}: {text}\n")
        sys.stderr.flush()
    if _state.maillog_fd is not None:
        _reopen_if_rotated()
        data = (format_line(text) + "\n").encode("utf-8", "surrogateescape")
        try:
            os.write(_state.maillog_fd, data)
        except OSError:
            pass
        return
    if _state.syslog_sock is not None:
        stamp = time.strftime("%b %d %H:%M:%S")
        msg = f"<{_state.facility * 8 + priority}>{stamp} {tag()}[{os.getpid()}]: {text}"
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
