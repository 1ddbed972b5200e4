"""What every service program shares: the runtime between master and service.

The master starts a service as `daemon_directory/COMMAND -n NAME -t TYPE
[-c] [-u] [-v] [-o name=value ...] [args ...]` with these descriptors:

  3  the listening socket: an inet service's, or a unix service's stream
     socket at private/NAME or public/NAME, on which clients take leases
  4  the status pipe: the child writes STATUS_AVAIL or
     STATUS_BUSY with its pid, so the master knows when to start another,
     and STATUS_USED once it has served, so that its death is a crash and
     not a bad start-up (no throttle)
  5  the master-alive pipe: end of file means the master has gone, or has
     reloaded and wants this generation to finish and exit

A service module builds a `Service` from its argv and enters the jail with
its one pre-jail step, `prepared = svc.enter_jail(pre_jail)`:

  1. pre_jail(svc) runs (Postfix's pre-init): it imports and opens
     everything the service will need while the whole system is visible
     (tables, certificates, caches, sockets, modules loaded on first use)
     and returns what the serving code needs;
  2. as root, every lookup table type is imported and every table main.cf
     names is opened, for the tables pre_jail did not open itself;
  3. as root, the process chroots to queue_directory (master.cf chroot
     column) and becomes mail_owner (unpriv column).

Nothing the service does after enter_jail may import a module or open a
file outside the spool. Not root (the in-tree instance), pre_jail still
runs and nothing else changes; the master says so once in the log.

Then the service runs one of the loops here: `serve_requests()` for
request services (cleanup, local, smtp …: leases accepted on descriptor 3,
requests over zeromq, see pymaster.util.ipc), `serve_connections()` for
inet and stream services, or its own loop built from `ipc.Server` and
`master_gone()` (qmgr, smtpd).

Interface:
    Service.from_argv(program, argv) -> Service
    service_words(argv) -> list        the master.cf words after the master's options
    svc.cfg, svc.name, svc.type, svc.args, svc.chroot, svc.unpriv
    svc.enter_jail(pre_jail) -> what pre_jail(svc) returned
    svc.serve_requests(handler, many)  handler(header, payload) -> (header, payload)
    svc.after_reply(fn)            FN() runs once the current reply has gone out
    svc.report(avail: bool)        for inet services; svc.report_used() once it served
    svc.master_gone() -> bool
    svc.listen_socket() / listen_sockets()   the inet listener(s) from the master
    svc.serve_connections(handler) handler(conn, addr): one connection at a time
    svc.busy / svc.stopping        SIGTERM while busy: finish, then exit
    main(program, run)             the body of every libexec/ launcher
    lookup_account(user), drop_privileges(user), group_id(name)
    set_title(title)               the process title (setproctitle, optional)

Descriptors beyond 3: when an inet service listens on more than one address,
the master passes the extra sockets at descriptors 6, 7, ... and lists all of
them in $PYMASTER_LISTEN_FDS ("3,6,7"); descriptor 3 is always the first.

SIGTERM: an idle process exits at once; a busy one (svc.busy) finishes the
current request or connection, then exits.
"""

from __future__ import annotations

import grp
import os
import pwd
import select
import signal
import socket
import stat
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from pymaster.mail import queue
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.mail.maps import configured_table_types, open_configured_tables
from pymaster.util import ipc, log, tables

# What a service's pre_jail step prepares for the work after the jail.
Prepared = TypeVar("Prepared")

LISTEN_FD = 3
STATUS_FD = 4
ALIVE_FD = 5
STATUS_FORMAT = "=ic"           # pid, b"A" (available) or b"B" (busy)
STATUS_SIZE = struct.calcsize(STATUS_FORMAT)
STATUS_AVAIL = b"A"
STATUS_BUSY = b"B"
STATUS_USED = b"U"
ENV_NOTICE_UNPRIV = "PYMASTER_UNPRIV_NOTICE"
ENV_LISTEN_FDS = "PYMASTER_LISTEN_FDS"


# Once the master has died, the work in hand gets this long before the process
# exits: a request waiting on a broker that died with the master would otherwise
# wait out its timeout (pickup's cleanup call: 100 s) and keep the process alive.
# Longer than smtpd's own grace for open sessions, which it ends more gently.
ORPHAN_GRACE = 15.0


def exit_when_orphaned() -> None:
    """exit_when_orphaned - a watcher thread: end this process ORPHAN_GRACE
    seconds after the master died (not after a reload, which also closes the
    alive pipe but stays our parent). Without a master's pipe (started by
    hand, a test), nothing is watched."""
    try:
        if not stat.S_ISFIFO(os.fstat(ALIVE_FD).st_mode):
            return
    except OSError:
        return
    parent = os.getppid()

    def watch() -> None:
        try:
            select.select([ALIVE_FD], [], [])
        except (OSError, ValueError):
            return
        while os.getppid() == parent:
            time.sleep(1.0)         # reloaded: the master may still die later
        time.sleep(ORPHAN_GRACE)
        os._exit(0)
    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class ServiceStop(BaseException):
    """Raised by the SIGTERM handler in an idle process: unwind and exit."""

Handler = Callable[[dict, list], tuple[dict, list]]


def parse_service_argv(argv: list[str]) -> tuple[dict, list[str]]:
    """parse_service_argv - the master's options, then the service's own args."""
    opts: dict = {"name": None, "type": "unix", "chroot": False, "unpriv": False,
                  "verbose": 0, "overrides": {}, "config_dir": None}
    args: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-n" and i + 1 < len(argv):
            opts["name"] = argv[i + 1]
            i += 2
        elif a == "-t" and i + 1 < len(argv):
            opts["type"] = argv[i + 1]
            i += 2
        elif a == "-o" and i + 1 < len(argv):
            name, _, value = argv[i + 1].partition("=")
            opts["overrides"][name.strip()] = value.strip()
            i += 2
        elif a.startswith("-o") and len(a) > 2:
            name, _, value = a[2:].partition("=")
            opts["overrides"][name.strip()] = value.strip()
            i += 1
        elif a == "-C" and i + 1 < len(argv):
            opts["config_dir"] = argv[i + 1]
            i += 2
        elif a == "-c":
            opts["chroot"] = True
            i += 1
        elif a == "-u":
            opts["unpriv"] = True
            i += 1
        elif a == "-v":
            opts["verbose"] += 1
            i += 1
        elif a in ("-d", "-D", "-S", "-z", "-l"):
            i += 1
        elif a == "--":
            args.extend(argv[i + 1:])
            break
        else:
            args.append(a)
            i += 1
    return opts, args


# The master's own options, which come before a service's master.cf words.
MASTER_OPTIONS_WITH_VALUE = ("-n", "-t", "-o", "-C")
MASTER_FLAGS = ("-c", "-u", "-v", "-d", "-D", "-S", "-z", "-l")


def service_words(argv: list[str]) -> list[str]:
    """service_words - ARGV without the master's options, verbatim.

    For pipe and spawn, whose command's own words after argv= (`-v`, `--`)
    must reach the command untouched: parse_service_argv reads on, so it
    cannot be used for them."""
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in MASTER_OPTIONS_WITH_VALUE:
            i += 2
        elif word in MASTER_FLAGS or (word.startswith("-o") and len(word) > 2):
            i += 1
        else:
            break
    return list(argv[i:])


@dataclass
class Service:
    program: str
    name: str
    type: str
    cfg: Config
    args: list[str] = field(default_factory=list)
    chroot: bool = False
    unpriv: bool = False
    uses: int = 0
    busy: bool = False
    stopping: bool = False
    used_reported: bool = False
    reported_available: bool = True
    _after: list = field(default_factory=list)

    @classmethod
    def from_argv(cls, program: str, argv: list[str] | None = None) -> "Service":
        """from_argv - parse the master's arguments, read main.cf, set up logging."""
        opts, args = parse_service_argv(sys.argv[1:] if argv is None else argv)
        # Postfix's read-only service_name: master.cf's `-o syslog_name=postfix/$service_name`.
        opts["overrides"].setdefault("service_name", opts["name"] or program)
        try:
            cfg = load_config(opts["config_dir"], opts["overrides"])
        except ConfigError as e:
            log.setup(program)
            log.fatal(str(e))
        log.setup(program, cfg, verbose=opts["verbose"])
        set_title(f"pymaster/{program} -n {opts['name'] or program} -t {opts['type']}")
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        svc = cls(program, opts["name"] or program, opts["type"], cfg, args,
                  opts["chroot"], opts["unpriv"])
        exit_when_orphaned()
        signal.signal(signal.SIGTERM, svc._on_sigterm)
        try:
            os.chdir(cfg.get("queue_directory"))
        except OSError as e:
            log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}")
        # Every service agrees on hash_queue_names / hash_queue_depth.
        queue.configure(cfg)
        return svc

    def _on_sigterm(self, signum: int, frame) -> None:
        """_on_sigterm - finish what is in hand; an idle process unwinds now."""
        self.stopping = True
        if not self.busy:
            raise ServiceStop()

    # -- privileges --------------------------------------------------------
    def enter_jail(self, pre_jail: Callable[[Service], Prepared]) -> Prepared:
        """enter_jail - pre_jail(self), open every table, chroot to the queue
        directory and become mail_owner; what pre_jail returned.

        Not root: pre_jail runs, nothing else changes, and the master said so
        once in the log."""
        prepared = pre_jail(self)
        if os.geteuid() != 0:
            return prepared
        # Lookup table types are imported on first use: import them all while
        # the interpreter's library is still reachable (the database types
        # only when a parameter names them, as their drivers are).
        tables.preload(configured_table_types(self.cfg))
        open_configured_tables(self.cfg)
        queue_dir = self.cfg.get("queue_directory")
        # The account must be looked up before the jail hides /etc/passwd.
        account = lookup_account(self.cfg.get("mail_owner")) if self.unpriv else None
        if self.chroot:
            try:
                os.chroot(queue_dir)
            except OSError as e:
                log.fatal(f"chroot({queue_dir}): {e.strerror}")
            # Endpoints and spool paths are relative, so they still resolve.
            os.chdir("/")
        if account is not None:
            drop_privileges(account)
        return prepared

    # -- master status -----------------------------------------------------
    def master_gone(self) -> bool:
        """master_gone - end of file on the alive pipe: stop taking work."""
        try:
            r, _, _ = select.select([ALIVE_FD], [], [], 0)
        except (OSError, ValueError):
            return True
        if not r:
            return False
        try:
            return os.read(ALIVE_FD, 1) == b""
        except OSError:
            return True

    def stop_on_master_exit(self, loop, stop: Callable[[], None]) -> None:
        """stop_on_master_exit - for an asyncio program (smtpd, postscreen):
        call STOP when the master is gone (end of file on the alive pipe) or
        when SIGTERM comes (postfix stop, a reload)."""
        def master_event() -> None:
            if self.master_gone():
                loop.remove_reader(ALIVE_FD)
                stop()
        try:
            loop.add_reader(ALIVE_FD, master_event)
        except (OSError, ValueError):
            pass    # started by hand, without a master
        loop.add_signal_handler(signal.SIGTERM, stop)

    def report(self, avail: bool) -> None:
        """report - tell the master this process can (or cannot) take more."""
        self._status(STATUS_AVAIL if avail else STATUS_BUSY)

    def report_used(self) -> None:
        """report_used - tell the master this process has served (a process
        that serves many at once may never be busy)."""
        self._status(STATUS_USED)

    def _status(self, flag: bytes) -> None:
        try:
            os.write(STATUS_FD, struct.pack(STATUS_FORMAT, os.getpid(), flag))
        except OSError:
            pass

    # -- inet services -----------------------------------------------------
    def listen_sockets(self) -> list[socket.socket]:
        """listen_sockets - every listening socket the master handed over."""
        names = os.environ.get(ENV_LISTEN_FDS) or str(LISTEN_FD)
        socks = []
        for fd in (int(x) for x in names.split(",") if x.strip()):
            try:
                socks.append(socket.socket(fileno=fd))
            except OSError as e:
                log.fatal(f"listening socket on descriptor {fd}: {e.strerror}")
        return socks

    def listen_socket(self) -> socket.socket:
        """listen_socket - the (first) listening socket, descriptor 3."""
        return self.listen_sockets()[0]

    def serve_connections(self, handler: Callable[[socket.socket, tuple], None]) -> None:
        """serve_connections - accept and serve one connection at a time.

        Reports busy while serving and available while waiting, so the master
        starts another process when every one is busy. Ends after max_use
        connections, max_idle seconds without one, or when the master goes."""
        listeners = self.listen_sockets()
        by_fd = {s.fileno(): s for s in listeners}
        poller = select.poll()
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        poller.register(ALIVE_FD, select.POLLIN)
        max_use = self.cfg.int("max_use")
        max_idle = self.cfg.time("max_idle")
        try:
            self.report(True)
            idle_since = time.monotonic()
            while not self.stopping:
                left = max_idle - (time.monotonic() - idle_since)
                if left <= 0:
                    break
                ready = dict(poller.poll(int(left * 1000) + 1))
                if ALIVE_FD in ready and self.master_gone():
                    break
                conn = self._accept(by_fd, ready)
                if conn is None:
                    continue
                self._serve_one(handler, *conn)
                idle_since = time.monotonic()
                if max_use and self.uses >= max_use:
                    break
                self.report(True)
        except ServiceStop:
            pass

    @staticmethod
    def _accept(by_fd: dict, ready: dict):
        for fd in ready:
            sock = by_fd.get(fd)
            if sock is None:
                continue
            try:
                return sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue    # another process took it
        return None

    def _serve_one(self, handler, conn: socket.socket, addr) -> None:
        self.busy = True
        self.report(False)
        try:
            conn.setblocking(True)
            handler(conn, addr)
        except Exception as e:
            log.warning(f"{self.name}: connection failed: {type(e).__name__}: {e}")
        finally:
            self.busy = False
            self.uses += 1
            try:
                conn.close()
            except OSError:
                pass

    # -- request services ----------------------------------------------------
    def after_reply(self, fn: Callable[[], None]) -> None:
        """after_reply - run FN once the reply in hand has been sent.

        For work the client need not wait for (cleanup's qmgr wakeup): the
        time between cleanup's commit and the client's 250 is the window in
        which a crash makes the client retry a message that will be
        delivered anyway, so it holds nothing that can wait."""
        self._after.append(fn)

    def _run_after(self) -> None:
        while self._after:
            fn = self._after.pop(0)
            try:
                fn()
            except Exception as e:
                log.warning(f"{self.name}: after reply: {type(e).__name__}: {e}")

    def serve_requests(self, handler: Handler, many: bool = False) -> None:
        """serve_requests - answer the requests of the leases taken on
        descriptor 3 until max_use, max_idle, reload or stop.

        MANY: leases of many clients at once (Postfix's multi-threaded
        servers: anvil, proxymap, trivial-rewrite, verify, pickup); else one
        at a time, and the master hears busy while one is held."""
        max_use = self.cfg.int("max_use")
        max_idle = self.cfg.time("max_idle")
        server = ipc.Server(self.listen_socket(), many, max_use)
        poller = ipc.Poller()
        poller.register(server)
        poller.register(ALIVE_FD)
        self.report(True)
        try:
            idle_since = time.monotonic()
            while not server.finished(time.monotonic()):
                due = server.retire_idle(time.monotonic())
                wait = self._request_wait(server, idle_since, max_idle, due)
                ready = poller.poll(wait)
                if ALIVE_FD in ready and self.master_gone():
                    poller.unregister(ALIVE_FD)     # end of file stays readable
                    server.leave()
                if server in ready:
                    self._serve_events(server, handler)
                now = time.monotonic()
                if server.active:
                    idle_since = now
                elif now - idle_since >= max_idle:
                    server.leave()
                if (max_use and server.uses >= max_use) or self.stopping:
                    server.leave()
                self._report_availability(server)
        except ServiceStop:
            pass
        finally:
            server.close()

    @staticmethod
    def _request_wait(server: ipc.Server, idle_since: float, max_idle: float,
                      due: float | None) -> int:
        """_request_wait - milliseconds the request loop may sleep."""
        now = time.monotonic()
        until = idle_since + max_idle
        if due is not None:
            until = min(until, due)
        if server.leaving:
            until = min(until, now + ipc.LEAVE_GRACE / 5)
        return max(0, int((until - now) * 1000) + 1)

    def _serve_events(self, server: ipc.Server, handler: Handler) -> None:
        """_serve_events - serve every request and one-way request that waits."""
        events = server.events()
        # A lease just taken makes us busy before its first request runs: a
        # request may take long (smtp with a slow peer), and the next client
        # must meanwhile get a worker of its own from the master.
        self._report_availability(server)
        for token, header, payload in events:
            if not self.used_reported:
                # Before the reply: a client may kill us the moment it has
                # one, and a death the master sees before any use is
                # throttled as a bad start-up.
                self.used_reported = True
                self.report_used()
            self.busy = True
            try:
                reply, reply_payload = self._call(handler, header, payload)
                if token is not None:
                    server.reply(token, reply, reply_payload)
                self.uses = server.uses
                self._run_after()
            finally:
                self._after.clear()
                self.busy = False

    def _report_availability(self, server: ipc.Server) -> None:
        """_report_availability - tell the master when SERVER starts or stops
        taking leases."""
        if server.available() != self.reported_available:
            self.reported_available = server.available()
            self.report(self.reported_available)

    def _call(self, handler: Handler, header: dict, payload: list) -> tuple[dict, list]:
        try:
            return handler(header, payload)
        except ServiceStop:
            raise
        except Exception as e:  # the request fails; the process lives on
            log.warning(f"{self.name}: request failed: {type(e).__name__}: {e}")
            return {"status": "error", "reason": str(e)}, []


def lookup_account(user: str) -> pwd.struct_passwd:
    """lookup_account - the passwd entry of USER; fatal when there is none."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        log.fatal(f"unknown mail_owner user: {user}")


def drop_privileges(user: "str | pwd.struct_passwd") -> None:
    """drop_privileges - setgroups, setgid, setuid to USER, irrevocably."""
    pw = lookup_account(user) if isinstance(user, str) else user
    os.setgroups([])
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        log.fatal("unable to drop privileges")


def set_title(title: str) -> None:
    """set_title - the process title ps shows, when setproctitle is installed.

    The one accessor of an optional dependency: without it the title is
    the interpreter's command line, and nothing else changes."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def main(program: str, run: Callable[[Service], None]) -> None:
    """main - the body of every libexec/ launcher."""
    svc = Service.from_argv(program)
    try:
        run(svc)
    except (KeyboardInterrupt, ServiceStop):
        pass
    except SystemExit:
        raise
    except tables.TableError as e:      # a bad table spec: Postfix's words, no class name
        log.fatal(str(e))
    except Exception as e:
        log.fatal(f"{type(e).__name__}: {e}")
