"""A request handler served from a thread as a service's worker would serve
it, for unit tests that talk to one service's code without a master: the
test's thread listens on the service's socket itself (the master's part)
and an ipc.Server takes the leases (the worker's part).

Interface:
    ServedHandler(endpoint, handler, many=True)   HANDLER(header, payload) -> (header, payload)
    .requests       requests answered so far
    .triggers       one-way requests received (headers)
    .close()
"""

from __future__ import annotations

import os
import socket
import threading

from pymaster.util import ipc


def listen(path: str) -> socket.socket:
    """listen - a unix stream socket at PATH, as the master binds a service's."""
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(100)
    return sock


class ServedHandler:
    """HANDLER(header, payload) -> (header, payload), answering at ENDPOINT."""

    def __init__(self, endpoint: str, handler, many: bool = True) -> None:
        self.path = endpoint[6:] if endpoint.startswith("ipc://") else endpoint
        self.listener = listen(self.path)
        self.server = ipc.Server(self.listener, many=many)
        self.handler = handler
        self.requests = 0
        self.triggers: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        poller = ipc.Poller()
        poller.register(self.server)
        while not self.stop.is_set():
            if not poller.poll(20):
                continue
            for token, header, payload in self.server.events():
                if token is None:
                    self.triggers.append(header)
                    continue
                self.requests += 1
                reply, reply_payload = self.handler(header, payload)
                self.server.reply(token, reply, reply_payload)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.server.close()
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
