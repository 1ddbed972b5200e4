"""The postscreen process: accepting on the master's listeners, one task per client.

One process (master.cf maxproc 1) watches every client at once, as
Postfix's postscreen does: most clients spend their time waiting (the greet
wait, DNS answers), not computing. It reports itself available to the
master once, exits after max_idle seconds without a client, on SIGTERM, or
when the master goes away or reloads (end of file on descriptor 5; the
sessions in progress are finished first), and cleans the cache every
postscreen_cache_cleanup_interval.

Interface:
    Server(svc, ctx).serve()    awaitable
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from pymaster.master.service import Service
from pymaster.util import log

from .conn import Conn
from .session import Context, Session


class Server:
    def __init__(self, svc: Service, ctx: Context) -> None:
        self.svc = svc
        self.ctx = ctx
        self.max_idle = float(svc.cfg.time("max_idle"))
        self.sessions: set[asyncio.Task] = set()
        self.stop = asyncio.Event()
        self.changed = asyncio.Event()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        listeners = self.svc.listen_sockets()
        self.svc.stop_on_master_exit(loop, self._stop)
        accepters = [asyncio.create_task(self._accept_loop(loop, s)) for s in listeners]
        cleaner = asyncio.create_task(self._cleanup_loop())
        self.svc.report(True)
        await self._supervise()
        for task in accepters + [cleaner]:
            task.cancel()
        for sock in listeners:
            sock.close()
        if self.sessions:
            await asyncio.wait(list(self.sessions))
        self.ctx.cache.close()

    def _stop(self) -> None:
        self.stop.set()
        self.changed.set()

    async def _supervise(self) -> None:
        """_supervise - until stopped, or max_idle seconds without a client."""
        while not self.stop.is_set():
            self.changed.clear()
            timeout = None if self.sessions else self.max_idle
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                break

    async def _accept_loop(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> None:
        listener.setblocking(False)
        used = False
        while not self.stop.is_set():
            try:
                sock, peer = await loop.sock_accept(listener)
            except OSError as e:
                log.warning(f"accept: {e.strerror}")
                await asyncio.sleep(0.1)
                continue
            if not used:
                used = True
                self.svc.report_used()
            task = asyncio.create_task(self._session(loop, sock, peer))
            self.sessions.add(task)
            task.add_done_callback(self._session_done)
            self.changed.set()

    def _session_done(self, task: asyncio.Task) -> None:
        self.sessions.discard(task)
        self.changed.set()
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            log.warning(f"session failed: {type(e).__name__}: {e}")

    async def _session(self, loop: asyncio.AbstractEventLoop, sock: socket.socket,
                       peer) -> None:
        try:
            local = sock.getsockname()
        except OSError:
            sock.close()
            return
        addr, port = _address(peer)
        saddr, sport = _address(local)
        await Session(self.ctx, Conn(loop, sock), addr, port, saddr, sport).run()

    async def _cleanup_loop(self) -> None:
        """_cleanup_loop - drop long-expired cache rows at start and every
        cleanup interval (0: at start only)."""
        interval = self.ctx.settings.cache_cleanup_interval
        if self.ctx.cache.path is None:
            return      # a memory cache dies with the process
        while True:
            self.ctx.cache.cleanup(time.time(), self.ctx.settings.cache_retention)
            if interval <= 0:
                return
            await asyncio.sleep(interval)


def _address(sockaddr) -> tuple[str, str]:
    """_address - ("192.0.2.1", "25") for a socket address; IPv4-mapped unwrapped."""
    host, port = str(sockaddr[0]), str(sockaddr[1])
    if host.startswith("::ffff:") and "." in host:
        host = host[len("::ffff:"):]
    return host, port


__all__ = ["Server", "os"]
