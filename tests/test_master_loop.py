"""The master's loop state (pymaster.master.daemon): what it keeps between turns.

The master polls only its listeners, the children's status pipes and its
signal pipe: it carries no request (pymaster.util.ipc). The poll set and the
next timer are rebuilt only when something changes them (a child starts,
reports or ends, a timer fires, a throttle begins, a reload, the stop). A
listener is polled only while a connection on it would start a child: a
client waiting for a lease of a unix service starts a worker as a client
of an inet service does. These tests drive a Master in the test process
without its signal handlers and without starting programs: `spawn` is
replaced by a recorder.
"""

from __future__ import annotations

import os
import select
import signal
import struct
import time

import pytest

from pymaster.mail import pidfile
from pymaster.master import daemon as master_module
from pymaster.master.daemon import Child, Master, load_specs
from pymaster.master.service import STATUS_AVAIL, STATUS_BUSY, STATUS_FORMAT, STATUS_USED
from pymaster.util import ipc, log

MASTER_CF = """\
127.0.0.1:0 inet n - n - 2 /bin/true
svc       unix - - n -  2 /bin/true
tick      unix n - n 60? 1 /bin/true
"""


class RecordingPoll:
    """select.poll, and the descriptors it was told to watch."""

    def __init__(self) -> None:
        self.poll_object = select.poll()
        self.watched: dict = {}

    def register(self, fd, flags) -> None:
        self.poll_object.register(fd, flags)
        self.watched[fd] = flags

    def unregister(self, fd) -> None:
        self.poll_object.unregister(fd)
        del self.watched[fd]

    def poll(self, timeout=None):
        return self.poll_object.poll(timeout)


@pytest.fixture
def master(tmp_path, monkeypatch):
    """master - a Master with its endpoints open in TMP, not yet run."""
    config_dir, queue_dir = tmp_path / "etc", tmp_path / "spool"
    config_dir.mkdir()
    for sub in ("private", "public", "pid"):
        (queue_dir / sub).mkdir(parents=True)
    (config_dir / "main.cf").write_text(f"queue_directory = {queue_dir}\n"
                                        f"maillog_file = {tmp_path}/maillog\n"
                                        "service_throttle_time = 10s\n")
    (config_dir / "master.cf").write_text(MASTER_CF)
    m = Master(str(config_dir))
    m.poller = RecordingPoll()
    log.setup("master", m.cfg)
    monkeypatch.chdir(queue_dir)
    for spec in load_specs(m.cfg):
        m.services[spec.key] = m.open_service(spec)
    m.sig_r, m.sig_w = os.pipe()
    m.pid_fd = pidfile.lock_pid_file(".")
    pidfile.write_pid_file(m.pid_fd)
    m.spawned = []

    def spawn(svc):
        """Record the start and keep the child's books as spawn() does."""
        child = Child(100000 + len(m.spawned), svc, svc.generation)
        svc.children[child.pid] = child
        m.children[child.pid] = child
        m.stale = True
        m.spawned.append(svc.spec.service)
        return child
    monkeypatch.setattr(m, "spawn", spawn)
    yield m
    m.shutdown()
    for fd in (m.sig_r, m.sig_w, m.pid_fd):
        os.close(fd)


def service(m: Master, name: str):
    return next(s for s in m.services.values() if s.spec.service == name)


def readable_listeners(m: Master, svc) -> bool:
    return all(sock.fileno() in m.registered for sock in svc.listeners)


def report(m: Master, svc, child, flag: bytes) -> None:
    """report - CHILD of SVC writes FLAG on its status pipe; the master reads it."""
    os.write(svc.status_w, struct.pack(STATUS_FORMAT, child.pid, flag))
    m.read_status(svc)


def serve_events(m: Master, until) -> None:
    """serve_events - poll and act as the loop does until UNTIL() holds."""
    deadline = time.monotonic() + 20
    while not until():
        assert time.monotonic() < deadline, "the master saw nothing"
        if m.stale:
            m.refresh()
        m.handle_events(dict(m.poller.poll(20)))


def queued_trigger(svc) -> dict:
    """queued_trigger - the one-way request of the connection waiting on SVC's socket."""
    conn, _ = svc.listeners[0].accept()
    with conn:
        conn.settimeout(20)
        data = conn.recv(65536)
    header, _ = ipc.unpack([data[4:]])
    assert len(data) == 4 + int.from_bytes(data[:4], "big")
    return header


class TestPollSet:
    def test_a_refresh_watches_signals_status_pipes_and_idle_listeners(self, master):
        master.refresh()
        svc, smtp = service(master, "svc"), service(master, "127.0.0.1:0")
        assert master.sig_r in master.registered
        assert svc.status_r in master.registered and smtp.status_r in master.registered
        # No child yet: a connection (an inet client, a client taking a lease) starts one.
        assert readable_listeners(master, smtp) and readable_listeners(master, svc)
        assert not master.stale

    def test_the_poller_watches_exactly_what_registered_names(self, master):
        master.refresh()
        assert set(master.poller.watched) == set(master.registered)
        master.throttle(service(master, "127.0.0.1:0"))
        master.refresh()
        assert set(master.poller.watched) == set(master.registered)
        assert all(flags == select.POLLIN for flags in master.poller.watched.values())

    def test_nothing_is_rebuilt_while_nothing_changes(self, master):
        master.refresh()
        registered = master.registered
        master.run_timers()
        assert not master.stale and master.registered is registered

    @pytest.mark.parametrize("name", ["127.0.0.1:0", "svc"])
    def test_a_child_that_reports_busy_and_available_moves_its_listeners(self, master, name):
        svc = service(master, name)
        master.refresh()
        child = master.spawn(svc)
        master.refresh()
        assert not readable_listeners(master, svc)  # the new child takes connections
        report(master, svc, child, STATUS_BUSY)     # busy: a connection wants a child
        assert master.stale
        master.refresh()
        assert readable_listeners(master, svc)
        report(master, svc, child, STATUS_AVAIL)
        assert master.stale
        master.refresh()
        assert not readable_listeners(master, svc)
        report(master, svc, child, STATUS_AVAIL)    # no change: no rebuild
        assert not master.stale

    def test_the_process_limit_unwatches_the_listeners(self, master):
        svc = service(master, "svc")                 # process limit 2
        for _ in range(2):
            report(master, svc, master.spawn(svc), STATUS_BUSY)
        master.refresh()
        assert svc.listeners and not readable_listeners(master, svc)

    def test_a_throttle_unwatches_the_listeners_until_it_ends(self, master, monkeypatch):
        smtp = service(master, "127.0.0.1:0")
        master.refresh()
        master.throttle(smtp)
        assert master.stale
        master.refresh()
        assert not readable_listeners(master, smtp)
        assert master.next_timer == smtp.throttled_until
        later = smtp.throttled_until + 0.001
        monkeypatch.setattr(master_module.time, "monotonic", lambda: later)
        master.run_timers()                          # its end is a timer
        master.refresh()
        assert readable_listeners(master, smtp)

    def test_the_stop_unwatches_every_listener(self, master):
        master.refresh()
        master.begin_stop(15)
        master.refresh()
        assert all(not s.listeners for s in master.services.values())
        assert master.next_timer == master.stop_deadline


class TestLeases:
    """A client that waits for a lease of a unix service is a connection in
    the listen queue of the service's socket: the master starts a worker for
    it when no worker is available, and the worker accepts it."""

    def test_a_waiting_client_starts_one_worker_and_only_one(self, master):
        master.refresh()
        svc = service(master, "svc")
        leases = [ipc.Lease(ipc.endpoint("private", "svc")) for _ in range(2)]
        try:
            serve_events(master, lambda: master.spawned)
            assert master.spawned == ["svc"]
            master.refresh()
            assert not readable_listeners(master, svc)   # the worker is on its way
            assert not any(lease.open_done() for lease in leases)   # the master accepts none
        finally:
            for lease in leases:
                lease.close()

    def test_a_client_waiting_while_every_worker_is_busy_starts_another(self, master):
        master.refresh()
        svc = service(master, "svc")
        report(master, svc, master.spawn(svc), STATUS_BUSY)     # holds a lease
        lease = ipc.Lease(ipc.endpoint("private", "svc"))
        try:
            serve_events(master, lambda: len(master.spawned) == 2)
            assert master.spawned == ["svc", "svc"]
        finally:
            lease.close()

    def test_a_reload_keeps_the_socket_and_the_clients_waiting_on_it(self, master):
        master.refresh()
        old = service(master, "svc")
        socket_object = old.listeners[0]
        lease = ipc.Lease(ipc.endpoint("private", "svc"))
        try:
            master.reload()
            new = service(master, "svc")
            assert new is not old and new.listeners == [socket_object]
            assert os.path.exists("private/svc")
            master.refresh()
            serve_events(master, lambda: master.spawned)
            assert master.spawned == ["svc"]
            conn, _ = new.listeners[0].accept()      # the client is still there
            conn.close()
        finally:
            lease.close()

    def test_a_service_the_reload_drops_loses_its_socket(self, master):
        with open(os.path.join(master.config_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.replace("svc       unix - - n -  2 /bin/true\n", ""))
        master.reload()
        assert not any(s.spec.service == "svc" for s in master.services.values())
        assert not os.path.exists("private/svc") and os.path.exists("public/tick")


class TestTimers:
    def test_an_idle_master_sleeps_until_its_first_wakeup(self, master):
        master.refresh()
        tick = service(master, "tick")
        assert master.next_timer == tick.next_wakeup
        timeout = master.poll_timeout()
        assert timeout is not None and timeout <= 1 + max(0, (tick.next_wakeup - time.monotonic())
                                                          * 1000)

    def test_without_timers_the_master_sleeps_without_timeout(self, master):
        service(master, "tick").next_wakeup = None
        master.refresh()
        assert master.poll_timeout() is None

    def test_a_child_that_served_marks_its_service_used(self, master):
        tick = service(master, "tick")
        child = master.spawn(tick)
        assert not tick.used
        report(master, tick, child, STATUS_USED)
        assert tick.used and child.uses == 1

    def test_a_due_wakeup_is_a_trigger_on_the_services_socket(self, master, monkeypatch):
        master.refresh()
        tick = service(master, "tick")
        tick.used = True                             # a client asked it for something
        now = tick.next_wakeup
        monkeypatch.setattr(master_module.time, "monotonic", lambda: now)
        master.run_timers()
        assert queued_trigger(tick) == {"op": "wakeup"}     # waiting for a worker
        assert not tick.used
        assert master.stale
        master.refresh()
        assert master.next_timer == now + 60

    def test_a_wakeup_if_used_is_skipped_after_no_use(self, master, monkeypatch):
        master.refresh()
        tick = service(master, "tick")
        now = tick.next_wakeup
        monkeypatch.setattr(master_module.time, "monotonic", lambda: now)
        master.run_timers()
        with pytest.raises(BlockingIOError):
            tick.listeners[0].accept()               # nothing was sent (triggers are synchronous)
        master.refresh()
        assert master.next_timer == now + 60         # the next one is still set


class TestExits:
    """A child that dies before it ever served is a bad start-up and
    throttles its service; one that served is simply replaced."""

    def died(self, master, monkeypatch, child, signum: int) -> None:
        """died - CHILD was killed by SIGNUM and the master reaps it."""
        ended = [(child.pid, signum), (0, 0)]
        monkeypatch.setattr(master_module.os, "waitpid", lambda pid, flags: ended.pop(0))
        master.reap()
        assert child.pid not in master.children

    def test_a_child_killed_before_serving_throttles_its_service(self, master, monkeypatch):
        svc = service(master, "svc")
        self.died(master, monkeypatch, master.spawn(svc), signal.SIGKILL)
        assert svc.throttled(time.monotonic())

    def test_a_child_killed_right_after_serving_is_no_bad_start_up(self, master, monkeypatch):
        svc = service(master, "svc")
        child = master.spawn(svc)
        # It reported its use, and died before the master read the report.
        os.write(svc.status_w, struct.pack(STATUS_FORMAT, child.pid, STATUS_USED))
        self.died(master, monkeypatch, child, signal.SIGKILL)
        assert not svc.throttled(time.monotonic())
        assert svc.used
