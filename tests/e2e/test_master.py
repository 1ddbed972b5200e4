"""The master and the `postfix` command, end to end, with the echo test service.

Every test starts the real master (`postfix -c DIR start`) on a master.cf
that runs tests/services/echo.py: as an inet service on the instance's port
and as brokered unix services, and checks what an administrator would see:
processes, log lines, exit codes.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import smtplib
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from pymaster.util import ipc
from tests.support.instance import Instance, is_root, listening
from tests.support.smtpscript import ScriptServer
from tests.support.wait import wait_until

ECHO = Path(__file__).resolve().parents[1] / "services" / "echo.py"
needs_root = pytest.mark.skipif(not is_root(), reason="chroot and setuid need root")


def echo_instance(tmp_path: Path, services: str = "", main_cf: dict | None = None,
                  inet: str = "n - n - 3") -> Instance:
    """echo_instance - an instance whose master.cf runs only echo services.

    SERVICES are extra master.cf lines, `ECHO` standing for the echo program;
    the inet echo service listens on the instance's port. Not started."""
    inst = Instance(tmp_path, main_cf=main_cf, master_cf="", start=False)
    write_master_cf(inst, services, inet)
    return inst


@contextmanager
def running(tmp_path: Path, services: str = "", main_cf: dict | None = None,
            inet: str = "n - n - 3"):
    """running - echo_instance, started, and stopped at the end."""
    inst = echo_instance(tmp_path, services, main_cf, inet)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def write_master_cf(inst: Instance, services: str, inet: str = "n - n - 3") -> None:
    text = f"127.0.0.1:{inst.smtp_port} inet {inet} {ECHO}\n" + services.replace("ECHO", str(ECHO))
    (inst.config_dir / "master.cf").write_text(text)


def call(inst: Instance, service: str, header: dict, timeout: float = 20,
         visibility: str = "private") -> dict:
    client = ipc.Client(ipc.endpoint(visibility, service, str(inst.queue_dir)))
    try:
        reply, _ = client.call(header, timeout=timeout)
    finally:
        client.close()
    return reply


def children(inst: Instance, name: str | None = None) -> list[psutil.Process]:
    """children - live service processes of the master (of service NAME)."""
    master = psutil.Process(inst.master_pid())
    out = []
    for p in master.children():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if name is None or f"-n {name} " in cmd + " ":
            out.append(p)
    return out


def converse(sock_file, line: str = "hello") -> str:
    sock_file.write(line.encode() + b"\n")
    sock_file.flush()
    return sock_file.readline().decode()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class TestStartStop:
    def test_start_status_and_a_refused_second_start(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 2 ECHO\n") as inst:
            pid = inst.master_pid()
            inst.wait_for_log(r"postfix/master\[\d+\]: daemon started -- version [\d.]+, "
                              rf"configuration {re.escape(str(inst.config_dir))}$")
            status = inst.postfix("status")
            assert status.returncode == 0
            assert f"postfix/postfix-script: the Postfix mail system is running: PID: {pid}" \
                in status.stderr.decode()
            again = inst.postfix("start")
            assert again.returncode == 1
            assert "postfix/postfix-script: fatal: the Postfix mail system is already running" \
                in again.stderr.decode()
            assert inst.master_pid() == pid

    def test_stop_leaves_no_process_behind(self, tmp_path):
        inst = echo_instance(tmp_path, "echo unix - - n - 2 ECHO\n")
        inst.start()
        call(inst, "echo", {"op": "whoami"})
        with socket.create_connection(("127.0.0.1", inst.smtp_port)) as s:
            assert converse(s.makefile("rwb")).startswith("pid=")
        family = [inst.master_pid()] + [p.pid for p in children(inst)]
        assert len(family) >= 3
        stop = inst.postfix("stop")
        assert stop.returncode == 0
        assert "postfix/postfix-script: stopping the Postfix mail system" in stop.stderr.decode()
        wait_until(lambda: all(gone(pid) for pid in family), what="every process to end")
        inst.wait_for_log(r"postfix/master\[\d+\]: terminating on signal 15")
        status = inst.postfix("status")
        assert status.returncode == 1
        assert "the Postfix mail system is not running" in status.stderr.decode()
        again = inst.postfix("stop")
        assert again.returncode == 1
        assert "fatal: the Postfix mail system is not running" in again.stderr.decode()

    def test_abort_stops_at_once(self, tmp_path):
        inst = echo_instance(tmp_path, "echo unix - - n - 2 ECHO\n")
        inst.start()
        call(inst, "echo", {"op": "whoami"})
        family = [inst.master_pid()] + [p.pid for p in children(inst)]
        assert inst.postfix("abort").returncode == 0
        wait_until(lambda: all(gone(pid) for pid in family), what="every process to end")

    def test_a_bad_master_cf_fails_start_with_its_reason(self, tmp_path):
        inst = echo_instance(tmp_path, "broken unix - - n\n")
        done = inst.postfix("start")
        assert done.returncode == 1
        assert "master.cf: line 2: bad field count" in done.stderr.decode()
        assert "fatal: mail system startup failed" in done.stderr.decode()

    def test_process_titles(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 2 ECHO\n") as inst:
            call(inst, "echo", {"op": "whoami"})
            assert psutil.Process(inst.master_pid()).cmdline()[0] == "pymaster/master"
            titles = [" ".join(p.cmdline()).strip() for p in children(inst, "echo")]
            assert titles == ["pymaster/echo -n echo -t unix"]


class TestCommands:
    def test_flush_triggers_qmgr(self, tmp_path):
        with running(tmp_path, "qmgr unix n - n - 1 ECHO\n") as inst:
            assert inst.postfix("flush").returncode == 0
            inst.wait_for_log(r"echo qmgr: flush")

    def test_flush_when_not_running(self, tmp_path):
        done = echo_instance(tmp_path).postfix("flush")
        assert done.returncode == 1
        assert "fatal: Cannot flush mail queue - mail system is down" in done.stderr.decode()

    def test_check_reports_missing_programs_and_directories(self, tmp_path):
        inst = echo_instance(tmp_path, "ghost unix - - n - 1 no-such-program\n")
        done = inst.postfix("check")
        err = done.stderr.decode()
        assert done.returncode == 0
        assert re.search(r"postfix/postfix-script: warning: .*/no-such-program: "
                         r"not found or not executable", err)
        assert "missing queue directory" in err or "does not exist" in err
        assert inst.postfix("set-permissions").returncode == 0
        assert "queue director" not in inst.postfix("check").stderr.decode()

    def test_an_unknown_command_is_refused(self, tmp_path):
        done = echo_instance(tmp_path).postfix("frobnicate")
        assert done.returncode == 1
        assert "unknown command: 'frobnicate'" in done.stderr.decode()


class TestListenAddresses:
    """Where an inet service listens: master(5) service names, inet_interfaces."""

    def cfg(self, tmp_path, **settings):
        from pymaster.mail.config import load_config
        lines = [f"{k} = {v}" for k, v in settings.items()]
        (tmp_path / "main.cf").write_text("\n".join(lines) + "\n")
        return load_config(str(tmp_path))

    def test_an_address_and_port(self, tmp_path):
        from pymaster.master.daemon import listen_addresses
        assert listen_addresses("127.0.0.1:2525", self.cfg(tmp_path)) == \
            [(socket.AF_INET, ("127.0.0.1", 2525))]

    def test_a_bare_port_or_name_listens_on_inet_interfaces(self, tmp_path):
        from pymaster.master.daemon import listen_addresses
        cfg = self.cfg(tmp_path, inet_interfaces="127.0.0.1", inet_protocols="ipv4")
        assert listen_addresses("smtp", cfg) == [(socket.AF_INET, ("127.0.0.1", 25))]
        cfg = self.cfg(tmp_path, inet_interfaces="all", inet_protocols="ipv4")
        assert listen_addresses("2525", cfg) == [(socket.AF_INET, ("0.0.0.0", 2525))]

    def test_loopback_only_honours_inet_protocols(self, tmp_path):
        from pymaster.master.daemon import listen_addresses
        cfg = self.cfg(tmp_path, inet_interfaces="loopback-only", inet_protocols="ipv4")
        assert listen_addresses("25", cfg) == [(socket.AF_INET, ("127.0.0.1", 25))]

    def test_an_unknown_service_name_is_a_config_error(self, tmp_path):
        from pymaster.mail.config import ConfigError
        from pymaster.master.daemon import listen_addresses
        with pytest.raises(ConfigError, match="unknown service: nosuchservice/tcp"):
            listen_addresses("nosuchservice", self.cfg(tmp_path))


class TestOnDemand:
    def test_workers_start_on_demand_up_to_maxproc(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 2 ECHO\n") as inst:
            assert children(inst, "echo") == []
            replies: list[dict] = []
            threads = [threading.Thread(target=lambda: replies.append(
                call(inst, "echo", {"op": "sleep", "seconds": 1}))) for _ in range(5)]
            for t in threads:
                t.start()
            peak = 0
            while any(t.is_alive() for t in threads):
                peak = max(peak, len(children(inst, "echo")))
                time.sleep(0.05)
            assert len(replies) == 5
            assert len({r["pid"] for r in replies}) == 2
            assert peak == 2

    def test_a_worker_is_replaced_after_max_use_requests(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 1 ECHO -o max_use=2\n") as inst:
            pids = [call(inst, "echo", {"op": "whoami"})["pid"] for _ in range(5)]
            assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]

    def test_an_idle_worker_exits_after_max_idle(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 1 ECHO -o max_idle=1s\n") as inst:
            first = call(inst, "echo", {"op": "whoami"})["pid"]
            wait_until(lambda: gone(first), what="the idle worker to exit")
            assert call(inst, "echo", {"op": "whoami"})["pid"] != first

    def test_inet_children_start_when_all_are_busy(self, tmp_path):
        with running(tmp_path, inet="n - n - 2") as inst:
            conns = [socket.create_connection(("127.0.0.1", inst.smtp_port)) for _ in range(2)]
            answers = [converse(c.makefile("rwb")) for c in conns]
            pids = {re.match(r"pid=(\d+)", a).group(1) for a in answers}
            assert len(pids) == 2
            for c in conns:
                c.close()

    def test_master_cf_overrides_reach_the_service(self, tmp_path):
        services = "echo unix - - n - 1 ECHO -o myorigin=override.example\n"
        with running(tmp_path, services) as inst:
            assert call(inst, "echo", {"op": "param", "name": "myorigin"})["value"] \
                == "override.example"


def descriptors(pid: int) -> list[str]:
    """descriptors - what PID's open descriptors point to."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass        # closed meanwhile
    return out


class TestDataPath:
    def test_requests_go_from_client_to_worker_without_the_master(self, tmp_path):
        """The master only listens and starts workers: after 20 requests it has
        still never made a zeromq context (no I/O thread, no eventfd), so no
        request passed through it; the worker that answered has both."""
        with running(tmp_path, "echo unix - - n - 2 ECHO\n") as inst:
            pids = {call(inst, "echo", {"op": "whoami"})["pid"] for _ in range(20)}
            master = psutil.Process(inst.master_pid())
            assert master.num_threads() == 1
            assert not any("eventfd" in d for d in descriptors(master.pid))
            worker = psutil.Process(next(iter(pids)))
            assert worker.num_threads() > 1
            assert any("eventfd" in d for d in descriptors(worker.pid))


class TestSupervision:
    def test_a_killed_worker_is_logged_and_replaced(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 1 ECHO\n") as inst:
            pid = call(inst, "echo", {"op": "whoami"})["pid"]
            os.kill(pid, signal.SIGKILL)
            inst.wait_for_log(rf"postfix/master\[\d+\]: warning: process {re.escape(str(ECHO))} "
                              rf"pid {pid} killed by signal 9")
            assert call(inst, "echo", {"op": "whoami"})["pid"] != pid

    def test_a_failing_exit_status_is_logged(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 1 ECHO\n") as inst:
            pid = call(inst, "echo", {"op": "whoami"})["pid"]
            # The dead worker's lease ends at once, so the client need not time out.
            with pytest.raises(ipc.IpcError, match="^lost connection with echo service$"):
                call(inst, "echo", {"op": "exit", "status": 3}, timeout=60)
            inst.wait_for_log(rf"warning: process {re.escape(str(ECHO))} pid {pid} exit status 3")
            assert call(inst, "echo", {"op": "whoami"})["pid"] != pid

    def test_a_service_that_cannot_start_is_throttled(self, tmp_path):
        services = "crashy unix - - n - 1 ECHO crash\n"
        with running(tmp_path, services, main_cf={"service_throttle_time": "60s"}) as inst:
            with pytest.raises(ipc.IpcError):
                call(inst, "crashy", {"op": "whoami"}, timeout=3)
            inst.wait_for_log(rf"warning: process {re.escape(str(ECHO))} pid \d+ exit status 1")
            inst.wait_for_log(rf"postfix/master\[\d+\]: warning: {re.escape(str(ECHO))}: "
                              r"bad command startup -- throttling")
            # Throttled: no new attempt while service_throttle_time lasts.
            time.sleep(1)
            assert len(re.findall(r"exit status 1", inst.log_text())) == 1

    def test_a_killed_smtpd_that_served_is_replaced_not_throttled(self, tmp_path):
        """An smtpd serves many sessions at once and may never report busy: once
        it has served, kill -9 costs its own sessions, not a throttle of SMTP."""
        with Instance(tmp_path) as inst:
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                s.ehlo("client.example")
                smtpd = next(p for p in psutil.Process(inst.master_pid()).children()
                             if "smtpd" in " ".join(p.cmdline()))
                smtpd.kill()
            inst.wait_for_log(rf"process \S+/smtpd pid {smtpd.pid} killed by signal 9")

            def greeted() -> bool:
                try:
                    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=10) as s:
                        return s.noop()[0] == 250
                except (OSError, smtplib.SMTPException):
                    return False
            wait_until(greeted, what="a new smtpd to greet")
            assert "bad command startup -- throttling" not in inst.log_text()

    def test_wakeup_triggers_start_right_away_and_repeat(self, tmp_path):
        services = "tick unix n - n 1 1 ECHO\nlazy unix n - n 1? 1 ECHO\n"
        with running(tmp_path, services) as inst:
            inst.wait_for_log(r"postfix/echo\[\d+\]: echo tick: wakeup", count=2)
            assert "echo lazy: wakeup" not in inst.log_text()
            call(inst, "lazy", {"op": "whoami"}, visibility="public")
            inst.wait_for_log(r"echo lazy: wakeup")

    def test_children_end_when_the_master_dies(self, tmp_path):
        inst = echo_instance(tmp_path, "echo unix - - n - 1 ECHO\n")
        inst.start()
        worker = call(inst, "echo", {"op": "whoami"})["pid"]
        os.kill(inst.master_pid(), signal.SIGKILL)
        wait_until(lambda: gone(worker), what="the worker to notice")


class TestReload:
    def test_reload_adds_and_removes_services(self, tmp_path):
        with running(tmp_path, "old unix - - n - 1 ECHO\n") as inst:
            old_pid = call(inst, "old", {"op": "whoami"})["pid"]
            write_master_cf(inst, "new unix - - n - 1 ECHO\n")
            done = inst.postfix("reload")
            assert done.returncode == 0
            assert "postfix/postfix-script: refreshing the Postfix mail system" \
                in done.stderr.decode()
            inst.wait_for_log(r"postfix/master\[\d+\]: reload -- version [\d.]+, configuration ")
            wait_until(lambda: gone(old_pid), what="the removed service's worker to exit")
            assert call(inst, "new", {"op": "whoami"})["name"] == "new"
            wait_until(lambda: not (inst.queue_dir / "private" / "old").exists(),
                       what="the removed endpoint to go")

    def test_master_service_disable_and_reload(self, tmp_path):
        """master_service_disable = inet (what postmulti gives a new instance):
        the inet service does not listen, unix ones run; cleared, a reload
        opens the port."""
        inst = echo_instance(tmp_path, "echo unix - - n - 1 ECHO\n",
                             main_cf={"master_service_disable": "inet"})
        done = inst.postfix("start")
        assert done.returncode == 0, done.stderr
        try:
            inst.wait_for_log(r"daemon started -- version")
            assert call(inst, "echo", {"op": "whoami"})["name"] == "echo"
            assert not listening("127.0.0.1", inst.smtp_port)
            inst.set_main_cf({"master_service_disable": ""})
            inst.postfix("reload")
            inst.wait_for_port(inst.smtp_port)
            inst.set_main_cf({"master_service_disable": f"127.0.0.1:{inst.smtp_port}/inet"})
            inst.postfix("reload")
            inst.wait_for_log(r"reload -- version", count=2)
            wait_until(lambda: not listening("127.0.0.1", inst.smtp_port),
                       what="the disabled listener to close")
        finally:
            inst.stop()

    def test_reload_replaces_idle_workers_and_keeps_the_endpoint(self, tmp_path):
        with running(tmp_path, "echo unix - - n - 2 ECHO\n") as inst:
            before = call(inst, "echo", {"op": "whoami"})["pid"]
            client = ipc.Client(ipc.endpoint("private", "echo", str(inst.queue_dir)))
            inst.postfix("reload")
            inst.wait_for_log(r"reload -- version")
            wait_until(lambda: gone(before), what="the old generation to exit")
            reply, _ = client.call({"op": "whoami"}, timeout=20)
            client.close()
            assert reply["pid"] != before

    def test_an_open_connection_survives_a_reload(self, tmp_path):
        with running(tmp_path) as inst:
            conn = socket.create_connection(("127.0.0.1", inst.smtp_port))
            stream = conn.makefile("rwb")
            first = converse(stream)
            inst.postfix("reload")
            inst.wait_for_log(r"reload -- version")
            assert converse(stream) == first
            with socket.create_connection(("127.0.0.1", inst.smtp_port)) as other:
                assert converse(other.makefile("rwb")) != first
            old_pid = int(re.match(r"pid=(\d+)", first).group(1))
            stream.write(b"quit\n")
            stream.flush()
            conn.close()
            wait_until(lambda: gone(old_pid), what="the old child to finish and exit")


@needs_root
class TestJail:
    def test_chroot_and_privilege_drop_as_master_cf_says(self, tmp_path):
        services = ("jailed unix - - y - 1 ECHO\n"
                    "free unix - n n - 1 ECHO\n")
        with running(tmp_path, services, inet="n - y - 2") as inst:
            postfix = pwd.getpwnam("postfix")
            jailed = call(inst, "jailed", {"op": "whoami"})
            assert (jailed["uid"], jailed["gid"], jailed["groups"]) == \
                (postfix.pw_uid, postfix.pw_gid, [])
            assert jailed["chrooted"] and jailed["cwd"] == "/"
            free = call(inst, "free", {"op": "whoami"})
            assert free["uid"] == 0 and not free["chrooted"]
            with socket.create_connection(("127.0.0.1", inst.smtp_port)) as s:
                answer = converse(s.makefile("rwb"))
            assert f"uid={postfix.pw_uid}" in answer and "chrooted=yes" in answer
            assert (inst.queue_dir / "etc" / "hosts").exists()


def test_a_delivery_held_by_its_peer_keeps_no_other_delivery_waiting(tmp_path):
    """One smtp worker sits in a delivery that its peer holds for up to 30
    seconds; the other messages go out meanwhile, through other smtp workers
    that are idle or that the master starts (Postfix: all busy and work
    waiting -> one more, up to maxproc). No request queues behind the busy
    worker."""
    release = threading.Event()
    peer = ScriptServer(host="127.0.0.2", hold={"slow@far.example": release})
    others = [f"quick{n}@far.example" for n in range(6)]
    settings = {"myhostname": "a.test", "mynetworks": "127.0.0.0/8",
                "inet_interfaces": "127.0.0.1",
                "relayhost": f"[127.0.0.2]:{peer.port}"}
    with peer, Instance(tmp_path, main_cf=settings) as inst:
        try:
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                s.sendmail("sender@a.test", ["slow@far.example"], b"Subject: slow\n\nheld\n")
            wait_until(lambda: peer.holding == ["slow@far.example"], timeout=20,
                       what="the peer holding the first delivery")
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                for rcpt in others:
                    s.sendmail("sender@a.test", [rcpt], b"Subject: quick\n\nflows\n")
            for rcpt in others:
                inst.wait_for_log(rf"postfix/smtp\[\d+\]: \w+: to=<{re.escape(rcpt)}>, "
                                  r".*status=sent")
            # Every other delivery went out while the first is still held.
            assert peer.holding == ["slow@far.example"]
            assert not re.search(r"to=<slow@far\.example>.*status=", inst.log_text())
        finally:
            release.set()
        inst.wait_for_log(r"to=<slow@far\.example>, .*status=sent")
