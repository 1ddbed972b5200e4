"""A real memcached for tests: Debian's /usr/bin/memcached on a free loopback port.

memcached refuses to run as root, so as root it is started as `nobody`
(`-u`). UDP is off (`-U 0`); the server keeps everything in memory, so
stopping it forgets every entry (the tests' "the cache went down").

    with Memcached() as mc:
        mc.server              "inet:127.0.0.1:PORT" for a memcache_table(5) file
        mc.stop(); mc.start()  down and up again on the same port, empty
        mc.get(key)            the server's whole reply to `get KEY`, asked by a
                               plain socket (what a table stored, byte for byte)

Interface:
    available() -> str      "" when memcached can run here, else the skip reason
    Memcached()             .start() .stop() .get(key) .port .server
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

from tests.support.instance import free_port, listening
from tests.support.wait import wait_until

BINARY = "memcached"


def available() -> str:
    """available - "" when the memcached binary is installed, else why not."""
    return "" if shutil.which(BINARY) else "memcached (Debian package memcached) is not installed"


class Memcached:
    """One memcached process on 127.0.0.1:PORT, restartable on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def server(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def start(self) -> "Memcached":
        argv = [shutil.which(BINARY) or BINARY, "-l", "127.0.0.1", "-p", str(self.port),
                "-U", "0", "-m", "16", "-c", "256"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening("127.0.0.1", self.port) or self.proc.poll() is not None,
                   20, f"memcached listening on port {self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"memcached exited with status {self.proc.returncode}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def get(self, key: bytes | str) -> bytes:
        """get - the server's reply to `get KEY`, up to and with its END line."""
        raw = key.encode() if isinstance(key, str) else key
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"get " + raw + b"\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise ConnectionError(f"memcached closed the connection after {reply!r}")
                reply += chunk
            return reply

    def __enter__(self) -> "Memcached":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
