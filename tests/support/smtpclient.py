"""A byte-level SMTP client for tests: exactly the bytes a test wants on the wire.

smtplib cannot send what a test needs to probe (bare LFs, pipelined
commands, smuggling attempts, half a BDAT chunk), so tests that do use this
client and read the replies one at a time.

Interface:
    Raw(port, timeout=10)   .send(bytes) .reply() -> str .cmd(line) -> str .close()
        reply() joins the lines of one (multi-line) reply with "\\n"; it is
        "" when the server closed the connection
"""

from __future__ import annotations

import socket


class Raw:
    """A byte-level client: send exactly what a test says, read replies."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode()
            if not line:
                break
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                break
        return "\n".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> str:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.sock.close()
