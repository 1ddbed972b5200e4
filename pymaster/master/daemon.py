"""The master daemon: owns every service endpoint, starts and supervises services.

The master reads main.cf and master.cf, creates each inet listener and
listens on each internal service's unix socket -- all but those
master_service_disable turns off, then sleeps in one poll over the
listeners, the status pipes and a self-pipe for signals, with a timeout only
for its next timer. It never carries a message: clients and workers talk
directly (pymaster.util.ipc). It starts service processes on demand, up to
each service's process limit:

  inet      a listener is readable and no child of the service is available
            (children report available/busy on the status pipe, descriptor 4)
  unix/fifo the same, on private/NAME or public/NAME: a client waits for a
            lease (pymaster.util.ipc) and no worker is available; spawn,
            scache and tlsproxy serve the accepted connection itself
  unix-dgram       a datagram waits on its socket and no child runs (postlogd)
  pass      the same, on private/NAME: a client (postscreen) connects and
            passes an accepted SMTP connection (pymaster.master.handoff)

A child is `daemon_directory/COMMAND -n NAME -t TYPE [-c] [-u] [-o n=v ...]
ARGS`, with descriptors 3 (listener), 4 (status pipe) and 5 (alive pipe) as
pymaster.master.service describes. A child that exits abnormally is logged; one that
does so before ever serving throttles its service for service_throttle_time.
Wakeup triggers (`{"op": "wakeup"}`) go to services with a wakeup time, the
first right at start.

Signals: SIGHUP re-reads both files and replaces every generation of children
(the old one sees end of file on its alive pipe, finishes what it has and
exits; listeners that did not change stay open, so no connection is cut);
SIGTERM stops (children finish or are ended); SIGINT aborts at once.

The pid file queue_directory/pid/master.pid carries an fcntl lock for as long
as the master lives; `postfix status` and a second `postfix start` test it.

Interface:
    main(argv)                  `python -m pymaster.master.daemon [-c DIR] [-v]`
    Master(config_dir).run(ready_fd=None)
"""

from __future__ import annotations

import fcntl
import glob
import os
import pwd
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from functools import partial

from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.mail.pidfile import PID_FILE, lock_pid_file, write_pid_file
from pymaster.master.mastercf import SERVICE_TYPES, MasterEntry, load_master_cf
from pymaster.master.service import (
    ENV_LISTEN_FDS,
    STATUS_AVAIL,
    STATUS_FORMAT,
    STATUS_SIZE,
    STATUS_USED,
    set_title,
)
from pymaster.util import heap, ipc, log

DGRAM_SOCKET_MODE = 0o666  # public/postlog: whoever may enter public/ may log
STREAM_SOCKET_MODE = 0o666  # spawn sockets: private/ or public/ decides who connects
STOP_GRACE = 5.0          # seconds busy children get to finish on `postfix stop`
LISTEN_BACKLOG = 100
# Clients wait in a unix socket's queue for a worker to accept their lease:
# a burst of smtpd sessions, each wanting cleanup while a worker starts,
# must wait there rather than be refused (capped by net.core.somaxconn).
LEASE_BACKLOG = 1024
MIN_HIGH_FD = 64          # where descriptors wait before they become 3, 4, 5
NEVER = float("inf")
ENV_KEEP = ("PATH", "PYTHONPATH", "VIRTUAL_ENV")


# ---------------------------------------------------------------------------
# What one master.cf line asks for.

def load_specs(cfg: Config) -> list[MasterEntry]:
    """load_specs - the services of master.cf in CFG's config directory that
    master_service_disable does not turn off."""
    disable = cfg.list("master_service_disable")
    return [spec for spec in load_master_cf(cfg.config_dir, cfg)
            if not service_disabled(spec, disable)]


def service_disabled(spec: MasterEntry, patterns: list[str]) -> bool:
    """service_disabled - whether master_service_disable turns SPEC off.

    postconf(5): a list of service types (`inet`) or `name/type` pairs
    (`smtp/inet`; `smtp.inet`, the Postfix 2.6-2.10 spelling, is taken too);
    `!pattern` excludes; the first match decides. No wildcards, files or
    tables, on purpose."""
    for pattern in patterns:
        negated = pattern.startswith("!")
        name, type_ = _service_pattern(pattern[1:] if negated else pattern)
        if type_ == spec.type.lower() and name in (None, spec.service.lower()):
            return not negated
    return False


def _service_pattern(pattern: str) -> tuple[str | None, str]:
    """_service_pattern - (name or None, type) of one master_service_disable entry."""
    pattern = pattern.lower()
    if pattern in SERVICE_TYPES:
        return None, pattern
    for sep in ("/", "."):
        name, found, type_ = pattern.rpartition(sep)
        if found and type_ in SERVICE_TYPES:
            return name, type_
    return None, ""     # matches nothing


# ---------------------------------------------------------------------------
# Listening sockets for inet services.

def listen_addresses(service: str, cfg: Config) -> list[tuple]:
    """listen_addresses - (family, sockaddr) pairs for an inet service name.

    `25`, `smtp`, `127.0.0.1:2525`, `[::1]:25`, `host:port`; a bare port
    listens on inet_interfaces under inet_protocols."""
    host, port = _split_host_port(service)
    port_no = _port_number(port)
    families = _families(cfg)
    hosts = [host] if host is not None else cfg.list("inet_interfaces")
    out: list[tuple] = []
    for h in hosts:
        for item in _resolve_interface(h, port_no, families):
            if item not in out:
                out.append(item)
    if not out:
        raise ConfigError(f"{service}: no usable address to listen on")
    return out


def _split_host_port(service: str) -> tuple[str | None, str]:
    if service.startswith("["):
        host, _, rest = service[1:].partition("]")
        return host, rest.lstrip(":")
    if ":" in service:
        host, _, port = service.rpartition(":")
        return host, port
    return None, service


def _port_number(port: str) -> int:
    if port.isdigit():
        return int(port)
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise ConfigError(f"unknown service: {port}/tcp") from None


def _families(cfg: Config) -> list[int]:
    protocols = [p.lower() for p in cfg.list("inet_protocols")] or ["all"]
    families: list[int] = []
    if "all" in protocols or "ipv4" in protocols:
        families.append(socket.AF_INET)
    if ("all" in protocols or "ipv6" in protocols) and _ipv6_usable():
        families.append(socket.AF_INET6)
    return families


def _ipv6_usable() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _resolve_interface(host: str, port: int, families: list[int]) -> list[tuple]:
    h = host.lower()
    if h == "all":
        return [(f, ("0.0.0.0" if f == socket.AF_INET else "::", port)) for f in families]
    if h == "loopback-only":
        return [(f, ("127.0.0.1" if f == socket.AF_INET else "::1", port)) for f in families]
    out = []
    for fam in families:
        try:
            infos = socket.getaddrinfo(host.strip("[]"), port, fam, socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for info in infos:
            out.append((fam, info[4][:2]))
    if not out:
        raise ConfigError(f"host or domain name not found: {host}")
    return out


def open_listener(family: int, address: tuple) -> socket.socket:
    """open_listener - a non-blocking listening TCP socket (SO_REUSEADDR)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # A wildcard IPv6 socket must not take the IPv4 port we also bind.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise ConfigError(f"bind {_show(address)}: {e.strerror}") from None
    sock.listen(LISTEN_BACKLOG)
    # Shared with the children: nobody may block in accept() on it.
    sock.setblocking(False)
    return sock


def open_dgram_socket(path: str) -> socket.socket:
    """open_dgram_socket - a unix-dgram service's socket at PATH, handed to
    its child as descriptor 3 like an inet listener (postlogd reads it)."""
    return _bind_unix(path, socket.SOCK_DGRAM, DGRAM_SOCKET_MODE)


def open_stream_socket(path: str) -> socket.socket:
    """open_stream_socket - a unix, fifo or pass service's listening unix
    stream socket at PATH, handed to its children as descriptor 3 like an
    inet listener: clients take leases there (pymaster.util.ipc), or hand
    over connections."""
    sock = _bind_unix(path, socket.SOCK_STREAM, STREAM_SOCKET_MODE)
    sock.listen(LEASE_BACKLOG)
    sock.setblocking(False)     # shared with the children, as an inet listener
    return sock


def _bind_unix(path: str, kind: int, mode: int) -> socket.socket:
    """_bind_unix - a unix-domain socket of KIND bound at PATH with MODE,
    replacing the one an earlier master left there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ConfigError(f"unlink {path}: {e.strerror}") from None
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        sock.bind(path)
        os.chmod(path, mode)
    except OSError as e:
        sock.close()
        raise ConfigError(f"bind {path}: {e.strerror}") from None
    return sock


def remove_worker_endpoints(svc: "MasterService", pid: int) -> None:
    """remove_worker_endpoints - the zeromq endpoints a dead worker of SVC
    left beside the service's socket (one that exits removes its own)."""
    pattern = f"{svc.spec.visibility}/.{pid}-*"
    for path in glob.glob(pattern):
        try:
            os.unlink(path)
        except OSError:
            pass


def _show(address: tuple) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------
# The master's picture of services and children.

@dataclass
class Child:
    pid: int
    service: "MasterService"
    generation: int
    avail: bool = True
    uses: int = 0
    retired: bool = False


@dataclass(eq=False)
class MasterService:
    """A running master.cf service: its endpoints, children and timers.
    Compared by identity (the master keeps sets of them)."""
    spec: MasterEntry
    path: str
    generation: int = 0
    listeners: list[socket.socket] = field(default_factory=list)
    addresses: list[tuple] = field(default_factory=list)
    used: bool = False              # a child served since the last wakeup
    status_r: int = -1
    status_w: int = -1
    alive_r: int = -1
    alive_w: int = -1
    children: dict[int, Child] = field(default_factory=dict)
    throttled_until: float = 0.0
    next_wakeup: float | None = None
    polled: bool = False            # its listeners are in the master's poll set

    def current(self) -> list[Child]:
        return [c for c in self.children.values() if not c.retired]

    def avail_count(self) -> int:
        return sum(1 for c in self.current() if c.avail)

    def accepting(self, now: float) -> bool:
        """accepting - a readable listener would start a child: none is
        available, the process limit allows one and no throttle holds it."""
        return bool(self.listeners) and self.avail_count() == 0 \
            and self.room() > 0 and not self.throttled(now)

    def retire_children(self) -> None:
        """retire_children - the current generation finishes and exits."""
        for child in self.children.values():
            child.retired = True

    def room(self) -> int:
        """room - how many more children the process limit allows."""
        if self.spec.maxproc <= 0:
            return 1 << 30
        return max(0, self.spec.maxproc - len(self.current()))

    def throttled(self, now: float) -> bool:
        return now < self.throttled_until

    def new_generation(self) -> None:
        """new_generation - a fresh alive pipe; the old one's children finish."""
        if self.alive_w >= 0:
            os.close(self.alive_w)
        if self.alive_r >= 0:
            os.close(self.alive_r)
        self.alive_r, self.alive_w = os.pipe()
        self.generation += 1
        self.retire_children()


class Master:
    """The master process: configuration, endpoints, children, signals."""

    def __init__(self, config_dir: str | None = None, verbose: int = 0) -> None:
        self.cfg = load_config(config_dir)
        self.config_dir = self.cfg.config_dir
        self.verbose = verbose
        self.services: dict[str, MasterService] = {}
        self.leaving: list[MasterService] = []      # removed by reload, children finishing
        self.children: dict[int, Child] = {}
        self.poller = select.poll()
        self.registered: dict = {}      # polled socket or fd -> what to do when readable
        # Kept between loop turns and rebuilt by refresh() only when `stale`:
        # a child started or ended, a listener's use changed, a reload, a
        # timer fired, a throttle began, the stop began.
        self.stale = True
        self.next_timer = NEVER         # earliest wakeup, throttle end or stop deadline
        self.stopping = False
        self.stop_deadline = 0.0
        self.sig_r = self.sig_w = -1
        self.pid_fd = -1
        self.exec_cache: dict[str, list[str]] = {}

    # -- start -------------------------------------------------------------
    def setup(self) -> None:
        """setup - pid lock, endpoints, signal handling; raises ConfigError."""
        queue_dir = self.cfg.get("queue_directory")
        try:
            os.chdir(queue_dir)
        except OSError as e:
            raise ConfigError(f"chdir {queue_dir}: {e.strerror}") from None
        self.pid_fd = lock_pid_file(".")
        if self.pid_fd < 0:
            raise ConfigError("the Postfix mail system is already running")
        specs = load_specs(self.cfg)
        for spec in specs:
            self.services[spec.key] = self.open_service(spec)
        self.install_signals()
        write_pid_file(self.pid_fd)

    def open_service(self, spec: MasterEntry, old: MasterService | None = None) -> MasterService:
        """open_service - endpoints for SPEC, reusing OLD's where unchanged."""
        svc = MasterService(spec, self.command_path(spec.command))
        if spec.type == "inet":
            addresses = listen_addresses(spec.service, self.cfg)
            if old is not None and old.spec.type == "inet" and old.addresses == addresses:
                svc.listeners, old.listeners = old.listeners, []
            else:
                svc.listeners = [open_listener(f, a) for f, a in addresses]
            svc.addresses = addresses
            svc.status_r, svc.status_w = os.pipe()
            os.set_blocking(svc.status_r, False)
        elif spec.type == "unix-dgram" or spec.stream_listener:
            # Kept over a reload: records waiting in a datagram socket stay for
            # the next child, and no client waiting on a stream socket is refused.
            same_kind = (old is not None and old.spec.type == spec.type
                         and old.spec.stream_listener == spec.stream_listener)
            if same_kind and old is not None and old.spec.visibility == spec.visibility \
                    and old.listeners:
                svc.listeners, old.listeners = old.listeners, []
            else:
                open_socket = open_stream_socket if spec.stream_listener else open_dgram_socket
                svc.listeners = [open_socket(f"{spec.visibility}/{spec.service}")]
            svc.status_r, svc.status_w = os.pipe()
            os.set_blocking(svc.status_r, False)
        else:
            raise ConfigError(f"master.cf: service {spec.service}: "
                              f"unknown service type: {spec.type}")
        svc.new_generation()
        if spec.wakeup > 0 and spec.stream_listener:
            svc.next_wakeup = time.monotonic() if not spec.wakeup_if_used \
                else time.monotonic() + spec.wakeup
        return svc

    def command_path(self, command: str) -> str:
        if os.path.isabs(command):
            return command
        return os.path.join(self.cfg.get("daemon_directory"), command)

    def install_signals(self) -> None:
        self.sig_r, self.sig_w = os.pipe()
        os.set_blocking(self.sig_r, False)
        os.set_blocking(self.sig_w, False)
        signal.set_wakeup_fd(self.sig_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: None)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def announce(self) -> None:
        version = self.cfg.get("mail_version")
        log.info(f"daemon started -- version {version}, configuration {self.config_dir}")
        if os.geteuid() != 0:
            user = pwd.getpwuid(os.geteuid()).pw_name
            log.info(f"running as non-root user {user}: services run without "
                     f"chroot and without privilege changes")

    # -- main loop ---------------------------------------------------------
    def run(self) -> int:
        """run - serve until stopped; returns the exit status."""
        self.announce()
        while True:
            if self.stale:
                self.refresh()
            if self.stopping and not self.children:
                break
            if self.stale:
                self.refresh()
            events = dict(self.poller.poll(self.poll_timeout()))
            if self.sig_r in events:
                if self.handle_signals():
                    return 0
                # A reload or a reaped service may have closed what was polled;
                # what is still readable is seen again by the next poll.
                self.run_timers()
                continue
            self.handle_events(events)
            self.run_timers()
        self.shutdown()
        return 0

    def all_services(self) -> list[MasterService]:
        return list(self.services.values()) + self.leaving

    def refresh(self) -> None:
        """refresh - rebuild the poll set and the next timer; only what
        changes them marks them `stale`."""
        self.stale = False
        now = time.monotonic()
        self.update_poller(now)
        self.next_timer = self.first_timer(now)

    def update_poller(self, now: float) -> None:
        """update_poller - watch exactly what can make us act now, and remember
        what each watched item is for, so that handle_events visits only what
        poll returned. The poller itself changes only where the set changed."""
        want: dict = {self.sig_r: None}
        for svc in self.all_services():
            if svc.status_r >= 0:
                want[svc.status_r] = partial(self.read_status, svc)
            # A readable listener matters only when we could start a child for it.
            svc.polled = not self.stopping and svc.accepting(now)
            if svc.polled:
                for sock in svc.listeners:
                    want[sock.fileno()] = partial(self.spawn_for_listener, svc)
        for item in self.registered.keys() - want.keys():
            self.poller.unregister(item)
        for item in want.keys() - self.registered.keys():
            self.poller.register(item, select.POLLIN)
        self.registered = want

    def first_timer(self, now: float) -> float:
        """first_timer - the earliest wakeup, throttle end or stop deadline."""
        due = NEVER
        for svc in self.all_services():
            if svc.next_wakeup is not None:
                due = min(due, svc.next_wakeup)
            if svc.throttled_until > now:
                due = min(due, svc.throttled_until)
        if self.stopping:
            due = min(due, self.stop_deadline)
        return due

    def poll_timeout(self) -> int | None:
        """poll_timeout - milliseconds to the next timer, or None to sleep."""
        due = self.next_timer
        if due == NEVER:
            return None
        return max(0, int((due - time.monotonic()) * 1000) + 1)

    def handle_events(self, events: dict) -> None:
        """handle_events - what update_poller registered for each readable item."""
        for item in events:
            action = self.registered.get(item)
            if action is not None:
                action()

    def read_status(self, svc: MasterService) -> None:
        """read_status - available/busy reports of the children."""
        try:
            data = os.read(svc.status_r, STATUS_SIZE * 256)
        except BlockingIOError:
            return
        for off in range(0, len(data) - STATUS_SIZE + 1, STATUS_SIZE):
            pid, flag = struct.unpack_from(STATUS_FORMAT, data, off)
            child = self.children.get(pid)
            if child is None or child.service is not svc:
                continue
            if flag == STATUS_USED:
                child.uses += 1         # served: a later death is no bad start-up
                svc.used = True
                continue
            child.avail = flag == STATUS_AVAIL
            if not child.avail:
                child.uses += 1
                svc.used = True
        if svc.polled != (not self.stopping and svc.accepting(time.monotonic())):
            self.stale = True       # its listeners join or leave the poll set

    # -- spawning ----------------------------------------------------------
    def spawn_for_listener(self, svc: MasterService) -> None:
        if svc.avail_count() == 0 and svc.room() > 0 \
                and not svc.throttled(time.monotonic()) and not self.stopping:
            self.spawn(svc)

    def spawn(self, svc: MasterService) -> Child | None:
        """spawn - start one child of SVC with descriptors 3, 4, 5 in place."""
        spec = svc.spec
        argv = self.exec_argv(svc.path) + spec.argv()
        env = self.child_env(svc)
        fd_map: dict[int, int] = {5: svc.alive_r}
        if svc.listeners:
            fd_map[3] = svc.listeners[0].fileno()
            fd_map[4] = svc.status_w
            for i, sock in enumerate(svc.listeners[1:]):
                fd_map[6 + i] = sock.fileno()
        temps = [fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, MIN_HIGH_FD) for src in fd_map.values()]
        actions = [(os.POSIX_SPAWN_DUP2, tmp, target)
                   for tmp, target in zip(temps, fd_map.keys())]
        try:
            pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
        except OSError as e:
            log.warning(f"spawn {svc.path}: {e.strerror}")
            self.throttle(svc)
            return None
        finally:
            for tmp in temps:
                os.close(tmp)
        child = Child(pid, svc, svc.generation)
        svc.children[pid] = child
        self.children[pid] = child
        self.stale = True
        if self.verbose:
            log.debug(f"spawn: {svc.path} pid {pid} for {spec.service}/{spec.type}")
        return child

    def exec_argv(self, path: str) -> list[str]:
        """exec_argv - how to run PATH: a Python script runs under our interpreter."""
        cached = self.exec_cache.get(path)
        if cached is not None:
            return cached
        argv = [path]
        try:
            with open(path, "rb") as f:
                first = f.readline(200)
            if first.startswith(b"#!") and b"python" in first:
                argv = [sys.executable, path]
        except OSError:
            pass
        self.exec_cache[path] = argv
        return argv

    def child_env(self, svc: MasterService) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.cfg.list("import_environment"):
            name, eq, value = item.partition("=")
            if eq:
                env[name] = value
            elif name in os.environ:
                env[name] = os.environ[name]
        for name in ENV_KEEP:
            if name in os.environ:
                env[name] = os.environ[name]
        env["MAIL_CONFIG"] = self.config_dir
        if len(svc.listeners) > 1:
            env[ENV_LISTEN_FDS] = ",".join(["3"] + [str(6 + i) for i in
                                                    range(len(svc.listeners) - 1)])
        return env

    def throttle(self, svc: MasterService) -> None:
        log.warning(f"{svc.path}: bad command startup -- throttling")
        svc.throttled_until = time.monotonic() + self.cfg.time("service_throttle_time")
        self.stale = True

    # -- children that ended -----------------------------------------------
    def reap(self) -> None:
        """reap - collect every child that ended; log and throttle as Postfix does.

        The heap is trimmed after children ended: what the master held for
        a burst of them is freed, and glibc keeps what was freed unless
        asked (measured when the master still carried requests: 20 MB
        before a storm of 500 connections, 29 MB after it, 21 MB with the
        trim)."""
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.children.get(pid)
            if child is None:
                continue
            svc = child.service
            if svc.status_r >= 0:
                # What it reported before dying counts: a child killed
                # right after serving may not have been read yet, and one
                # that never served is throttled as a bad start-up.
                self.read_status(svc)
            del self.children[pid]
            svc.children.pop(pid, None)
            self.stale = True
            remove_worker_endpoints(svc, pid)
            self.report_exit(child, status, child.uses > 0)
            self.wake_after_exit(svc, status)
            reaped = True
        if reaped:
            heap.release_free_memory()
        # Services removed by a reload close once their last child is gone.
        for svc in [s for s in self.leaving if not s.children]:
            self.close_service(svc)
            self.leaving.remove(svc)

    def report_exit(self, child: Child, status: int, used: bool) -> None:
        svc = child.service
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return
        if self.stopping:
            return
        if os.WIFSIGNALED(status):
            log.warning(f"process {svc.path} pid {child.pid} killed by signal "
                        f"{os.WTERMSIG(status)}")
        else:
            log.warning(f"process {svc.path} pid {child.pid} exit status "
                        f"{os.WEXITSTATUS(status)}")
        if not used and not svc.throttled(time.monotonic()):
            self.throttle(svc)

    # -- timers ------------------------------------------------------------
    def run_timers(self) -> None:
        """run_timers - wakeups, throttle ends and the stop deadline that are due."""
        now = time.monotonic()
        if now < self.next_timer:
            return
        self.stale = True           # what fired sets the next timers; a throttle
        fired = False               # that ended lets its listeners be polled again
        for svc in list(self.services.values()):
            if svc.next_wakeup is not None and svc.next_wakeup <= now:
                self.wakeup(svc)
                svc.next_wakeup = now + svc.spec.wakeup
                fired = True
        if fired and not self.stopping and not self.pid_file_intact():
            # Nobody can reach us any more (`postfix stop` reads the pid file).
            log.warning(f"{os.path.abspath(PID_FILE)} was removed: stopping")
            self.begin_stop(signal.SIGTERM)
        if self.stopping and now >= self.stop_deadline:
            self.kill_children(signal.SIGKILL)
            self.stop_deadline = float("inf")

    def wakeup(self, svc: MasterService) -> None:
        """wakeup - a trigger on the service's own socket, as any client
        sends one, unless it is wanted only after use (`?`) and none came."""
        if not svc.listeners or (svc.spec.wakeup_if_used and not svc.used):
            return
        svc.used = False
        ipc.trigger(f"{svc.spec.visibility}/{svc.spec.service}")

    def wake_after_exit(self, svc: MasterService, status: int) -> None:
        """wake_after_exit - a wakeup now for a woken service (qmgr, pickup)
        whose process died: the one-way wakeups its clients had written to
        the dead process's leases died with it, and the next client may
        be minutes away (the timer's own wakeup)."""
        exited = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if not exited and svc.next_wakeup is not None and not self.stopping \
                and self.services.get(svc.spec.key) is svc:
            svc.next_wakeup = time.monotonic()

    def pid_file_intact(self) -> bool:
        """pid_file_intact - our locked pid file is still where `postfix` looks."""
        try:
            return os.stat(PID_FILE).st_ino == os.fstat(self.pid_fd).st_ino
        except OSError:
            return False

    # -- signals -----------------------------------------------------------
    def handle_signals(self) -> bool:
        """handle_signals - act on what arrived; True means exit now (abort)."""
        try:
            data = os.read(self.sig_r, 512)
        except BlockingIOError:
            data = b""
        signums = set(data)
        if signal.SIGCHLD in signums:
            self.reap()
        if signal.SIGINT in signums:
            self.abort()
            return True
        if signal.SIGTERM in signums and not self.stopping:
            self.begin_stop(signal.SIGTERM)
        if signal.SIGHUP in signums and not self.stopping:
            self.reload()
        return False

    def begin_stop(self, signum: int) -> None:
        """begin_stop - no new work; children finish, then are ended."""
        log.info(f"terminating on signal {signum}")
        self.stopping = True
        self.stale = True
        self.stop_deadline = time.monotonic() + STOP_GRACE
        for svc in self.all_services():
            for sock in svc.listeners:
                sock.close()
            svc.listeners = []
            svc.next_wakeup = None
            svc.new_generation()
        self.kill_children(signal.SIGTERM)

    def kill_children(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def abort(self) -> None:
        log.info("terminating on signal 2")
        self.kill_children(signal.SIGKILL)
        self.reap()
        self.shutdown()

    def shutdown(self) -> None:
        """shutdown - close every endpoint; the pid lock goes with the process."""
        for svc in self.all_services():
            self.close_service(svc)
        self.services.clear()
        self.leaving.clear()

    def close_service(self, svc: MasterService) -> None:
        for sock in svc.listeners:
            sock.close()
        svc.listeners = []
        for fd in (svc.status_r, svc.status_w, svc.alive_r, svc.alive_w):
            if fd >= 0:
                os.close(fd)
        svc.status_r = svc.status_w = svc.alive_r = svc.alive_w = -1

    # -- reload ------------------------------------------------------------
    def reload(self) -> None:
        """reload - re-read main.cf and master.cf; replace every generation."""
        try:
            cfg = load_config(self.config_dir)
            self.cfg = cfg
            specs = load_specs(cfg)
        except (ConfigError, OSError) as e:
            log.warning(f"reload failed, keeping the running configuration: {e}")
            return
        log.info(f"reload -- version {cfg.get('mail_version')}, "
                 f"configuration {self.config_dir}")
        log.setup("master", cfg, verbose=self.verbose)
        self.exec_cache.clear()
        self.stale = True
        old_services = self.services
        self.services = {}
        for spec in specs:
            old = old_services.pop(spec.key, None)
            if old is not None:
                # Before its endpoints move to the new service object.
                old.retire_children()
            try:
                self.services[spec.key] = self.open_service(spec, old)
            except ConfigError as e:
                log.warning(str(e))
            if old is not None:
                self.retire_service(old)
        for old in old_services.values():
            self.retire_service(old)

    def retire_service(self, svc: MasterService) -> None:
        """retire_service - its children finish; its endpoints close after them."""
        svc.next_wakeup = None
        svc.new_generation()
        # Endpoints the new configuration did not take over close now; a
        # worker of the old generation still serves the leases it holds.
        if svc.listeners:
            for sock in svc.listeners:
                sock.close()
            svc.listeners = []
            self.remove_socket_file(svc.spec)
        if svc.children:
            self.leaving.append(svc)
        else:
            self.close_service(svc)

    def remove_socket_file(self, spec: MasterEntry) -> None:
        """remove_socket_file - the unix socket of a service the new
        configuration dropped, unless a current service is bound there."""
        if spec.type == "inet":
            return
        path = f"{spec.visibility}/{spec.service}"
        for svc in self.services.values():
            if svc.spec.type != "inet" and f"{svc.spec.visibility}/{svc.spec.service}" == path:
                return
        try:
            os.unlink(path)
        except OSError:
            pass


# ---------------------------------------------------------------------------

def detach_stdio() -> None:
    """detach_stdio - standard descriptors to /dev/null once we are up.

    `postfix start` reads our standard error until it closes: that is how it
    learns that start-up is over, and sees the reason when it failed."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def main(argv: list[str] | None = None) -> None:
    """main - `python -m pymaster.master.daemon [-c DIR] [-v] [-d]` (-d: foreground)."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_dir, verbose, foreground = None, 0, False
    while args:
        a = args.pop(0)
        if a == "-c" and args:
            config_dir = args.pop(0)
        elif a == "-v":
            verbose += 1
        elif a in ("-d", "-i", "-s"):
            foreground = True
    log.setup("master", verbose=verbose)
    try:
        master = Master(config_dir, verbose)
        log.setup("master", master.cfg, verbose=verbose)
        master.setup()
    except ConfigError as e:
        log.setup("master", stderr=True)
        log.fatal(str(e))
    except OSError as e:
        log.setup("master", stderr=True)
        log.fatal(f"{e.filename or ''}: {e.strerror}" if e.strerror else str(e))
    set_title("pymaster/master")
    if not foreground:
        detach_stdio()
    sys.exit(master.run())


if __name__ == "__main__":
    main()
