"""`make install`, `make upgrade`, `make uninstall`: pymaster as a system service.

The main tests install into a temporary tree (every directory variable points
inside it) as root, so that accounts, owners and the set-group-ID postdrop
are real, and check what an administrator would find. One test stages an
install with DESTDIR, as a package build does. The last one (CI=true only)
installs into the real root, runs the service through the SysV script and
delivers a message to a local user.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.instance import _open_path_for_others
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(os.geteuid() != 0,
                                reason="make install creates accounts and setgid programs")


def make(target: str, *settings: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["make", "-s", "-C", str(ROOT), target, *settings],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def tree_settings(top: Path) -> list[str]:
    """tree_settings - every directory variable of the Makefile inside TOP."""
    return [f"PREFIX={top}/usr", f"config_directory={top}/etc/postfix",
            f"queue_directory={top}/var/spool/postfix", f"data_directory={top}/var/lib/postfix",
            f"mail_spool_directory={top}/var/mail", f"initd_directory={top}/etc/init.d",
            f"systemd_directory={top}/lib/systemd/system"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("make install creates accounts and setgid programs: needs root")
    top = tmp_path_factory.mktemp("root")
    _open_path_for_others(top)      # unprivileged users run sendmail from inside it
    make("install", *tree_settings(top))
    return top


def postfix(top: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"{top}/usr/sbin/postfix", "-c", f"{top}/etc/postfix", *args],
                          capture_output=True, text=True, timeout=60)


@needs_root
class TestInstall:
    def test_postfix_check_is_clean(self, installed):
        done = postfix(installed, "check")
        assert done.returncode == 0
        assert done.stderr == ""

    def test_the_commands_and_their_privileges(self, installed):
        sbin = installed / "usr" / "sbin"
        for name in ("postfix", "postconf", "postmap", "postalias", "postqueue", "postsuper",
                     "postcat", "postdrop", "postlog", "sendmail", "mailq", "newaliases"):
            assert os.access(sbin / name, os.X_OK), name
        for name in ("postdrop", "postqueue"):
            st = os.stat(sbin / name)
            assert st.st_mode & 0o7777 == 0o2755
            assert st.st_uid == 0 and st.st_gid == grp.getgrnam("postdrop").gr_gid
        assert os.readlink(installed / "usr" / "lib" / "sendmail") == f"{sbin}/sendmail"
        assert os.access(installed / "usr" / "bin" / "mailq", os.X_OK)
        assert pwd.getpwnam("postfix") and grp.getgrnam("postdrop")

    def test_main_cf_names_the_installed_directories(self, installed):
        done = subprocess.run([f"{installed}/usr/sbin/postconf", "-c",
                               f"{installed}/etc/postfix", "-h", "daemon_directory",
                               "queue_directory", "command_directory"],
                              capture_output=True, text=True)
        assert done.stdout.split() == [f"{installed}/usr/lib/pymaster/libexec",
                                       f"{installed}/var/spool/postfix",
                                       f"{installed}/usr/sbin"]

    def test_the_queue_has_postfix_owners_and_modes(self, installed):
        spool = installed / "var" / "spool" / "postfix"
        maildrop, public = os.stat(spool / "maildrop"), os.stat(spool / "public")
        assert maildrop.st_mode & 0o777 == 0o730 and public.st_mode & 0o777 == 0o710
        assert pwd.getpwuid(maildrop.st_uid).pw_name == "postfix"
        assert grp.getgrgid(maildrop.st_gid).gr_name == "postdrop"

    def test_init_scripts_call_the_installed_command(self, installed):
        script = (installed / "etc" / "init.d" / "postfix").read_text()
        assert f"{installed}/usr/sbin/postfix" in script
        assert "### BEGIN INIT INFO" in script
        unit = (installed / "lib" / "systemd" / "system" / "postfix.service").read_text()
        assert f"ExecStart={installed}/usr/sbin/postfix" in unit
        template = (installed / "lib" / "systemd" / "system" / "postfix@.service").read_text()
        assert f"ExecStart={installed}/usr/sbin/postmulti -i %i -p start" in template
        assert "flush|check|abort)" in script
        assert (installed / "usr" / "sbin" / "postmulti").exists()
        assert (installed / "etc" / "postfix" / "master.cf.proto").exists()

    def test_any_user_can_submit_through_the_setgid_postdrop(self, installed):
        done = subprocess.run(
            ["su", "nobody", "-s", "/bin/sh", "-c",
             f"{installed}/usr/sbin/sendmail -C {installed}/etc/postfix root"],
            input="Subject: test\n\nhello\n", capture_output=True, text=True, cwd="/")
        assert done.returncode == 0, done.stderr
        files = list((installed / "var" / "spool" / "postfix" / "maildrop").iterdir())
        assert len(files) == 1
        assert pwd.getpwuid(files[0].stat().st_uid).pw_name == "nobody"

    def test_postdrop_refuses_another_configuration_to_users(self, installed):
        done = subprocess.run(["su", "nobody", "-s", "/bin/sh", "-c",
                               f"{installed}/usr/sbin/postdrop -c /tmp"],
                              capture_output=True, text=True, cwd="/")
        assert done.returncode == 64
        assert "only root may use a configuration directory" in done.stderr

    def test_upgrade_keeps_configuration_and_queue(self, installed):
        main_cf = installed / "etc" / "postfix" / "main.cf"
        main_cf.write_text(main_cf.read_text() + "myhostname = kept.example.com\n")
        queued = list((installed / "var" / "spool" / "postfix" / "maildrop").iterdir())
        make("upgrade", *tree_settings(installed))
        assert "myhostname = kept.example.com" in main_cf.read_text()
        assert list((installed / "var" / "spool" / "postfix" / "maildrop").iterdir()) == queued
        assert postfix(installed, "check").stderr == ""

    def test_uninstall_keeps_configuration_and_queue(self, installed):
        make("uninstall", *tree_settings(installed))
        assert not (installed / "usr" / "sbin" / "postfix").exists()
        assert not (installed / "usr" / "lib" / "pymaster").exists()
        assert not (installed / "etc" / "init.d" / "postfix").exists()
        assert (installed / "etc" / "postfix" / "main.cf").exists()
        assert (installed / "var" / "spool" / "postfix" / "maildrop").is_dir()


def test_a_staged_install_names_the_final_directories(tmp_path):
    """DESTDIR: files land under it, but name the directories of the target system."""
    stage = tmp_path / "stage"
    make("install", f"DESTDIR={stage}")
    main_cf = (stage / "etc" / "postfix" / "main.cf").read_text()
    assert "daemon_directory = /usr/lib/pymaster/libexec" in main_cf
    assert "queue_directory = /var/spool/postfix" in main_cf
    first = (stage / "usr" / "lib" / "pymaster" / "venv" / "bin" / "postfix").read_text()
    assert first.startswith("#!/usr/lib/pymaster/venv/bin/python")
    smtpd = (stage / "usr" / "lib" / "pymaster" / "libexec" / "smtpd").read_text()
    assert smtpd.startswith("#!/usr/lib/pymaster/venv/bin/python\n")
    # No set-group-ID program before the target system has its group.
    assert os.stat(stage / "usr" / "sbin" / "postdrop").st_mode & 0o7777 == 0o755
    assert os.readlink(stage / "usr" / "sbin" / "postfix") == "/usr/lib/pymaster/venv/bin/postfix"
    assert not (stage / "var" / "spool" / "postfix").exists()


# -- the real thing (CI only) ---------------------------------------------------------

def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.system
@pytest.mark.skipif(os.environ.get("CI") != "true" or os.geteuid() != 0,
                    reason="installs into the real root: only with CI=true, as root")
def test_system_install_delivers_through_the_sysv_script(tmp_path):
    if port_in_use(25):
        pytest.skip("something already listens on port 25")
    etc = Path("/etc/postfix")
    saved = Path("/etc/postfix.pre-pymaster-test")
    user = "pmtest"
    if etc.exists():
        etc.rename(saved)
    try:
        make("install")
        subprocess.run(["useradd", "--create-home", user], check=True)
        try:
            init = ["/etc/init.d/postfix"]
            assert subprocess.run(init + ["start"]).returncode == 0
            done = subprocess.run(["/usr/sbin/sendmail", "-f", "root", user],
                                  input=b"Subject: installed\n\nhello from pymaster\n")
            assert done.returncode == 0
            mbox = Path("/var/mail") / user
            wait_until(lambda: mbox.exists() and b"hello from pymaster" in mbox.read_bytes(),
                       60, "a delivery to /var/mail/" + user, interval=0.2)
            assert subprocess.run(init + ["reload"]).returncode == 0
            assert subprocess.run(init + ["stop"]).returncode == 0
        finally:
            subprocess.run(["/usr/sbin/postfix", "stop"], capture_output=True)
            subprocess.run(["userdel", "--remove", user], capture_output=True)
            Path("/var/mail", user).unlink(missing_ok=True)
            make("uninstall")
    finally:
        if saved.exists():
            subprocess.run(["rm", "-rf", str(etc)])
            saved.rename(etc)
