"""Writing files so that a crash never leaves one half-written.

The pattern chasquid's safeio package follows: write into a temporary file
in the same directory, fsync it, rename it over the final name, then fsync
the directory so the rename itself survives a crash. Readers see the old
file or the new one, never a mix.

Interface:
    write_file(path, data, mode=0o644)    replace PATH atomically with DATA
    fsync_dir(path)                       make a directory's entries durable
    unique_temp_name(directory, prefix)   a name no other process will pick
"""

from __future__ import annotations

import itertools
import os
import socket

_counter = itertools.count()


def unique_temp_name(directory: str, prefix: str = ".tmp") -> str:
    """unique_temp_name - a path in DIRECTORY made unique by host, pid and a counter."""
    host = socket.gethostname().replace("/", "_")
    return os.path.join(directory, f"{prefix}.{host}.{os.getpid()}.{next(_counter)}")


def fsync_dir(path: str) -> None:
    """fsync_dir - flush the directory PATH, so a create or rename in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    """write_file - replace PATH with DATA: temp file, fsync, rename, fsync directory."""
    directory = os.path.dirname(path) or "."
    tmp = unique_temp_name(directory, "." + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.rename(tmp, path)
    fsync_dir(directory)
