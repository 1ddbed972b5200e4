"""The client of the scache service: save and find open connections.

scache (services/scache.py) is a stream service: this client connects to
`private/$connection_cache_service_name` (a plain unix stream socket the
master listens on) and exchanges pymaster/util/fdpass.py messages, the
connections travelling as descriptors. One connection to scache is kept
for the life of the process; when it turns out closed before a request
is sent, the request goes once more on a new one (never after it was
sent: a connection must not be saved twice).

When scache is not running (not in master.cf, or it cannot be reached) a
request answers "not found" / "not saved" and the client leaves scache
alone for RETRY_AFTER seconds, so a caller falls back to a cache of its
own without paying a failed connect per request.

Interface:
    ScacheClient.from_config(cfg) / ScacheClient(path, timeout)
    client.save_endp(label, props, fd, ttl) -> bool      fd stays the caller's
    client.save_dest(label, props, endp_label, ttl) -> bool
    client.find_endp(label) -> (props, fd) | None        fd is the caller's
    client.find_dest(label) -> (props, endp_label, endp_props, fd) | None
    client.available() -> bool     not known to be down
    client.close()
"""

from __future__ import annotations

import os
import socket
import threading
import time

from pymaster.mail.config import Config
from pymaster.util import fdpass, log

RETRY_AFTER = 10.0          # seconds a down scache is left alone


class ScacheClient:
    """Requests to the connection cache, one at a time."""

    def __init__(self, path: str, timeout: float | None) -> None:
        self.path = path
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.down_until = 0.0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Config) -> "ScacheClient":
        timeout = float(cfg.time("connection_cache_protocol_timeout")) or None
        return cls(os.path.join("private", cfg.get("connection_cache_service_name")), timeout)

    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    # -- the four requests -------------------------------------------------
    def save_endp(self, label: str, props: dict, fd: int, ttl: float) -> bool:
        reply = self._call({"op": "save_endp", "label": label, "props": props,
                            "ttl": ttl}, [fd])
        return reply is not None and reply[0].get("status") == "ok"

    def save_dest(self, label: str, props: dict, endp_label: str, ttl: float) -> bool:
        reply = self._call({"op": "save_dest", "label": label, "props": props,
                            "endp_label": endp_label, "ttl": ttl})
        return reply is not None and reply[0].get("status") == "ok"

    def find_endp(self, label: str) -> tuple[dict, int] | None:
        found = self._found(self._call({"op": "find_endp", "label": label}))
        if found is None:
            return None
        header, fd = found
        return dict(header.get("props") or {}), fd

    def find_dest(self, label: str) -> tuple[dict, str, dict, int] | None:
        found = self._found(self._call({"op": "find_dest", "label": label}))
        if found is None:
            return None
        header, fd = found
        return (dict(header.get("props") or {}), str(header.get("endp_label") or ""),
                dict(header.get("endp_props") or {}), fd)

    @staticmethod
    def _found(reply: tuple[dict, list[int]] | None) -> tuple[dict, int] | None:
        """_found - an "ok" reply with exactly one descriptor, else None (and
        whatever came with it closed)."""
        if reply is None:
            return None
        header, fds = reply
        if header.get("status") == "ok" and len(fds) == 1:
            return header, fds[0]
        fdpass.close_fds(fds)
        return None

    # -- the conversation --------------------------------------------------
    def _call(self, header: dict, fds: list[int] | None = None) -> tuple[dict, list[int]] | None:
        """_call - one request and its reply; None when scache cannot be asked."""
        if not self.available():
            return None
        with self._lock:
            for attempt in (1, 2):
                fresh, sent = self.sock is None, False
                try:
                    if self.sock is None:
                        self.sock = fdpass.connect(self.path, self.timeout)
                    fdpass.send(self.sock, header, fds or [])
                    sent = True
                    return fdpass.recv(self.sock, max_fds=1)
                except (OSError, EOFError, fdpass.FdPassError) as e:
                    self._drop()
                    # A kept connection that scache ended while we were away
                    # fails at the send: once more on a new one. Never after
                    # the send, or a connection could be saved twice.
                    if fresh or sent or attempt == 2:
                        self._down(e)
                        return None
        return None

    def _down(self, e: BaseException) -> None:
        self.down_until = time.monotonic() + RETRY_AFTER
        if not isinstance(e, (FileNotFoundError, ConnectionRefusedError)):
            log.warning(f"connect to {self.path} service: {e}")

    def _drop(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def close(self) -> None:
        with self._lock:
            self._drop()
