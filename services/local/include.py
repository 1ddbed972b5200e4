"""`:include:/path` destinations: more destinations read from a file.

The file is opened with the privileges in force (the alias table's owner, or
the user of a .forward), so nobody includes a file they could not read.
It must be an absolute path to a regular file that is not world-writable.
Destinations found there have the source "include": commands and files in
them are allowed only when allow_mail_to_commands/files say "include". A
file owned by someone other than root lends its owner's privileges to the
commands and files it names.

Interface:
    deliver_include(delivery, target, path)
"""

from __future__ import annotations

import os
import stat

from pymaster.mail.mailbox import as_user
from services.local import items
from services.local.context import Delivery, Privs, Target, bounced, deferred


class IncludeError(Exception):
    """An :include: file that must not be used (not a regular file, world-writable)."""


def read_include_file(path: str, privs: Privs | None) -> tuple[str, os.stat_result]:
    """read_include_file - the text of PATH read as PRIVS, and its status."""
    uid, gid = (privs.uid, privs.gid) if privs else (None, None)
    with as_user(uid, gid):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IncludeError(f":include: file {path} is not a regular file")
        if st.st_mode & stat.S_IWOTH:
            raise IncludeError(f":include: file {path} is world writable")
        with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="surrogateescape") as f:
            return f.read(), st
    finally:
        os.close(fd)


def deliver_include(delivery: Delivery, target: Target, path: str) -> None:
    """deliver_include - deliver to every destination listed in PATH."""
    if not os.path.isabs(path):
        delivery.add(bounced(f":include:{path} uses a relative path", "5.3.5"))
        return
    try:
        text, st = read_include_file(path, target.privs)
    except IncludeError as e:
        delivery.add(bounced(str(e), "5.3.5"))
        return
    except FileNotFoundError:
        delivery.add(bounced(f"cannot open include file {path}: No such file or directory",
                             "5.3.0"))
        return
    except OSError as e:
        delivery.add(deferred(f"cannot open include file {path}: {e.strerror}", "4.3.0"))
        return
    privs = target.privs
    if st.st_uid != 0 and os.geteuid() == 0:
        privs = Privs.of_uid(st.st_uid, delivery.cfg.get("default_privs"))
    child = target.with_(source="include", privs=privs, expanded_from=path,
                         level=target.level + 1)
    items.deliver_items(delivery, child, items.split_items(text))
