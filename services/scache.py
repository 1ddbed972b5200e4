"""scache: the shared SMTP connection cache, as Postfix's scache(8).

An smtp process that finishes a delivery on a connection it may reuse
hands the open connection (its descriptor) to scache; another smtp process
that has mail for the same destination or the same server takes it back
instead of connecting afresh. So one TCP connection carries mail that
several smtp processes deliver, and a destination with a backlog sees one
connection where it would see one per message.

zeromq cannot carry descriptors, so scache is a stream service: the master
listens on `private/$connection_cache_service_name` (a unix stream socket,
as for every unix service) and starts this program on the first
connection; it accepts on descriptor 3 and serves every client (the
connection itself, not leases) on its own event loop, one process (`scache unix - - n - 1 scache`).
Requests and replies are pymaster/util/fdpass.py messages; the client is
pymaster/mail/scache_client.py.

What it holds, as scache(8) describes:
  endpoints      label (the server: transport, address, port ...) ->
                 connections, each with the properties the client gave it
                 (what the server said to EHLO, when the connection was
                 made, how often it was used) and a time to live;
  destinations   label (transport and next hop ...) -> an endpoint label and
                 properties, with their own time to live.

    {"op": "save_endp", "label": L, "props": P, "ttl": T} + descriptor
    {"op": "save_dest", "label": D, "props": P, "endp_label": L, "ttl": T}
        -> {"status": "ok"} | {"status": "fail", "reason": R}
    {"op": "find_endp", "label": L}
        -> {"status": "ok", "props": P} + descriptor
    {"op": "find_dest", "label": D}
        -> {"status": "ok", "props": P, "endp_label": L, "endp_props": EP} + descriptor
        |  {"status": "fail", "reason": "not found"}

A found connection leaves the cache (the finder owns it). A time to live
is cut to connection_cache_ttl_limit; a connection that reaches it is
closed (scache speaks no SMTP: the server sees the connection end), and so
is one the server closed or wrote to while it sat here, at the lookup that
would have returned it. Every connection_cache_status_update_time, and at
exit, scache logs its `statistics:` lines when it was asked anything. It
exits after max_idle seconds with no client connected and nothing cached,
or when the master goes.

Interface:
    ConnectionCache(ttl_limit, clock=time.monotonic)   the tables, no I/O
    Server(svc, cache, listener).run()
    pre_jail(svc) -> ConnectionCache
    main()   the body of libexec/scache
"""

from __future__ import annotations

import os
import select
import selectors
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from pymaster.master import service
from pymaster.util import fdpass, log

NOT_FOUND = {"status": "fail", "reason": "not found"}
OK = {"status": "ok"}
DEAD = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL


@dataclass
class Connection:
    fd: int
    props: dict
    expires: float


@dataclass
class Destination:
    endp_label: str
    props: dict
    expires: float


@dataclass
class Counters:
    dest_hits: int = 0
    dest_miss: int = 0
    endp_hits: int = 0
    endp_miss: int = 0
    max_dests: int = 0
    max_endps: int = 0
    max_conns: int = 0

    def asked(self) -> bool:
        return bool(self.dest_hits or self.dest_miss or self.endp_hits or self.endp_miss)


@dataclass
class ConnectionCache:
    """Cached connections by endpoint, destinations mapped to endpoints."""
    ttl_limit: float
    clock: Callable[[], float] = time.monotonic
    endpoints: dict[str, list[Connection]] = field(default_factory=dict)
    dests: dict[str, Destination] = field(default_factory=dict)
    counters: Counters = field(default_factory=Counters)
    started: float = field(default_factory=time.time)

    # -- saving ------------------------------------------------------------
    def save_endp(self, label: str, props: dict, fd: int, ttl: float) -> bool:
        """save_endp - keep FD under LABEL (ours now, closed when refused)."""
        ttl = min(ttl, self.ttl_limit)
        if ttl <= 0 or not label:
            os.close(fd)
            return False
        conn = Connection(fd, props, self.clock() + ttl)
        self.endpoints.setdefault(label, []).append(conn)
        self._count_max()
        return True

    def save_dest(self, label: str, props: dict, endp_label: str, ttl: float) -> bool:
        """save_dest - the destination LABEL is served by the endpoint ENDP_LABEL."""
        ttl = min(ttl, self.ttl_limit)
        if ttl <= 0 or not label or not endp_label:
            return False
        self.dests[label] = Destination(endp_label, props, self.clock() + ttl)
        self._count_max()
        return True

    # -- finding -----------------------------------------------------------
    def find_endp(self, label: str) -> tuple[dict, int] | None:
        """find_endp - a live cached connection to LABEL, removed from the cache."""
        found = self._take(label)
        if found is None:
            self.counters.endp_miss += 1
            return None
        self.counters.endp_hits += 1
        return found.props, found.fd

    def find_dest(self, label: str) -> tuple[dict, str, dict, int] | None:
        """find_dest - the destination's properties, its endpoint label, and a
        live connection to that endpoint (removed from the cache)."""
        self.expire()
        dest = self.dests.get(label)
        found = self._take(dest.endp_label) if dest is not None else None
        if dest is None or found is None:
            self.counters.dest_miss += 1
            return None
        self.counters.dest_hits += 1
        return dest.props, dest.endp_label, found.props, found.fd

    def _take(self, label: str) -> Connection | None:
        """_take - the newest connection to LABEL that is still open and quiet."""
        self.expire()
        conns = self.endpoints.get(label)
        while conns:
            conn = conns.pop()
            if alive(conn.fd):
                break
            os.close(conn.fd)
        else:
            conn = None
        if not conns:
            self.endpoints.pop(label, None)
        return conn

    # -- time --------------------------------------------------------------
    def expire(self) -> None:
        """expire - close connections and forget destinations past their time."""
        now = self.clock()
        for label in list(self.endpoints):
            keep = []
            for conn in self.endpoints[label]:
                if conn.expires <= now:
                    os.close(conn.fd)
                else:
                    keep.append(conn)
            if keep:
                self.endpoints[label] = keep
            else:
                del self.endpoints[label]
        for label in [k for k, d in self.dests.items() if d.expires <= now]:
            del self.dests[label]

    def next_expiry(self) -> float | None:
        times = [c.expires for conns in self.endpoints.values() for c in conns]
        times += [d.expires for d in self.dests.values()]
        return min(times) if times else None

    def connections(self) -> int:
        return sum(len(c) for c in self.endpoints.values())

    def empty(self) -> bool:
        return not self.endpoints and not self.dests

    def close_all(self) -> None:
        for conns in self.endpoints.values():
            for conn in conns:
                os.close(conn.fd)
        self.endpoints.clear()
        self.dests.clear()

    # -- statistics --------------------------------------------------------
    def _count_max(self) -> None:
        c = self.counters
        c.max_dests = max(c.max_dests, len(self.dests))
        c.max_endps = max(c.max_endps, len(self.endpoints))
        c.max_conns = max(c.max_conns, self.connections())

    def statistics(self) -> list[str]:
        """statistics - the period's lines (none when nobody asked), then a new period."""
        c = self.counters
        lines = []
        if c.asked():
            start = time.strftime("%b %d %H:%M:%S", time.localtime(self.started))
            lines.append(f"statistics: start interval {start}")
            for kind, hits, miss in (("domain", c.dest_hits, c.dest_miss),
                                     ("address", c.endp_hits, c.endp_miss)):
                if hits or miss:
                    lines.append(f"statistics: {kind} lookup hits={hits} miss={miss} "
                                 f"success={100 * hits // (hits + miss)}%")
            lines.append(f"statistics: max simultaneous domains={c.max_dests} "
                         f"addresses={c.max_endps} connection={c.max_conns}")
        self.started = time.time()
        self.counters = Counters()
        self._count_max()
        return lines

    # -- requests ----------------------------------------------------------
    def handle(self, header: dict, fds: list[int]) -> tuple[dict, list[int]]:
        """handle - one request; the reply and the descriptor it gives away.
        FDS are ours: kept or closed here."""
        op = header.get("op")
        label = str(header.get("label") or "")
        props = header.get("props")
        props = props if isinstance(props, dict) else {}
        ttl = _seconds(header.get("ttl"))
        if op == "save_endp":
            if len(fds) != 1:
                fdpass.close_fds(fds)
                return {"status": "fail", "reason": "save_endp needs one descriptor"}, []
            ok = self.save_endp(label, props, fds[0], ttl)
            return (OK if ok else {"status": "fail", "reason": "not cached"}), []
        fdpass.close_fds(fds)
        if op == "save_dest":
            ok = self.save_dest(label, props, str(header.get("endp_label") or ""), ttl)
            return (OK if ok else {"status": "fail", "reason": "not cached"}), []
        if op == "find_endp":
            found = self.find_endp(label)
            if found is None:
                return NOT_FOUND, []
            return {"status": "ok", "props": found[0]}, [found[1]]
        if op == "find_dest":
            hit = self.find_dest(label)
            if hit is None:
                return NOT_FOUND, []
            return {"status": "ok", "props": hit[0], "endp_label": hit[1],
                    "endp_props": hit[2]}, [hit[3]]
        return {"status": "error", "reason": f"unknown request: {op}"}, []


def alive(fd: int) -> bool:
    """alive - the connection is open and the server has said nothing since
    (a reply nobody asked for is a 421 or the end: not worth handing out)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return not any(ev & DEAD for _, ev in poller.poll(0))


def _seconds(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


class Server:
    """The event loop: the listener, every client, the master's alive pipe."""

    def __init__(self, svc: service.Service, cache: ConnectionCache,
                 listener: socket.socket, alive_fd: int = service.ALIVE_FD) -> None:
        self.svc = svc
        self.alive_fd = alive_fd
        self.cache = cache
        self.listener = listener
        self.timeout = float(svc.cfg.time("connection_cache_protocol_timeout")) or None
        self.update = max(1.0, float(svc.cfg.time("connection_cache_status_update_time")))
        self.max_idle = float(svc.cfg.time("max_idle"))
        self.selector = selectors.DefaultSelector()
        self.clients: set[socket.socket] = set()

    def run(self) -> None:
        """run - serve until idle, stopped, or the master goes; then the statistics."""
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.alive_fd, selectors.EVENT_READ, "alive")
        next_stats = time.monotonic() + self.update
        idle_since = time.monotonic()
        try:
            while not self.svc.stopping:
                now = time.monotonic()
                if now >= next_stats:
                    self.log_statistics()
                    next_stats = now + self.update
                if self.clients or not self.cache.empty():
                    idle_since = now
                elif now - idle_since >= self.max_idle:
                    break
                if not self.turn(self.wait(now, next_stats, idle_since)):
                    break
        except service.ServiceStop:
            pass
        finally:
            self.log_statistics()
            self.cache.close_all()
            for sock in list(self.clients):
                sock.close()

    def wait(self, now: float, next_stats: float, idle_since: float) -> float:
        """wait - seconds until the next timer: statistics, an expiry, idleness."""
        deadlines = [next_stats, idle_since + self.max_idle]
        expiry = self.cache.next_expiry()
        if expiry is not None:
            deadlines.append(expiry)
        return max(0.0, min(deadlines) - now) + 0.01

    def turn(self, timeout: float) -> bool:
        """turn - one wait and what it brought; False when the master is gone."""
        events = self.selector.select(timeout)
        self.svc.busy = True
        try:
            for key, _ in events:
                if key.data == "alive":
                    if self.svc.master_gone():
                        return False
                elif key.data == "accept":
                    self.accept()
                else:
                    self.serve(key.fileobj)  # type: ignore[arg-type]
            self.cache.expire()
        finally:
            self.svc.busy = False
        return True

    def accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        sock.settimeout(self.timeout)
        self.clients.add(sock)
        self.selector.register(sock, selectors.EVENT_READ, "client")

    def serve(self, sock: socket.socket) -> None:
        """serve - one request from SOCK; a client that breaks the protocol is dropped."""
        try:
            header, fds = fdpass.recv(sock, max_fds=1)
            reply, give = self.cache.handle(header, fds)
            try:
                fdpass.send(sock, reply, give)
            finally:
                fdpass.close_fds(give)       # the client has its own copy now
            return
        except EOFError:
            pass
        except (OSError, fdpass.FdPassError) as e:
            log.warning(f"connection cache client: {e}")
        self.selector.unregister(sock)
        self.clients.discard(sock)
        sock.close()

    def log_statistics(self) -> None:
        for line in self.cache.statistics():
            log.info(line)


def pre_jail(svc: service.Service) -> ConnectionCache:
    return ConnectionCache(float(svc.cfg.time("connection_cache_ttl_limit")))


def run(svc: service.Service) -> None:
    cache = svc.enter_jail(pre_jail)
    listener = svc.listen_socket()
    listener.setblocking(False)
    svc.report(True)
    Server(svc, cache, listener).run()


def main() -> None:
    service.main("scache", run)
