"""The files in which a service keeps a cache of its own (address_verify_map,
postscreen_cache_map): where they live and who owns them.

Postfix names such a cache `btree:$data_directory/verify_cache`, a Berkeley
DB file that Python here cannot write; pymaster's own btree: files are
constant databases rebuilt whole by postmap. A cache needs single-row
updates that survive a crash, so `TYPE:NAME` (btree, hash, lmdb, sdbm,
dbm; a `proxy:` prefix is ignored) is kept in the SQLite file
`NAME.sqlite`, beside any Postfix `NAME.db` it must not touch; an empty
setting means a cache in memory.

The file is created by root as mail_owner, who writes it after the
privilege drop, in data_directory, which is made (mode 0700, owned by
mail_owner) when Postfix's start-up did not make it.

Interface:
    sqlite_path(param, spec) -> str | None     raises CacheFileError
    as_mail_owner(cfg)                         context manager (root only changes)
    make_data_directory(cfg, directory)
    CacheFileError, WRITABLE_TYPES, SUFFIX
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from pymaster.mail.config import Config
from pymaster.master.service import lookup_account

WRITABLE_TYPES = ("btree", "hash", "lmdb", "sdbm", "dbm")
SUFFIX = ".sqlite"


class CacheFileError(Exception):
    """The cache's setting names no file pymaster can keep."""


def sqlite_path(param: str, spec: str) -> str | None:
    """sqlite_path - the database file of PARAM's SPEC; None for memory."""
    spec = spec.strip()
    if not spec:
        return None
    if spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    kind, colon, name = spec.partition(":")
    if not colon or not name:
        raise CacheFileError(f"{param}: need type:name, not \"{spec}\"")
    if kind not in WRITABLE_TYPES:
        raise CacheFileError(f"{param}: unsupported map type \"{kind}\" "
                             f"(use one of {', '.join(WRITABLE_TYPES)})")
    if not os.path.isabs(name):
        raise CacheFileError(f"{param}: need an absolute path name: {name}")
    return name + SUFFIX


@contextlib.contextmanager
def as_mail_owner(cfg: Config) -> Iterator[None]:
    """as_mail_owner - root creates files as mail_owner (who will write them
    after the privilege drop), never as root; others are themselves already."""
    if os.geteuid() != 0:
        yield
        return
    account = lookup_account(cfg.get("mail_owner"))
    os.setegid(account.pw_gid)
    os.seteuid(account.pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def make_data_directory(cfg: Config, directory: str) -> None:
    """make_data_directory - DIRECTORY, when Postfix's start-up did not make it."""
    if os.path.isdir(directory):
        return
    os.makedirs(directory, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        account = lookup_account(cfg.get("mail_owner"))
        os.chown(directory, account.pw_uid, account.pw_gid)
