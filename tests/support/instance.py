"""A real pymaster instance for end-to-end tests.

Writes a configuration directory in a temporary directory from the shipped
etc/main.cf and etc/master.cf (smtpd moved to a free loopback port, the queue
and the log inside the temporary directory), starts the real master with
`.venv/bin/postfix -c DIR start`, and stops it again. Nothing is faked: the
tests talk to it with real clients and read its real mailboxes, queue and log.

    with Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}) as inst:
        smtplib.SMTP("127.0.0.1", inst.smtp_port) ...
        inst.wait_for_log(r"status=sent")
"""

from __future__ import annotations

import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pymaster.util import ipc
from tests.support.wait import poll, wait_until

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
SHIPPED_ETC = ROOT / "etc"


# Ports for test servers come from below the kernel's ephemeral range: a
# port that bind(0) picked would be free again once probed, and another
# bind(0) or an outgoing connection could take it before the master binds it.
# Each xdist worker has its own slice and walks it from a random start, so
# two servers of one run never get the same port.
PORT_FLOOR = 10000
_ports: Iterator[int] | None = None


def _port_candidates() -> Iterator[int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ceiling = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ceiling = 32768
    if ceiling - PORT_FLOOR < 1000:         # no room below the ephemeral ports
        return iter(())
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    worker = int(re.sub(r"\D", "", os.environ.get("PYTEST_XDIST_WORKER", "")) or 0) % workers
    size = (ceiling - PORT_FLOOR) // workers
    low = PORT_FLOOR + worker * size
    start = random.randrange(size)
    return (low + (start + i) % size for i in range(size))


def free_port() -> int:
    """free_port - a TCP port on 127.0.0.1 that nobody listens on, not handed out before."""
    global _ports
    if _ports is None:
        _ports = _port_candidates()
    for port in _ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:              # the slice is used up: the kernel's choice
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root() -> bool:
    return os.geteuid() == 0


def _open_path_for_others(path: Path) -> None:
    """Let unprivileged services traverse to PATH (pytest's base is 0700)."""
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, (mode & 0o7777) | 0o011)


class MailLog:
    """Reading an instance's log file (self.maillog), ours or Debian's Postfix's."""

    maillog: Path

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 20, count: int = 1) -> re.Match:
        """wait_for_log - the COUNTth match of PATTERN in the log, waiting for it."""
        regex = re.compile(pattern, re.M)

        def countth() -> re.Match | None:
            matches = list(regex.finditer(self.log_text()))
            return matches[count - 1] if len(matches) >= count else None
        return wait_until(countth, timeout, lambda: f"{count} log line(s) matching {pattern!r}; "
                                                    f"log:\n{self.log_text()[-6000:]}")


class Instance(MailLog):
    """One pymaster instance in TMP: config dir, queue dir, log file."""

    def __init__(self, tmp: Path, main_cf: dict[str, str] | None = None,
                 master_cf_extra: str = "", master_cf: str | None = None,
                 start: bool = True) -> None:
        self.tmp = Path(tmp)
        self.config_dir = self.tmp / "etc"
        self.queue_dir = self.tmp / "spool"
        self.maillog = self.tmp / "maillog"
        self.mailbox_dir = self.queue_dir / "mailboxes"
        self.smtp_port = free_port()
        self._main_cf = dict(main_cf or {})
        self._master_cf_extra = master_cf_extra
        self._master_cf = master_cf
        self._autostart = start
        self.write_config()

    # -- configuration -----------------------------------------------------
    def write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for item in SHIPPED_ETC.iterdir():
            if item.is_file() and item.name not in ("main.cf", "master.cf") \
                    and not item.name.endswith((".db", ".cdb")):
                shutil.copy(item, self.config_dir / item.name)
        settings = {
            "queue_directory": str(self.queue_dir),
            "maillog_file": str(self.maillog),
            "mail_owner": "postfix" if is_root() else pwd.getpwuid(os.getuid()).pw_name,
            "smtpd_error_sleep_time": "0",
        }
        settings.update(self._main_cf)
        self.set_main_cf(settings)
        master = self._master_cf if self._master_cf is not None else self._shipped_master_cf()
        (self.config_dir / "master.cf").write_text(master + "\n" + self._master_cf_extra + "\n")
        if is_root():
            _open_path_for_others(self.tmp)

    def set_main_cf(self, settings: dict[str, str]) -> None:
        """set_main_cf - append NAME = VALUE lines (a later line wins in main.cf)."""
        path = self.config_dir / "main.cf"
        if not path.exists():
            shipped = SHIPPED_ETC / "main.cf"
            path.write_text(shipped.read_text() if shipped.exists() else "")
        with path.open("a") as f:
            f.write("\n# test settings\n")
            for name, value in settings.items():
                f.write(f"{name} = {value}\n")

    def _shipped_master_cf(self) -> str:
        text = (SHIPPED_ETC / "master.cf").read_text()
        return re.sub(r"(?m)^127\.0\.0\.1:2525(\s)", f"127.0.0.1:{self.smtp_port}\\1", text)

    # -- commands ----------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["MAIL_CONFIG"] = str(self.config_dir)
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        return env

    def command(self, name: str, *args: str, input: bytes | str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess:
        """command - run .venv/bin/NAME ARGS against this instance."""
        if isinstance(input, str):
            input = input.encode()
        return subprocess.run([str(BIN / name), *args], input=input, env=self.env(),
                              capture_output=True, timeout=timeout)

    def postfix(self, *args: str) -> subprocess.CompletedProcess:
        return self.command("postfix", "-c", str(self.config_dir), *args)

    # -- life cycle --------------------------------------------------------
    def start(self) -> "Instance":
        self._build_tables()
        self._make_mailbox_base()
        done = self.postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix start failed ({done.returncode}): "
                               f"{done.stdout.decode()}{done.stderr.decode()}\n{self.log_text()}")
        self.wait_for_port(self.smtp_port)
        self._pid = self.master_pid()
        return self

    def _make_mailbox_base(self) -> None:
        """Virtual mailboxes are created as the mapped uid (65534 in the shipped
        main.cf, others in tests): as root, let any of them create its own."""
        self.mailbox_dir.mkdir(parents=True, exist_ok=True)
        if is_root():
            os.chmod(self.mailbox_dir, 0o1777)

    def _build_tables(self) -> None:
        aliases = self.config_dir / "aliases"
        if aliases.exists() and (BIN / "postalias").exists():
            self.command("postalias", "-c", str(self.config_dir), f"hash:{aliases}")

    def wait_for_port(self, port: int, timeout: float = 20) -> None:
        """wait_for_port - until something listens on 127.0.0.1:PORT (RuntimeError if not)."""
        if not poll(lambda: listening("127.0.0.1", port), timeout):
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port}\n{self.log_text()}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self.master_pid() or getattr(self, "_pid", None)
        self.postfix("stop")
        if pid is None:
            return
        poll(lambda: not _alive(pid), timeout=15)
        if _alive(pid):
            self.postfix("abort")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> "Instance":
        if self._autostart:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what tests read (log_text, wait_for_log: MailLog) --------------------
    def maildir_message_with(self, maildir: Path, token: str, timeout: float = 20) -> str:
        """maildir_message_with - the message in MAILDIR/new holding TOKEN, waiting for it."""
        new = Path(maildir) / "new"

        def holding_token() -> str | None:
            for f in sorted(new.iterdir()) if new.is_dir() else []:
                text = f.read_text(errors="replace")
                if token in text:
                    return text
            return None
        return wait_until(holding_token, timeout, lambda: f"a message with {token} in {new}; "
                                                          f"log:\n{self.log_text()[-4000:]}")

    def maildir_messages(self, maildir: Path, count: int = 1, timeout: float = 20) -> list[bytes]:
        """maildir_messages - the messages in MAILDIR/new, waiting for COUNT of them."""
        new = Path(maildir) / "new"

        def files() -> list[Path]:
            return sorted(new.iterdir()) if new.is_dir() else []

        def enough() -> list[Path] | None:
            present = files()
            return present if len(present) >= count else None
        present = wait_until(enough, timeout,
                             lambda: f"{count} messages in {new}, {len(files())} there; log:\n"
                                     f"{self.log_text()[-6000:]}")
        return [f.read_bytes() for f in present]


def submit_to_cleanup(inst: Instance, rcpts, body: bytes, sender: str) -> str:
    """submit_to_cleanup - queue BODY through INST's real cleanup service; its queue ID."""
    header = {"op": "message", "sender": sender,
              "recipients": [{"address": r, "orig": r} for r in rcpts],
              "attrs": {"origin": "test", "rewrite_context": "remote"}, "flags": []}
    client = ipc.Client(ipc.endpoint("public", "cleanup", str(inst.queue_dir)))
    try:
        reply, _ = client.call(header, [body], timeout=20)
    finally:
        client.close()
    assert reply["status"] == "ok", reply
    return reply["queue_id"]


def listening(host: str, port: int) -> bool:
    """listening - whether a TCP connection to HOST:PORT is accepted now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


if __name__ == "__main__":  # a quick manual check: python -m tests.support.instance DIR
    inst = Instance(Path(sys.argv[1]))
    inst.start()
    print(f"up on 127.0.0.1:{inst.smtp_port}, config {inst.config_dir}")
