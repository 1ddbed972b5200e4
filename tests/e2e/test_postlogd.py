"""End to end: postlogd writes maillog_file for those who may not (root only).

The real master binds public/postlog and starts postlogd(8) on demand. An
ordinary user's commands cannot open the root-owned 0600 maillog_file, so
their lines travel through the socket; a chrooted smtpd whose session
outlives `postfix logrotate` has its later lines in the new file.

The commands run as a throw-away account. The interpreter lives where
other users cannot reach it, so each command starts as root, imports what
it will use, drops to the account (with the setgid_group as a
supplementary group where the test stands in for the set-group-ID bit that
`make install` gives postdrop and postqueue) and then runs the `.venv/bin`
script itself.
"""

from __future__ import annotations

import grp
import re
import smtplib
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.support.accounts import can_add_accounts, temporary_account
from tests.support.instance import BIN, ROOT, Instance
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(not can_add_accounts(),
                                reason="commands as an ordinary user and chroot need root")

# Imports done as root, before the process becomes the ordinary user.
AS_USER = """
import encodings.idna, os, pkgutil, runpy, sys
import pymaster.commands.sendmail, pymaster.commands.postqueue, pymaster.commands.postdrop
import pymaster.mail.maps, pymaster.util.tables, pymaster.util.ipc
pymaster.util.tables.preload()
uid, gid, groups, script = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.setgroups([int(g) for g in groups.split(",") if g])
os.setgid(gid)
os.setuid(uid)
sys.argv = [script, *sys.argv[5:]]
runpy.run_path(script, run_name="__main__")
"""


def run_as(inst: Instance, account, command: str, *args: str, groups: list[int] = (),
           input: bytes = b"") -> tuple[subprocess.CompletedProcess, int]:
    """run_as - .venv/bin/COMMAND ARGS as ACCOUNT; the result and its pid."""
    argv = [sys.executable, "-c", AS_USER, str(account.pw_uid), str(account.pw_gid),
            ",".join(str(g) for g in groups), str(BIN / command), *args]
    env = dict(inst.env(), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, env=env, cwd="/", stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(input, timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), proc.pid


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    """An instance whose commands refuse ordinary users, and such a user."""
    tmp_path = tmp_path_factory.mktemp("restricted")
    with temporary_account(tmp_path / "home", prefix="pl") as account:
        inst = Instance(tmp_path / "mta", main_cf={"authorized_submit_users": "root",
                                                   "authorized_mailq_users": "root"})
        with inst:
            yield inst, account


def postlogd_pids(inst: Instance) -> list[int]:
    """postlogd_pids - the master's postlogd children."""
    pids = []
    for child in psutil.Process(inst.master_pid()).children():
        try:
            if "postlogd" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return pids


def setgid_group() -> int:
    return grp.getgrnam("postdrop").gr_gid


class TestOrdinaryUsers:
    def test_the_log_file_is_roots_and_private(self, restricted):
        inst, _ = restricted
        st = inst.maillog.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
        postlog = (inst.queue_dir / "public" / "postlog").stat()
        assert stat.S_ISSOCK(postlog.st_mode) and stat.S_IMODE(postlog.st_mode) == 0o666

    def test_sendmail_lines_reach_the_file_through_postlogd(self, restricted):
        inst, account = restricted
        done, pid = run_as(inst, account, "sendmail", "root", groups=[setgid_group()],
                           input=b"Subject: x\n\nx\n")
        assert done.returncode == 77, done.stderr.decode()
        inst.wait_for_log(rf"postfix/sendmail\[{pid}\]: fatal: User {account.pw_name}"
                          rf"\({account.pw_uid}\) is not allowed to submit mail$")

    def test_postqueue_lines_reach_the_file_through_postlogd(self, restricted):
        inst, account = restricted
        done, pid = run_as(inst, account, "postqueue", "-p", groups=[setgid_group()])
        assert done.returncode == 77, done.stderr.decode()
        inst.wait_for_log(rf"postfix/postqueue\[{pid}\]: fatal: User {account.pw_name}"
                          rf"\({account.pw_uid}\) is not allowed to view the mail queue$")

    def test_postdrop_lines_reach_the_file_through_postlogd(self, restricted):
        inst, account = restricted
        done, pid = run_as(inst, account, "postdrop", groups=[setgid_group()],
                           input=b"not a queue file")
        assert done.returncode != 0
        inst.wait_for_log(rf"postfix/postdrop\[{pid}\]: fatal: uid={account.pw_uid}: "
                          rf"malformed input")

    def test_without_the_setgid_group_the_user_still_sees_the_error(self, restricted):
        """public/ is the setgid_group's: like Postfix, the line cannot reach
        postlogd then, and standard error is where it stays."""
        inst, account = restricted
        done, pid = run_as(inst, account, "sendmail", "root", input=b"x\n")
        assert done.returncode == 77
        assert b"sendmail: fatal: User " in done.stderr
        run_as(inst, account, "postqueue", "-p", groups=[setgid_group()])
        inst.wait_for_log(r"postfix/postqueue\[\d+\]: fatal: ")
        assert f"postfix/sendmail[{pid}]" not in inst.log_text()


def test_a_chrooted_smtpd_session_across_logrotate_logs_to_the_new_file(tmp_path):
    inst = Instance(tmp_path, main_cf={"maillog_file_compressor": "true"}, start=False)
    master_cf = inst.config_dir / "master.cf"
    master_cf.write_text(re.sub(r"(?m)^(127\.0\.0\.1:\d+\s+inet\s+n\s+-\s+)n",
                                r"\1y", master_cf.read_text()))
    with inst.start():
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as smtp:
            smtp.ehlo("before.example")
            pid = int(inst.wait_for_log(r"postfix/smtpd\[(\d+)\]: connect from").group(1))
            assert Path(f"/proc/{pid}/root").resolve() == inst.queue_dir.resolve()
            # In the jail maillog_file's name is out of sight: within a second
            # smtpd sends its lines through postlogd, which starts on the first.
            def postlogd_started() -> bool:
                if postlogd_pids(inst):
                    return True
                smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30).quit()
                return False
            wait_until(postlogd_started, 20, "postlogd to start", interval=0.1)
            done = inst.postfix("logrotate")
            assert done.returncode == 0, done.stderr.decode()
            [rotated] = tmp_path.glob("maillog.*")
            assert smtp.mail("a@localhost")[0] == 250
        inst.wait_for_log(rf"postfix/smtpd\[{pid}\]: disconnect from localhost\S+ "
                          rf"ehlo=1 mail=1 quit=1")
    old = rotated.read_text()
    assert f"postfix/smtpd[{pid}]: connect from" in old
    assert "ehlo=1 mail=1" not in old
