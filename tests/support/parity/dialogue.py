"""A raw SMTP client that plays the same byte-exact dialogue to any server.

Unlike smtplib it sends exactly what it is given (NUL bytes, 8-bit, overlong
lines, BDAT chunks) and returns every reply whole, so the replies of two
servers can be compared line by line.

    replies = play(port, [b"EHLO client.example", b"MAIL FROM:bad", b"QUIT"])
    replies[0]            # the greeting; then one reply per step
    # a reply is a list of lines without CRLF; [CLOSED] when the server hung up

Interface:
    play(port, steps, host="127.0.0.1") -> list[list[str]]
    Step: bytes sent with CRLF appended, or Raw(bytes) sent as is and
    expecting a reply, or Raw(bytes, reply=False) that expects none.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

CLOSED = "[CLOSED]"
TIMEOUT = 15.0


@dataclass
class Raw:
    data: bytes
    reply: bool = True


def play(port: int, steps: list, host: str = "127.0.0.1") -> list[list[str]]:
    """play - connect, read the greeting, send each step and read its reply."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        replies = [read_reply(reader)]
        for step in steps:
            if replies[-1] == [CLOSED]:
                break
            raw = step if isinstance(step, Raw) else Raw(step + b"\r\n")
            try:
                sock.sendall(raw.data)
            except OSError:
                replies.append([CLOSED])
                break
            if raw.reply:
                replies.append(read_reply(reader))
        return replies


def read_reply(reader) -> list[str]:
    """read_reply - the lines of one (possibly multi-line) reply, or [CLOSED]."""
    lines: list[str] = []
    while True:
        try:
            line = reader.readline()
        except OSError:
            line = b""
        if not line:
            return lines + [CLOSED] if lines else [CLOSED]
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return lines
