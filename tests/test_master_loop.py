"""The master's loop state (pymaster.master.daemon): what it keeps between turns.

The poll set, the next timer and the services whose brokers hold waiting
requests are rebuilt only when something changes them (a child starts,
reports or ends, a timer fires, a throttle begins, a reload, the stop), so
a turn that only routes messages does no work per service. These tests
drive a Master in the test process without its signal handlers and
without starting programs: `spawn` is replaced by a recorder.
"""

from __future__ import annotations

import os
import struct
import time

import pytest
import zmq

from pymaster.util import ipc, log
from pymaster.mail import pidfile
from pymaster.master import daemon as master_module
from pymaster.master.daemon import Child, Master, load_specs
from pymaster.master.service import STATUS_AVAIL, STATUS_BUSY, STATUS_FORMAT

MASTER_CF = """\
127.0.0.1:0 inet n - n - 2 /bin/true
svc       unix - - n -  2 /bin/true
tick      unix n - n 60? 1 /bin/true
"""


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
        child = Child(100000 + len(m.spawned), svc, svc.generation, svc.broker)
        svc.children[child.pid] = child
        m.children[child.pid] = child
        if svc.broker is not None:
            svc.starting.add(child.pid)
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


def serve_frontend(m: Master, svc, until) -> None:
    """serve_frontend - run the broker's frontend action as the loop would."""
    deadline = time.monotonic() + 20
    while not until():
        assert time.monotonic() < deadline, "no request reached the broker"
        if svc.broker.frontend.poll(20):
            m.registered[svc.broker.frontend]()


class TestPollSet:
    def test_a_refresh_watches_signals_brokers_status_pipes_and_idle_listeners(self, master):
        master.refresh()
        svc, smtp = service(master, "svc"), service(master, "127.0.0.1:0")
        assert master.sig_r in master.registered
        assert svc.broker.frontend in master.registered and svc.broker.backend in master.registered
        assert smtp.status_r in master.registered
        assert readable_listeners(master, smtp)      # no child yet: a connection starts one
        assert not master.stale

    def test_nothing_is_rebuilt_while_nothing_changes(self, master):
        master.refresh()
        registered = master.registered
        master.spawn_wanted()
        master.run_timers()
        assert not master.stale and master.registered is registered

    def test_a_child_that_reports_busy_and_available_moves_its_listeners(self, master):
        smtp = service(master, "127.0.0.1:0")
        master.refresh()
        child = master.spawn(smtp)
        master.refresh()
        assert not readable_listeners(master, smtp)  # the new child takes connections

        def report(flag: int) -> None:
            os.write(smtp.status_w, struct.pack(STATUS_FORMAT, child.pid, flag))
            master.read_status(smtp)
        report(STATUS_BUSY)                          # busy: a connection wants a child
        assert master.stale
        master.refresh()
        assert readable_listeners(master, smtp)
        report(STATUS_AVAIL)
        assert master.stale
        master.refresh()
        assert not readable_listeners(master, smtp)
        report(STATUS_AVAIL)                         # no change: no rebuild
        assert not master.stale

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

    def test_a_due_wakeup_is_sent_and_the_next_one_is_set(self, master, monkeypatch):
        master.refresh()
        tick = service(master, "tick")
        tick.broker.used = True                      # a client asked it for something
        now = tick.next_wakeup
        monkeypatch.setattr(master_module.time, "monotonic", lambda: now)
        master.run_timers()
        assert tick.broker.injected_pending()        # no worker yet: it waits
        assert master.stale
        master.refresh()
        assert master.next_timer == now + 60
        assert tick in master.backlog


class TestBacklog:
    def test_a_request_without_a_worker_starts_one_and_only_one(self, master):
        master.refresh()
        svc = service(master, "svc")
        client = ipc.AsyncClient(ipc.endpoint("private", "svc"))
        try:
            client.send({"op": "x"})
            client.send({"op": "y"})
            serve_frontend(master, svc, lambda: len(svc.broker.pending) == 2)
            assert master.backlog == {svc}
            master.spawn_wanted()
            assert master.spawned == ["svc"]
            master.spawn_wanted()                    # one is starting: no second one
            assert master.spawned == ["svc"]
        finally:
            client.close()

    def test_a_service_without_waiting_requests_leaves_the_backlog(self, master):
        master.refresh()
        svc = service(master, "svc")
        master.backlog.add(svc)
        master.spawn_wanted()
        assert master.backlog == set() and master.spawned == []

    def test_a_started_worker_no_longer_counts_as_starting(self, master, monkeypatch):
        svc = service(master, "svc")
        child = master.spawn(svc)
        assert svc.starting_count() == 1
        monkeypatch.setattr(svc.broker, "seen", {str(child.pid).encode()})
        assert svc.starting_count() == 0 and svc.starting == set()

    def test_a_reload_moves_waiting_requests_to_the_new_service(self, master):
        master.refresh()
        old = service(master, "svc")
        client = ipc.AsyncClient(ipc.endpoint("private", "svc"))
        try:
            client.send({"op": "x"})
            serve_frontend(master, old, lambda: old.broker.pending)
            master.reload()
            assert master.stale
            master.refresh()
            new = service(master, "svc")
            assert new is not old and master.backlog == {new}
            master.spawn_wanted()
            assert master.spawned == ["svc"]
        finally:
            client.close()


def test_the_poller_holds_what_registered_names(master):
    """The zmq poller and `registered` agree after every rebuild."""
    master.refresh()
    master.throttle(service(master, "127.0.0.1:0"))
    master.refresh()
    polled = {item for item, _ in master.poller.sockets}
    assert polled == set(master.registered)
    assert all(flags == zmq.POLLIN for _, flags in master.poller.sockets)
