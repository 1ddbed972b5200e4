"""Temporary system accounts for tests that deliver to a real user (root only).

local(8) and virtual-domain deliveries switch to the recipient's uid, so
those tests create a throw-away account with useradd and remove it after.

Interface:
    can_add_accounts() -> bool                  root, and useradd installed
    temporary_account(home_parent, prefix) -> context manager yielding the
        account's pwd entry; its home is HOME_PARENT/NAME
    account_under(tmp_path, prefix) -> the same with HOME_PARENT = TMP_PATH/home,
        both made traversable for the mail system (a test's `account` fixture)
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
    _useradd(["-m", "-d", str(Path(home_parent) / name), "-s", "/bin/sh", name])
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False)


@contextmanager
def account_under(tmp_path: Path, prefix: str = "pm") -> Iterator[pwd.struct_passwd]:
    """account_under - a temporary user whose home is under TMP_PATH/home."""
    homes = Path(tmp_path) / "home"
    homes.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(homes, 0o755)
    with temporary_account(homes, prefix) as user:
        yield user


def _useradd(args: list[str], attempts: int = 5) -> None:
    """_useradd - useradd ARGS, again while another one holds the passwd lock.

    Parallel test workers (and other test runs on the machine) add accounts
    at the same time; useradd gives up on a held lock after a while."""
    for attempt in range(attempts):
        done = subprocess.run(["useradd", *args], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" not in done.stderr or attempt == attempts - 1:
            raise subprocess.CalledProcessError(done.returncode, ["useradd", *args],
                                                done.stdout, done.stderr)
