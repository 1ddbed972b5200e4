"""tlsproxy: TLS for a program that speaks plain text, as Postfix's tlsproxy(8).

postscreen answers STARTTLS itself, in its own SMTP engine, but keeps no TLS
code: it passes the client's connection to tlsproxy (`tlsproxy unix - - y
- 0 tlsproxy`; the master listens on private/tlsproxy, a stream socket,
since zeromq cannot carry descriptors), and goes on reading and writing
plain text over its connection to tlsproxy, which does the TLS handshake
with the client (the server role, tlsproxy_tls_* parameters, which default
to smtpd's) and then relays both ways until either side closes:

    postscreen -> {"op": "connection", "client_address": A, "client_port": P,
                   "server_address": B, "server_port": Q} + the client's socket
    tlsproxy   -> {"status": "ok"} | {"status": "fail", "reason": TEXT}
    then plain text both ways

Each session is logged `CONNECT from [A]:P` and `DISCONNECT [A]:P`. A
failed handshake is logged (`SSL_accept error from [A]:P: REASON`) and
ends both connections; with tlsproxy_tls_loglevel 1 or more a session logs
`Anonymous TLS connection established from [A]:P: TLSv1.3 with cipher ...`.
One process serves many sessions at once (a thread each) and exits after
max_idle seconds without one, or when the master goes away.

Interface: main(), pre_jail(svc) -> Prepared, run(svc)
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from pymaster.mail import tlsutil
from pymaster.master import handoff, service
from pymaster.util import fdpass, log

HANDSHAKE_TIMEOUT = 60.0
RECEIVE_TIMEOUT = 10.0
CHUNK = 65536
IDLE_LIMIT = 600.0     # seconds a session may say nothing either way


@dataclass
class Prepared:
    context: ssl.SSLContext | None
    loglevel: int
    problem: str


def pre_jail(svc: service.Service) -> Prepared:
    """pre_jail - the server context: certificate and key files are read now."""
    cfg = svc.cfg
    try:
        ctx = tlsutil.server_context(cfg, "tlsproxy", level="may")
    except (tlsutil.TlsError, OSError, ssl.SSLError) as e:
        log.warning(f"TLS server initialization failed: {e}")
        return Prepared(None, 0, str(e))
    if ctx is None:
        return Prepared(None, 0, "no server certificate (tlsproxy_tls_cert_file)")
    try:
        loglevel = int(cfg.get("tlsproxy_tls_loglevel") or 0)
    except ValueError:
        loglevel = 0
    return Prepared(ctx, loglevel, "")


class Proxy:
    """The accept loop; a thread per session (a session mostly waits on its
    client, and the standard library's blocking TLS sockets are the ones
    that take a handshake on an already accepted connection as a server)."""

    def __init__(self, svc: service.Service, prepared: Prepared) -> None:
        self.svc = svc
        self.prepared = prepared
        self.active = 0
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        listener = self.svc.listen_socket()
        listener.setblocking(False)
        poller = select.poll()
        poller.register(listener.fileno(), select.POLLIN)
        poller.register(service.ALIVE_FD, select.POLLIN)
        max_idle = float(self.svc.cfg.time("max_idle"))
        self.svc.report(True)
        idle_since = time.monotonic()
        try:
            while not self.svc.stopping:
                with self.lock:
                    busy = self.active > 0
                if busy:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= max_idle:
                    break
                ready = dict(poller.poll(1000))
                if service.ALIVE_FD in ready and self.svc.master_gone():
                    break
                if listener.fileno() in ready:
                    self._accept(listener)
        except service.ServiceStop:
            pass
        listener.close()
        for thread in self.threads:
            thread.join()

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return      # another process took it
        if self.svc.uses == 0:
            self.svc.report_used()
        self.svc.uses += 1
        with self.lock:
            self.active += 1
        thread = threading.Thread(target=self._session, args=(conn,), daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        thread.start()

    def _session(self, conn: socket.socket) -> None:
        try:
            self._serve(conn)
        except Exception as e:      # one session fails, the process lives on
            log.warning(f"session failed: {type(e).__name__}: {e}")
        finally:
            conn.close()
            with self.lock:
                self.active -= 1

    def _serve(self, conn: socket.socket) -> None:
        try:
            client, attrs = handoff.take(conn, RECEIVE_TIMEOUT, keep=True)
        except handoff.HandoffError as e:
            log.warning(str(e))
            return
        who = f"[{attrs['client_address']}]:{attrs['client_port']}"
        log.info(f"CONNECT from {who}")
        try:
            self._encrypt(conn, client, who)
        finally:
            client.close()
            log.info(f"DISCONNECT {who}")

    def _encrypt(self, conn: socket.socket, client: socket.socket, who: str) -> None:
        """_encrypt - say yes to the sender, shake hands with the client, relay."""
        context = self.prepared.context
        if context is None:
            fdpass.send(conn, {"status": "fail", "reason": self.prepared.problem})
            return
        fdpass.send(conn, {"status": "ok"})
        client.setblocking(True)
        client.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log.info(f"SSL_accept error from {who}: {e}")
            return
        with tls:
            if self.prepared.loglevel >= 1:
                log.info(tlsutil.established_from(tlsutil.Session.from_ssl(tls), who))
            _relay(tls, conn)


def _relay(tls: ssl.SSLSocket, plain: socket.socket) -> None:
    """_relay - bytes both ways until either side ends or IDLE_LIMIT passes."""
    plain.settimeout(IDLE_LIMIT)
    tls.settimeout(IDLE_LIMIT)
    while True:
        if tls.pending():
            readable: list[socket.socket] = [tls]
        else:
            readable, _, _ = select.select([tls, plain], [], [], IDLE_LIMIT)
            if not readable:
                return
        try:
            if tls in readable:
                data = tls.recv(CHUNK)
                if not data:
                    return
                plain.sendall(data)
            if plain in readable:
                data = plain.recv(CHUNK)
                if not data:
                    return
                tls.sendall(data)
        except (ssl.SSLError, OSError):
            return


def run(svc: service.Service) -> None:
    prepared = svc.enter_jail(pre_jail)
    Proxy(svc, prepared).serve()


def main() -> None:
    service.main("tlsproxy", run)
