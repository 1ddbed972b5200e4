"""A before-queue content filter program (SMTPD_PROXY_README), for tests.

A real SMTP proxy run as its own process: it listens on one port, takes the
transaction an smtpd relays to it, and passes it on over SMTP to a second
smtpd (the re-injection smtpd) command by command, answering each command
with the downstream's reply, as a transparent proxy filter does. At the
end of the data it judges the message:

  * content holding the reject marker: `550 5.7.1 …`, the downstream
    transaction is reset, nothing is re-injected;
  * content holding the stall marker: no answer for --stall seconds (the
    upstream's smtpd_proxy_timeout is the test), then 451, nothing re-injected;
  * anything else: re-injected, and the downstream's reply (`250 … queued
    as ID`) is the answer.

It announces XFORWARD and passes the attributes it gets on downstream. Every
command it receives and every connection is written to --journal, one line
each (`connect`, `MAIL FROM:<…>`, `DATA-END`, …), so a test can see when
the smtpd connected and what it sent.

    python3 -m tests.support.proxyfilter --listen 127.0.0.1:PORT \
        --downstream 127.0.0.1:PORT2 --journal FILE [--marker M] [--stall-marker S]
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import threading
import time

GREETING = "220 filter.test ESMTP test before-queue filter"
EHLO_LINES = ["250-filter.test", "250-PIPELINING", "250-8BITMIME",
              "250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT", "250 ENHANCEDSTATUSCODES"]
REJECTED = "550 5.7.1 Message content rejected by the test filter"


class Downstream:
    """The SMTP connection to the re-injection smtpd."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=60)
        self.file = self.sock.makefile("rb")
        self.reply()                                # the greeting

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                return "421 4.4.2 downstream closed the connection"
            lines.append(line)
            if line[3:4] != "-":
                return "\r\n".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return self.reply()

    def close(self) -> None:
        try:
            self.command("QUIT")
        except OSError:
            pass
        self.sock.close()


class FilterSession(socketserver.StreamRequestHandler):
    """One connection from the before-filter smtpd."""

    server: FilterServer

    def send(self, text: str) -> None:
        self.wfile.write(text.encode("utf-8", "surrogateescape") + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        self.server.journal("connect")
        self.down: Downstream | None = None
        self.xforward: list[str] = []
        self.send(GREETING)
        try:
            self.converse()
        finally:
            if self.down is not None:
                self.down.close()
            self.server.journal("disconnect")

    def converse(self) -> None:
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            self.server.journal(line)
            verb = line.split(" ", 1)[0].upper()
            if verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            self.send(self.answer(verb, line))

    def answer(self, verb: str, line: str) -> str:
        if verb in ("EHLO", "HELO"):
            return "\r\n".join(EHLO_LINES) if verb == "EHLO" else "250 filter.test"
        if verb == "XFORWARD":
            self.xforward.append(line)
            return "250 2.0.0 Ok"
        if verb == "MAIL":
            self.down = self.down or self.connect_downstream()
            return self.down.command(line)
        if verb in ("RCPT", "RSET", "NOOP") and self.down is not None:
            return self.down.command(line)
        if verb == "DATA" and self.down is not None:
            self.send("354 End data with <CR><LF>.<CR><LF>")
            return self.judge(self.read_data())
        return "250 2.0.0 Ok" if verb in ("RSET", "NOOP") else "503 5.5.1 Error: bad sequence"

    def connect_downstream(self) -> Downstream:
        down = Downstream(self.server.downstream)
        down.command("EHLO filter.test")
        for line in self.xforward:
            down.command(line)
        return down

    def read_data(self) -> bytes:
        """read_data - the message as it came, dot-stuffed lines and all."""
        lines = []
        while True:
            raw = self.rfile.readline()
            if raw in (b".\r\n", b""):
                self.server.journal("DATA-END")
                return b"".join(lines)
            lines.append(raw)

    def judge(self, data: bytes) -> str:
        assert self.down is not None
        self.server.keep(data)
        if self.server.stall_marker and self.server.stall_marker in data:
            time.sleep(self.server.stall)
            self.down.command("RSET")       # too late: the upstream has given up
            return "451 4.3.0 the test filter was too slow"
        if self.server.marker and self.server.marker in data:
            self.down.command("RSET")
            return REJECTED
        reply = self.down.command("DATA")
        if not reply.startswith("354"):
            return reply
        self.down.sock.sendall(data + b".\r\n")
        return self.down.reply()


class FilterServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args: argparse.Namespace) -> None:
        host, port = args.listen.rsplit(":", 1)
        super().__init__((host, int(port)), FilterSession)
        down_host, down_port = args.downstream.rsplit(":", 1)
        self.downstream = (down_host, int(down_port))
        self.marker = args.marker.encode() if args.marker else b""
        self.stall_marker = args.stall_marker.encode() if args.stall_marker else b""
        self.stall = args.stall
        self.journal_path = args.journal
        self.lock = threading.Lock()
        self.count = 0

    def journal(self, line: str) -> None:
        with self.lock, open(self.journal_path, "a") as f:
            f.write(line + "\n")

    def keep(self, data: bytes) -> None:
        """keep - the message as the filter got it, beside the journal."""
        with self.lock:
            self.count += 1
            with open(f"{self.journal_path}.{self.count}", "wb") as f:
                f.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--downstream", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--marker", default="")
    parser.add_argument("--stall-marker", default="")
    parser.add_argument("--stall", type=float, default=30.0)
    server = FilterServer(parser.parse_args())
    server.serve_forever()


if __name__ == "__main__":
    main()
