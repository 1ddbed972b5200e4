"""The smtpd process: many SMTP sessions at once on the master's listener.

The master hands over the listening socket(s) (descriptor 3, more in
$PYMASTER_LISTEN_FDS) and the status pipe. This process accepts while fewer
than smtpd_per_process_session_limit sessions are open and tells the master
"busy" at the limit and "available" below it, so the master starts another
smtpd only when this one is full. It stops accepting after max_use times
smtpd_per_process_session_limit sessions (it stands in for that many
Postfix smtpd processes; docs/architecture.md, "max_use: what a use is"),
after max_idle seconds without a session, on SIGTERM, or when the
master goes away or reloads (end of file on descriptor 5); sessions in
progress are finished first, never cut, but the listeners close at once, so
that a master started after the old one died can bind the port. When the
master has died (this process was handed to another parent) rather than
reloaded, a session gets MASTER_GONE_GRACE seconds to finish: a client
that keeps its session open would otherwise keep this process, and the
cleanup and qmgr it feeds, running without a master (issue 15 item 5).
Cutting a session loses nothing: 250 is said only for a committed file.

A process that was full (a connection storm: the master started others
beside it) exits after STORM_IDLE seconds without a session instead of
max_idle: the storm's heap (Python keeps much of it after the sessions
end) and the extra processes would otherwise hold their memory for
max_idle (100 s), and the master starts a fresh process for the next
client. A process that was never full keeps Postfix's max_idle.

As a pass service (master.cf `smtpd pass ... smtpd` behind postscreen)
descriptor 3 is the unix socket private/NAME, and each connection on it
brings one client connection that postscreen accepted
(pymaster.master.handoff), served as if it had been accepted here.

Interface:
    Server(svc, settings, checker, cleanup, checker_error="").serve()   awaitable
"""

from __future__ import annotations

import asyncio
import os
import socket

from pymaster.master import handoff
from pymaster.master.service import Service
from pymaster.util import log
from services.smtpd.check import Checker
from services.smtpd.connection import Connection
from services.smtpd.limits import Limits
from services.smtpd.peer import lookup_peer
from services.smtpd.session import Session, Settings
from services.smtpd.submit import Cleanup

HANDOFF_TIMEOUT = 10.0  # seconds a pass connection gets to deliver its client
STORM_IDLE = 2.0     # seconds idle before a process that was full exits
MASTER_GONE_GRACE = 10.0  # seconds open sessions get once the master has died


class Server:
    def __init__(self, svc: Service, settings: Settings, checker: Checker | None,
                 cleanup: Cleanup, checker_error: str = "") -> None:
        self.svc = svc
        self.settings = settings
        self.checker = checker
        self.checker_error = checker_error
        self.cleanup = cleanup
        self.cfg = svc.cfg
        self.limit = max(1, self.cfg.int("smtpd_per_process_session_limit"))
        # One process does the work of `limit` Postfix smtpd processes, so it
        # gets their combined budget of connections (0 stays: no limit).
        self.max_use = self.cfg.int("max_use") * self.limit
        self.max_idle = float(self.cfg.time("max_idle"))
        self.peername_lookup = self.cfg.bool("smtpd_peername_lookup")
        self.sessions: set[asyncio.Task] = set()
        self.served = 0
        self.stop = asyncio.Event()
        self.changed = asyncio.Event()     # a session ended, or stop was set
        self.room = asyncio.Event()        # a session ended: room for another
        self.avail: bool | None = None
        self.was_full = False              # reached self.limit: served a storm
        self.limits = Limits.from_config(self.cfg, svc.name)   # anvil's client limits
        self.parent = os.getppid()
        self.passed = svc.type == "pass"     # clients arrive through postscreen

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        listeners = self.svc.listen_sockets()
        for sock in listeners:
            sock.setblocking(False)
        self.svc.stop_on_master_exit(loop, self._stop)
        accepters = [asyncio.create_task(self._accept_loop(loop, s)) for s in listeners]
        await self._supervise()
        for task in accepters:
            task.cancel()
        for sock in listeners:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._report(False)
        if self.sessions:
            await self._finish_sessions()
        self.cleanup.close()
        if self.limits is not None:
            self.limits.close()

    async def _finish_sessions(self) -> None:
        """_finish_sessions - let the open sessions end; cut them a while
        after the master has died (a reload waits for them)."""
        grace = MASTER_GONE_GRACE if os.getppid() != self.parent else None
        done, pending = await asyncio.wait(list(self.sessions), timeout=grace)
        if pending:
            log.warning(f"master is gone: closing {len(pending)} session(s)")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _stop(self) -> None:
        self.stop.set()
        self.changed.set()
        self.room.set()

    async def _supervise(self) -> None:
        """_supervise - report availability; end on stop, max_use or max_idle."""
        while not self.stop.is_set():
            avail = len(self.sessions) < self.limit
            self.was_full = self.was_full or (not avail and self.limit > 1)
            self._report(avail)
            if self.max_use and self.served >= self.max_use:
                break
            self.changed.clear()
            timeout = None if self.sessions else self._idle_limit()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                break   # max_idle seconds without a session

    def _idle_limit(self) -> float:
        """_idle_limit - seconds without a session before this process exits."""
        return min(self.max_idle, STORM_IDLE) if self.was_full else self.max_idle

    def _report(self, avail: bool) -> None:
        if avail != self.avail:
            self.avail = avail
            self.svc.report(avail)

    async def _accept_loop(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        while not self.stop.is_set():
            if self.max_use and self.served >= self.max_use:
                return      # the master starts a fresh process for new clients
            if len(self.sessions) >= self.limit:
                # Event.wait() on a set event does not yield: clear it first,
                # or this loop would spin and starve every session.
                self.room.clear()
                await self.room.wait()
                continue
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as e:
                log.warning(f"accept: {e.strerror}")
                await asyncio.sleep(0.1)
                continue
            self.served += 1
            if self.served == 1:
                self.svc.report_used()
            task = asyncio.create_task(self._session(loop, sock))
            self.sessions.add(task)
            task.add_done_callback(self._session_done)
            self.changed.set()

    def _session_done(self, task: asyncio.Task) -> None:
        self.sessions.discard(task)
        self.changed.set()
        self.room.set()
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.warning(f"session failed: {type(e).__name__}: {e}")

    async def _session(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if self.passed:
            received = await self._receive_passed(loop, sock)
            if received is None:
                return
            sock, sockaddr = received
        else:
            try:
                sockaddr = sock.getpeername()
            except OSError:
                sock.close()
                return
        peer = await lookup_peer(sockaddr, self.peername_lookup)
        _, conn = await loop.connect_accepted_socket(Connection, sock)
        session = Session(conn, peer, self.settings, self.checker, self.cleanup,
                          self.checker_error, limits=self.limits)
        await session.run()

    async def _receive_passed(self, loop: asyncio.AbstractEventLoop,
                              conn: socket.socket) -> tuple[socket.socket, tuple] | None:
        """_receive_passed - the client connection a pass connection CONN
        brings, with the client's address as the sender saw it (a PROXY
        header may have named another than the socket's peer)."""
        try:
            client, attrs = await handoff.receive(loop, conn, HANDOFF_TIMEOUT)
        except handoff.HandoffError as e:
            log.warning(str(e))
            return None
        try:
            sockaddr = (attrs["client_address"] or client.getpeername()[0],
                        int(attrs["client_port"] or 0))
        except (OSError, ValueError, IndexError):
            client.close()
            return None
        return client, sockaddr
