"""`postfix logrotate`: rotate maillog_file as Postfix 3.4+ does.

The file is renamed to `maillog_file.SUFFIX` (SUFFIX is the current time
formatted by maillog_file_rotate_suffix, strftime(3) style), a new empty
file with the old one's owner and mode takes its name, and the old one is
compressed with maillog_file_compressor once nobody writes to it any more.

Processes append to maillog_file through their own descriptors, so after
the rename they must reopen: pymaster.util.log notices the new inode within a
second; one that cannot reopen (unprivileged, chrooted) sends its lines to
postlogd instead. The caller reloads the master, so that such workers and
postlogd itself (which opened the file before its privilege drop) are
replaced by ones that open the new file. Compression therefore waits until
no process holds the old file open (looked up in /proc), at most
COMPRESS_WAIT seconds, so that no line is written to a file already gone.

Interface:
    rotate(cfg) -> rotated path        raises RotateError (the fatal text)
    compress_later(cfg, path)          a detached process compresses PATH
    main()                             `python -m pymaster.commands.logrotate PATH COMPRESSOR`
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pymaster.mail.config import Config

COMPRESS_WAIT = 60.0       # seconds to wait for writers of the old file to go
POLL = 0.2


class RotateError(Exception):
    """Why the log was not rotated, worded as postfix-script words it."""


def rotate(cfg: Config) -> str:
    """rotate - rename maillog_file and put an empty one in its place."""
    for name in ("maillog_file", "maillog_file_compressor", "maillog_file_rotate_suffix"):
        if not cfg.get(name):
            raise RotateError(f"empty '{name}' parameter value - logfile rotation failed")
    path = cfg.get("maillog_file")
    if path.startswith("/dev/"):
        raise RotateError(f"not rotating '{path}'")
    rotated = f"{path}.{time.strftime(cfg.get('maillog_file_rotate_suffix'))}"
    try:
        st = os.stat(path)
        os.rename(path, rotated)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, st.st_mode & 0o777)
    except OSError as e:
        raise RotateError(f"{e.filename or path}: {e.strerror} - logfile rotation failed") \
            from None
    try:
        # The services that reopen it may run as mail_owner: keep the owner.
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, st.st_mode & 0o777)
    except OSError:
        pass
    finally:
        os.close(fd)
    return rotated


def compress_later(cfg: Config, path: str) -> None:
    """compress_later - compress PATH from a detached process, once unused."""
    subprocess.Popen([sys.executable, "-m", "pymaster.commands.logrotate", path,
                      cfg.get("maillog_file_compressor")],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True,
                     env=dict(os.environ))


def held_open(path: str) -> bool:
    """held_open - whether some process (that we may look at) has PATH open."""
    target = os.path.realpath(path)
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            links = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in links:
            try:
                if os.readlink(f"{fd_dir}/{fd}") == target:
                    return True
            except OSError:
                continue
    return False


def wait_unused(path: str, limit: float = COMPRESS_WAIT) -> None:
    """wait_unused - until no process holds PATH open, at most LIMIT seconds."""
    # Give every writer one reopen check first (pymaster.util.log.REOPEN_CHECK).
    time.sleep(1.0)
    deadline = time.monotonic() + limit
    while held_open(path) and time.monotonic() < deadline:
        time.sleep(POLL)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m pymaster.commands.logrotate PATH COMPRESSOR\n")
        return 1
    path, compressor = args
    wait_unused(path)
    return subprocess.run([compressor, path]).returncode


if __name__ == "__main__":
    sys.exit(main())
