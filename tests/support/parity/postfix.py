"""Debian's Postfix in a temporary config and queue directory, for parity tests.

The counterpart of tests/support/instance.py's Instance for the real Postfix:
the same main.cf settings, smtpd on a free loopback port, the queue, data
directory and log file inside the temporary directory. Needs root (Postfix's
master refuses to run otherwise) and the Debian package.

    with DebianPostfix(tmp, {"myhostname": "mx.example.com"}) as pf:
        pf.smtp_port, pf.log_text(), pf.command("postqueue", "-p")

Interface:
    available() -> str              "" when usable, else why not (a skip reason)
    DebianPostfix(tmp, main_cf)     .start(), .stop(), .command(name, *args),
                                    .log_text(), .wait_for_log(regex), .queue_dir
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support.instance import MailLog, free_port, listening
from tests.support.wait import poll

SBIN = Path("/usr/sbin")
MASTER_CF_DIST = Path("/usr/share/postfix/master.cf.dist")
SMTPD_LINE = re.compile(r"(?m)^smtp\s+inet\s.*$")


def available() -> str:
    """available - "" when Debian's Postfix can run here, else the reason it cannot."""
    if not (SBIN / "postfix").exists() or not MASTER_CF_DIST.exists():
        return "Debian's postfix package is not installed"
    if os.geteuid() != 0:
        return "running Debian's Postfix needs root"
    return ""


class DebianPostfix(MailLog):
    """One Postfix instance under TMP: etc/, spool/, data/, maillog."""

    def __init__(self, tmp: Path, main_cf: dict[str, str] | None = None) -> None:
        self.tmp = Path(tmp)
        self.config_dir = self.tmp / "etc"
        self.queue_dir = self.tmp / "spool"
        self.maillog = self.tmp / "maillog"
        self.smtp_port = free_port()
        self._main_cf = dict(main_cf or {})
        self._write_config()

    def _write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir):
            d.mkdir(parents=True, exist_ok=True)
        for parent in [self.tmp, *self.tmp.parents]:
            if parent != Path("/"):     # postfix-owned daemons traverse to the spool
                os.chmod(parent, parent.stat().st_mode | 0o011)
        settings = {
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.tmp / "data"),
            "maillog_file": str(self.maillog),
            # Postfix only writes a log file under an allowed prefix (/var by default).
            "maillog_file_prefixes": str(self.tmp),
            "compatibility_level": "3.6",
            "smtpd_error_sleep_time": "0",
        }
        settings.update(self._main_cf)
        self.set_main_cf(settings)
        master = SMTPD_LINE.sub(f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
                                MASTER_CF_DIST.read_text(), count=1)
        (self.config_dir / "master.cf").write_text(master)

    def set_main_cf(self, settings: dict[str, str]) -> None:
        with (self.config_dir / "main.cf").open("a") as f:
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")

    def env(self) -> dict[str, str]:
        return {**os.environ, "MAIL_CONFIG": str(self.config_dir)}

    def command(self, name: str, *args: str, input: bytes | str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """command - run /usr/sbin/NAME ARGS against this instance."""
        if isinstance(input, str):
            input = input.encode()
        path = SBIN / name if (SBIN / name).exists() else Path("/usr/bin") / name
        return subprocess.run([str(path), *args], input=input, env=self.env(),
                              capture_output=True, timeout=timeout)

    def start(self) -> "DebianPostfix":
        done = self.command("postfix", "-c", str(self.config_dir), "start")
        if done.returncode != 0:
            raise RuntimeError(f"Debian postfix start failed ({done.returncode}): "
                               f"{done.stdout.decode()}{done.stderr.decode()}\n{self.log_text()}")
        if not poll(lambda: listening("127.0.0.1", self.smtp_port), timeout=20):
            raise RuntimeError(f"Debian postfix does not listen on {self.smtp_port}")
        return self

    def stop(self) -> None:
        self.command("postfix", "-c", str(self.config_dir), "stop")

    def __enter__(self) -> "DebianPostfix":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
