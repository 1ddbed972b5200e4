"""pymaster.master.service: the runtime every service program shares.

Argument parsing is tested in-process. The request loop runs in a real child
process (tests/services/echo.py) as the master would start it: the test
listens on private/svc and hands the socket over as descriptor 3, with the
status pipe on 4 and the alive pipe on 5; its clients take leases there.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import threading
from pathlib import Path

import pytest

from pymaster.mail.config import default_config
from pymaster.util import ipc
from pymaster.master.service import (
    ALIVE_FD,
    LISTEN_FD,
    STATUS_AVAIL,
    STATUS_BUSY,
    STATUS_FD,
    STATUS_FORMAT,
    STATUS_SIZE,
    STATUS_USED,
    Service,
    parse_service_argv,
)
from tests.support.served import listen
from tests.support.wait import wait_until

ECHO = Path(__file__).resolve().parent / "services" / "echo.py"
EP = "private/svc"


class TestArguments:
    def test_the_masters_options_then_the_services_own(self):
        opts, args = parse_service_argv(
            ["-n", "submission", "-t", "inet", "-c", "-u", "-v", "-v",
             "-o", "smtpd_tls_security_level=encrypt", "-osyslog_name=postfix/submission",
             "extra", "-x"])
        assert opts["name"] == "submission" and opts["type"] == "inet"
        assert opts["chroot"] and opts["unpriv"] and opts["verbose"] == 2
        assert opts["overrides"] == {"smtpd_tls_security_level": "encrypt",
                                     "syslog_name": "postfix/submission"}
        assert args == ["extra", "-x"]

    def test_defaults_without_options(self):
        opts, args = parse_service_argv([])
        assert (opts["name"], opts["type"], opts["chroot"], opts["unpriv"]) == \
            (None, "unix", False, False)
        assert args == []

    def test_from_argv_reads_main_cf_with_the_overrides_on_top(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        queue = tmp_path / "spool"
        queue.mkdir()
        (tmp_path / "main.cf").write_text(f"queue_directory = {queue}\nmyorigin = a.example\n"
                                          f"maillog_file = {tmp_path}/maillog\n")
        monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
        saved = signal.getsignal(signal.SIGTERM)
        try:
            svc = Service.from_argv("echo", ["-n", "e1", "-t", "unix", "-o", "myorigin=b.example"])
        finally:
            signal.signal(signal.SIGTERM, saved)
        assert (svc.name, svc.type, svc.program) == ("e1", "unix", "echo")
        assert svc.cfg.get("myorigin") == "b.example"
        assert os.getcwd() == str(queue)


@pytest.fixture
def spool(tmp_path, monkeypatch):
    """spool - a config and queue directory; the test runs inside the queue directory."""
    queue = tmp_path / "spool"
    (queue / "private").mkdir(parents=True)
    (tmp_path / "main.cf").write_text(f"queue_directory = {queue}\n"
                                      f"maillog_file = {tmp_path}/maillog\n")
    monkeypatch.chdir(queue)
    return tmp_path


class Spawned:
    """Spawned - the few Popen methods the tests use, for a posix_spawn'ed pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


class Child:
    """echo.py as the master would start it: the service's listening socket
    on descriptor 3, the status pipe on 4, the alive pipe on 5."""

    def __init__(self, config_dir: Path, *overrides: str) -> None:
        self.listener = listen(EP)
        self.status_r, status_w = os.pipe()
        os.set_blocking(self.status_r, False)
        self.alive_r, self.alive_w = os.pipe()
        self.reports: list[tuple[int, bytes]] = []
        argv = [sys.executable, str(ECHO), "-n", "svc", "-t", "unix"]
        for o in overrides:
            argv += ["-o", o]
        env = dict(os.environ, MAIL_CONFIG=str(config_dir))
        env.pop("PYMASTER_LISTEN_FDS", None)
        # As the master does it: each lands on its descriptor exactly.
        pid = os.posix_spawn(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_DUP2, self.listener.fileno(), LISTEN_FD),
            (os.POSIX_SPAWN_DUP2, status_w, STATUS_FD),
            (os.POSIX_SPAWN_DUP2, self.alive_r, ALIVE_FD)])
        os.close(self.alive_r)
        os.close(status_w)
        self.proc = Spawned(pid)

    def master_goes(self) -> None:
        if self.alive_w >= 0:
            os.close(self.alive_w)
            self.alive_w = -1

    def wait(self) -> int:
        wait_until(lambda: self.proc.poll() is not None, 20, "the worker to exit")
        return self.proc.returncode

    def flags(self) -> list[bytes]:
        """flags - what the child has reported on the status pipe so far."""
        try:
            data = os.read(self.status_r, STATUS_SIZE * 256)
        except BlockingIOError:
            data = b""
        for i in range(0, len(data) - STATUS_SIZE + 1, STATUS_SIZE):
            self.reports.append(struct.unpack_from(STATUS_FORMAT, data, i))
        assert all(pid == self.proc.pid for pid, _ in self.reports)
        return [flag for _, flag in self.reports]

    def close(self) -> None:
        self.master_goes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            wait_until(lambda: self.proc.poll() is not None, 20, "the killed worker")
        os.close(self.status_r)
        self.listener.close()


@pytest.fixture
def child(spool):
    """child - Child(spool, *overrides) as a factory; every one is ended after the test."""
    made: list[Child] = []

    def start(*overrides: str) -> Child:
        made.append(Child(spool, *overrides))
        return made[-1]
    yield start
    for c in made:
        c.close()


def log_text(config_dir: Path) -> str:
    """log_text - what the child has logged so far (maillog_file of the spool fixture)."""
    try:
        return (config_dir / "maillog").read_text()
    except FileNotFoundError:
        return ""


def request(header: dict, timeout: float = 20) -> dict:
    """request - HEADER over a lease of its own, let go after the answer."""
    client = ipc.Client(EP, timeout=timeout)
    try:
        return client.call(header)[0]
    finally:
        client.close()


class TestRequestLoop:
    def test_a_worker_counts_a_kept_lease_again_every_max_use_requests(self, child):
        worker = child("max_use=2")
        client = ipc.Client(EP)
        pids = [client.call({"op": "whoami"}, timeout=20)[0]["pid"] for _ in range(3)]
        assert pids == [worker.proc.pid] * 3        # one lease: uses 1, 1, 2
        client.close()
        assert worker.wait() == 0

    def test_a_worker_leaves_after_max_use_leases(self, child):
        worker = child("max_use=2")
        pids = [request({"op": "whoami"})["pid"] for _ in range(2)]
        assert pids == [worker.proc.pid] * 2
        assert worker.wait() == 0

    def test_the_lease_of_the_last_use_ends_with_bye(self, child):
        """The worker that reached max_use ends the lease it holds: its
        client takes its next lease elsewhere, and the worker exits once the
        client has let go."""
        worker = child("max_use=1")
        lease = ipc.Lease(EP)
        try:
            lease.wait_open(20)
            lease.send({"op": "whoami"})
            wait_until(lambda: lease.sock.poll(20), 20, "the answer")
            assert lease.recv()[0]["pid"] == worker.proc.pid
            wait_until(lambda: (lease.check(), lease.retiring or lease.gone)[1], 20, "BYE")
            assert lease.retiring
        finally:
            lease.close()
        assert worker.wait() == 0

    def test_the_master_hears_busy_while_a_lease_is_held(self, child):
        """A one-at-a-time worker takes no other lease while it holds one:
        the master must start another worker for the next client."""
        worker = child()
        wait_until(lambda: worker.flags() == [STATUS_AVAIL], 20, "available")
        lease = ipc.Lease(EP)
        try:
            lease.wait_open(20)
            wait_until(lambda: worker.flags()[-1:] == [STATUS_BUSY], 20, "busy")
            lease.send({"op": "whoami"})
            wait_until(lambda: lease.sock.poll(20), 20, "the answer")
            lease.recv()
        finally:
            lease.close()
        wait_until(lambda: worker.flags()[-1:] == [STATUS_AVAIL], 20, "available again")
        assert STATUS_USED in worker.flags()        # served: its death is no bad start-up

    def test_a_worker_leaves_after_max_idle(self, child):
        worker = child("max_idle=1s")
        assert request({"op": "whoami"})["pid"] == worker.proc.pid
        assert worker.wait() == 0

    def test_end_of_file_on_the_alive_pipe_ends_the_worker(self, child):
        worker = child()
        request({"op": "whoami"})
        worker.master_goes()
        assert worker.wait() == 0

    def test_a_trigger_reaches_the_handler(self, child, spool):
        worker = child()
        ipc.trigger(EP, {"op": "wakeup"})
        wait_until(lambda: "echo svc: wakeup" in log_text(spool), 20, "the wakeup")
        assert request({"op": "whoami"})["pid"] == worker.proc.pid

    def test_a_worker_that_dies_mid_request_loses_its_client_at_once(self, child):
        worker = child()
        with pytest.raises(ipc.IpcError) as caught:
            request({"op": "exit", "status": 3}, timeout=600)
        assert str(caught.value) == "lost connection with svc service"
        assert worker.wait() == 3

    def test_sigterm_lets_a_busy_worker_finish_its_request(self, child, spool):
        worker = child()
        request({"op": "whoami"})
        box: dict = {}
        threading.Thread(target=lambda: box.setdefault(
            "reply", request({"op": "sleep", "seconds": 1})), daemon=True).start()
        # The worker logs before it sleeps: then it is inside the request.
        wait_until(lambda: "echo svc: sleeping" in log_text(spool), 20, "the request")
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "reply" in box, 20, "the answer")
        assert box["reply"]["pid"] == worker.proc.pid
        assert worker.wait() == 0

    def test_sigterm_ends_an_idle_worker_at_once(self, child):
        worker = child()
        request({"op": "whoami"})
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.wait() == 0


class LeaseWithItsRequest:
    """An ipc.Server whose events() took a lease and found its first request
    in the same pass (what a loaded machine makes of a fast client)."""

    def __init__(self) -> None:
        self.taken = False
        self.uses = 1

    def events(self) -> list:
        self.taken = True
        return [(b"token", {"op": "slow"}, [])]

    def available(self) -> bool:
        return not self.taken

    def reply(self, token: bytes, header: dict, payload) -> None:
        pass


class TestReportsOrder:
    def test_busy_is_reported_before_the_first_request_of_a_lease_runs(self):
        """A request may run long (smtp with a slow peer): the master must
        know meanwhile that this worker takes no other lease, or the next
        client waits for it instead of getting a worker of its own."""
        svc = Service("echo", "svc", "unix", default_config())
        reported: list[bytes] = []
        svc._status = reported.append
        seen_by_handler = []

        def handler(header, payload):
            seen_by_handler.extend(reported)
            return {"status": "ok"}, []
        svc._serve_events(LeaseWithItsRequest(), handler)
        assert seen_by_handler[:2] == [STATUS_BUSY, STATUS_USED]
