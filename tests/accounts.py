"""Temporary system accounts for tests that deliver to a real user (root only).

local(8) and virtual-domain deliveries switch to the recipient's uid, so
those tests create a throw-away account with useradd and remove it after.

Interface:
    can_add_accounts() -> bool                  root, and useradd installed
    temporary_account(home_parent, prefix) -> context manager yielding the
        account's pwd entry; its home is HOME_PARENT/NAME
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def can_add_accounts() -> bool:
    """can_add_accounts - whether this run may create system accounts."""
    return os.geteuid() == 0 and shutil.which("useradd") is not None


@contextmanager
def temporary_account(home_parent: Path, prefix: str = "pm") -> Iterator[pwd.struct_passwd]:
    """temporary_account - a new user with a shell and a home, deleted afterwards."""
    name = prefix + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "-m", "-d", str(Path(home_parent) / name), "-s", "/bin/sh", name],
                   check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)
