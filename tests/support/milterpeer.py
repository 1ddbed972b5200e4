"""A scripted milter for the tests: the other end of pymaster.mail.milter.

It is a peer, not one of pymaster's services: a thread that listens on a
loopback port, speaks the libmilter wire format, records every packet it
gets, and answers from a script: per command byte, the packets to send back
(`ScriptedMilter.reply(b"r")`, `edit(...)` helpers build them).

    with ScriptedMilter(script={b"E": [add_header("X-A", "1"), reply(b"c")]}) as m:
        ... inet:127.0.0.1:{m.port} ...
        m.commands()   -> [b"O", b"D", b"C", ...]
        m.sessions     -> the command bytes of each connection, [[b"O", b"D", b"C", ...], ...]
        m.wait_until(lambda: b"Q" in m.commands())   -> waits for a packet to arrive

A script entry may also be a function of the packet's data that returns
the packets (`{b"R": lambda data: [replycode("451 …")] if b"grey" in data
else [reply(b"c")]}`). Commands without a script entry get SMFIR_CONTINUE, except D (macros),
A (abort) and Q (quit), which take no reply. `steps` and `actions` are what
the OPTNEG reply claims; `symlists` ({stage: "names"}) asks for macros;
`stall` (a set of command bytes) makes it never answer those; `port` picks
the port (0: any free one); `version` is the protocol version it claims.
"""

from __future__ import annotations

import socket
import struct
import threading

NO_REPLY = {b"D", b"A", b"Q"}


def packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def reply(command: bytes, data: bytes = b"") -> bytes:
    return packet(command, data)


def replycode(text: str) -> bytes:
    return packet(b"y", text.encode() + b"\0")


def add_header(name: str, value: str) -> bytes:
    return packet(b"h", name.encode() + b"\0" + value.encode() + b"\0")


def insert_header(index: int, name: str, value: str) -> bytes:
    return packet(b"i", struct.pack("!I", index) + name.encode() + b"\0" + value.encode() + b"\0")


def change_header(index: int, name: str, value: str) -> bytes:
    return packet(b"m", struct.pack("!I", index) + name.encode() + b"\0" + value.encode() + b"\0")


def add_rcpt(addr: str) -> bytes:
    return packet(b"+", f"<{addr}>".encode() + b"\0")


def del_rcpt(addr: str) -> bytes:
    return packet(b"-", f"<{addr}>".encode() + b"\0")


def change_from(addr: str) -> bytes:
    return packet(b"e", f"<{addr}>".encode() + b"\0")


def replace_body(data: bytes) -> bytes:
    return packet(b"b", data)


def quarantine(reason: str) -> bytes:
    return packet(b"q", reason.encode() + b"\0")


class ScriptedMilter:
    """A milter on 127.0.0.1:port that answers from a script; see the module text."""

    def __init__(self, script: dict[bytes, list[bytes]] | None = None, steps: int = 0,
                 actions: int = 0x1FF, symlists: dict[int, str] | None = None,
                 stall: set[bytes] | None = None, port: int = 0, version: int = 6) -> None:
        self.script = script or {}
        self.version = version
        self.steps, self.actions = steps, actions
        self.symlists = symlists or {}
        self.stall = stall or set()
        self.received: list[tuple[bytes, bytes]] = []
        self.sessions: list[list[bytes]] = []
        self.arrived = threading.Condition()
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.closing = False

    def __enter__(self) -> "ScriptedMilter":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # wakes the blocked accept()
        except OSError:
            pass
        self.listener.close()

    @property
    def name(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    def commands(self) -> list[bytes]:
        return [c for c, _ in self.received]

    def wait_until(self, predicate, timeout: float = 20) -> None:
        """wait_until - until PREDICATE() holds, checked as packets arrive
        (AssertionError after TIMEOUT)."""
        with self.arrived:
            if not self.arrived.wait_for(predicate, timeout):
                raise AssertionError(f"still waiting; received {self.commands()}")

    def data(self, command: bytes) -> list[bytes]:
        return [d for c, d in self.received if c == command]

    def _serve(self) -> None:
        while not self.closing:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        mine: list[bytes] = []
        self.sessions.append(mine)
        with conn:
            while True:
                got = self._read(conn)
                if got is None:
                    return
                command, data = got
                with self.arrived:
                    self.received.append((command, data))
                    mine.append(command)
                    self.arrived.notify_all()
                if command in self.stall or command in NO_REPLY:
                    if command == b"Q":
                        return
                    continue
                conn.sendall(b"".join(self._answer(command, data)))

    def _answer(self, command: bytes, data: bytes = b"") -> list[bytes]:
        if command == b"O":
            extra = b"".join(struct.pack("!I", stage) + names.encode() + b"\0"
                             for stage, names in self.symlists.items())
            return [packet(b"O", struct.pack("!III", self.version, self.actions, self.steps) + extra)]
        answer = self.script.get(command, [reply(b"c")])
        return answer(data) if callable(answer) else answer

    @staticmethod
    def _read(conn: socket.socket) -> tuple[bytes, bytes] | None:
        head = _exactly(conn, 5)
        if head is None:
            return None
        length = struct.unpack("!I", head[:4])[0]
        data = _exactly(conn, length - 1) if length > 1 else b""
        return (head[4:5], data) if data is not None else None


def _exactly(conn: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        try:
            chunk = conn.recv(size - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf
