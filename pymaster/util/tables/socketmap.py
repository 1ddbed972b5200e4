"""socketmap: tables: ask a server over the Sendmail socketmap protocol.

`socketmap:inet:host:port:name` or `socketmap:unix:/path/to/socket:name`.
Each request is a netstring `LEN:name key,`; the reply is a netstring whose
text starts with `OK value`, `NOTFOUND`, `TEMP reason`, `TIMEOUT reason` or
`PERM reason`. The connection stays open between lookups and is reopened
once when it broke; anything but OK and NOTFOUND is a TableError (the mail
waits).

Interface:
    SocketmapTable(type, name, cfg=None, timeout=10) .lookup(key)
    netstring(data: bytes) -> bytes ; read_netstring(sock_file) -> bytes
"""

from __future__ import annotations

import socket
from typing import BinaryIO

from pymaster.util.tables import Table, TableError

MAX_REPLY = 100000


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def read_netstring(f) -> bytes:
    """read_netstring - one netstring from the binary file F."""
    digits = b""
    while True:
        c = f.read(1)
        if not c:
            raise OSError("connection closed")
        if c == b":":
            break
        if not c.isdigit() or len(digits) > 6:
            raise OSError("bad netstring length")
        digits += c
    length = int(digits or b"-1")
    if length < 0 or length > MAX_REPLY:
        raise OSError("bad netstring length")
    data = f.read(length)
    if len(data) != length or f.read(1) != b",":
        raise OSError("malformed netstring")
    return data


class SocketmapTable(Table):
    """A socketmap client with one persistent connection."""

    remote = True

    def __init__(self, type_: str, name: str, cfg=None, timeout: float = 10,
                 **_options) -> None:
        super().__init__(type_, name, cfg)
        endpoint, colon, self.map_name = name.rpartition(":")
        kind, _, where = endpoint.partition(":")
        if not colon or kind not in ("inet", "unix") or not where or not self.map_name:
            raise TableError(f"socketmap:{name}: expected inet:host:port:name "
                             "or unix:pathname:name")
        self.kind, self.where, self.timeout = kind, where, timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def _connect(self) -> None:
        if self.kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: str | tuple[str, int] = self.where
        else:
            host, _, port = self.where.rpartition(":")
            host = host.strip("[]")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            address = (host, int(port))
        sock.settimeout(self.timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        self._sock, self._file = sock, sock.makefile("rb")

    def _close(self) -> None:
        if self._sock is not None:
            assert self._file is not None  # opened with _sock
            self._file.close()
            self._sock.close()
        self._sock = self._file = None

    def _ask(self, request: bytes) -> bytes:
        if self._sock is None:
            self._connect()
        assert self._sock is not None and self._file is not None
        self._sock.sendall(netstring(request))
        return read_netstring(self._file)

    def lookup(self, key: str) -> str | None:
        request = f"{self.map_name} {key}".encode("utf-8", "surrogateescape")
        for attempt in (1, 2):
            try:
                reply = self._ask(request)
                break
            except (OSError, ValueError) as e:
                self._close()
                if attempt == 2:
                    raise TableError(f"socketmap:{self.name}: {e}") from None
        status, _, text = reply.decode("utf-8", "surrogateescape").partition(" ")
        if status == "OK":
            return text
        if status == "NOTFOUND":
            return None
        raise TableError(f"socketmap:{self.name}: {status} {text}".rstrip())
