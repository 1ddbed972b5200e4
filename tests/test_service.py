"""pymaster.master.service: the runtime every service program shares.

Argument parsing is tested in-process. The request loop runs in a real child
process (tests/services/echo.py) with the alive pipe on descriptor 5, as the
master would start it, against a Broker in the test process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest
import zmq

from pymaster.util import ipc
from pymaster.master.broker import Broker
from pymaster.master.service import ALIVE_FD, Service, UseCounter, parse_service_argv
from tests.support.brokerpump import pump
from tests.support.wait import wait_until

ECHO = Path(__file__).resolve().parent / "services" / "echo.py"


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
    """echo.py as the master would start it: brokered, alive pipe on fd 5."""

    def __init__(self, config_dir: Path, *overrides: str) -> None:
        self.alive_r, self.alive_w = os.pipe()
        argv = [sys.executable, str(ECHO), "-n", "svc", "-t", "unix"]
        for o in overrides:
            argv += ["-o", o]
        env = dict(os.environ, MAIL_CONFIG=str(config_dir),
                   PYMASTER_SERVICE_ENDPOINT="ipc://private/.svc.workers")
        # As the master does it: the read end lands on descriptor 5 exactly.
        pid = os.posix_spawn(argv[0], argv, env,
                             file_actions=[(os.POSIX_SPAWN_DUP2, self.alive_r, ALIVE_FD)])
        os.close(self.alive_r)
        self.proc = Spawned(pid)

    def master_goes(self) -> None:
        os.close(self.alive_w)

    def wait(self, broker: Broker) -> int:
        pump(broker, lambda: self.proc.poll() is not None, timeout=20)
        return self.proc.returncode


def recv_frames(sock, timeout: float = 20) -> list[bytes]:
    """recv_frames - the next message on SOCK, within TIMEOUT seconds."""
    assert sock.poll(int(timeout * 1000)), "nothing arrived"
    return sock.recv_multipart()


def log_text(config_dir: Path) -> str:
    """log_text - what the child has logged so far (maillog_file of the spool fixture)."""
    try:
        return (config_dir / "maillog").read_text()
    except FileNotFoundError:
        return ""


def request(broker: Broker, header: dict) -> dict:
    box: dict = {}
    t = threading.Thread(target=lambda: box.setdefault(
        "reply", ipc.Client("ipc://private/svc").call(header, timeout=20)[0]), daemon=True)
    t.start()
    pump(broker, lambda: "reply" in box)
    return box["reply"]


class TestUseCounter:
    """max_use counts client connections; a kept connection counts again
    every max_use requests (docs/architecture.md, "max_use")."""

    def test_every_new_client_connection_is_a_use(self):
        counter = UseCounter(100)
        assert [counter.count(c) for c in (b"a", b"b", b"c")] == [1, 2, 3]

    def test_a_kept_connection_counts_again_every_max_use_requests(self):
        counter = UseCounter(3)
        assert [counter.count(b"a") for _ in range(7)] == [1, 1, 1, 2, 2, 2, 3]

    def test_no_limit_counts_requests_and_remembers_no_clients(self):
        counter = UseCounter(0)
        assert [counter.count(b"a") for _ in range(3)] == [1, 2, 3]
        assert counter._since == {}


class TestRequestLoop:
    def test_a_worker_serves_max_use_requests_per_kept_client_connection(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool, "max_use=2")
        box: dict = {}

        def three_requests() -> None:
            client = ipc.Client("ipc://private/svc")
            box["pids"] = [client.call({"op": "whoami"}, timeout=20)[0]["pid"]
                           for _ in range(3)]
            client.close()
        t = threading.Thread(target=three_requests, daemon=True)
        t.start()
        pump(broker, lambda: "pids" in box)
        assert box["pids"] == [child.proc.pid] * 3     # one connection: uses 1, 1, 2
        assert child.wait(broker) == 0
        child.master_goes()
        broker.close()

    def test_a_worker_leaves_after_max_use_requests(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool, "max_use=2")
        pids = [request(broker, {"op": "whoami"})["pid"] for _ in range(2)]
        assert pids == [child.proc.pid] * 2
        assert child.wait(broker) == 0
        assert str(child.proc.pid).encode() in broker.retired     # it said BYE
        child.master_goes()
        broker.close()

    def test_the_bye_goes_before_the_last_reply(self, spool):
        """A reply gives the worker's credit back to the broker: a client that
        asks again as soon as it has the max_use-th answer must not reach the
        leaving worker, so the broker hears BYE before that answer."""
        backend = zmq.Context.instance().socket(zmq.ROUTER)
        backend.bind("ipc://private/.svc.workers")
        child = Child(spool, "max_use=2")
        try:
            worker, _, kind, _credits = recv_frames(backend)
            assert kind == ipc.READY
            for client in (b"first", b"second"):       # two client connections: two uses
                backend.send_multipart([worker, b"", client, b"", *ipc.pack({"op": "whoami"})])
                frames = recv_frames(backend)
                if client == b"second":
                    assert frames[2] == ipc.BYE       # first, then the answer
                    frames = recv_frames(backend)
                assert frames[2] == client and ipc.unpack(frames[4:])[0]["pid"] == child.proc.pid
            backend.send_multipart([worker, b"", ipc.BYE])       # the broker's answer
            wait_until(lambda: child.proc.poll() is not None, 20, "the worker to leave")
            assert child.proc.returncode == 0
        finally:
            child.master_goes()
            backend.close(0)

    def test_a_worker_leaves_after_max_idle(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool, "max_idle=1s")
        assert request(broker, {"op": "whoami"})["pid"] == child.proc.pid
        assert child.wait(broker) == 0
        child.master_goes()
        broker.close()

    def test_end_of_file_on_the_alive_pipe_ends_the_worker(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool)
        request(broker, {"op": "whoami"})
        child.master_goes()
        assert child.wait(broker) == 0
        broker.close()

    def test_sigterm_lets_a_busy_worker_finish_its_request(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool)
        request(broker, {"op": "whoami"})
        box: dict = {}
        threading.Thread(target=lambda: box.setdefault("reply", ipc.Client(
            "ipc://private/svc").call({"op": "sleep", "seconds": 1}, timeout=20)[0]),
            daemon=True).start()
        # The worker logs before it sleeps: then it is inside the request.
        pump(broker, lambda: "echo svc: sleeping" in log_text(spool))
        child.proc.send_signal(signal.SIGTERM)
        pump(broker, lambda: "reply" in box)
        assert box["reply"]["pid"] == child.proc.pid
        assert child.wait(broker) == 0
        child.master_goes()
        broker.close()

    def test_sigterm_ends_an_idle_worker_at_once(self, spool):
        broker = Broker("private", "svc")
        child = Child(spool)
        request(broker, {"op": "whoami"})
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait(broker) == 0
        child.master_goes()
        broker.close()
