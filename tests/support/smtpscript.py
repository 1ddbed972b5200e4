"""A scripted SMTP/LMTP server for tests of the smtp client.

It listens on a free loopback port (or a UNIX-domain socket), answers each
command from a small script, and records what it received:

    server = ScriptServer(greeting="220 mx.test ESMTP",
                          rcpt={"bad@example.com": "550 5.1.1 <bad@example.com>: unknown user"})
    with server:
        ... deliver to 127.0.0.1:server.port ...
    server.messages   # [{"mail": "MAIL FROM:<a@b> SIZE=12", "rcpts": [...], "data": b"...",
                      #   "ended": True}]   (False: the connection ended inside the data)

Options: greeting; extensions (EHLO keywords, default PIPELINING, SIZE,
8BITMIME, DSN, ENHANCEDSTATUSCODES); ehlo_reply (refuse EHLO); mail (reply
to MAIL); rcpt (address -> reply); data_reply (reply to DATA); end_reply
(reply after the content); lmtp (LHLO, and one reply per recipient after the
content: lmtp_replies address -> reply); host ("127.0.0.1" or another
loopback address); unix_path (listen there instead); max_rcpts (accept at
most this many RCPTs per transaction, then "452 4.5.3 Error: too many
recipients"); hold (address -> threading.Event: a transaction with that
accepted recipient gets no answer to its content until the event is set,
at most HOLD_LIMIT seconds; `holding` lists the addresses held now).
Every command line is kept in `commands`.
"""

from __future__ import annotations

import os
import socket
import socketserver
import threading

HOLD_LIMIT = 30.0       # seconds a held transaction waits for its release at most


class ScriptServer:
    def __init__(self, greeting: str = "220 mx.test ESMTP", extensions: list[str] | None = None,
                 ehlo_reply: str | None = None, mail: str = "250 2.1.0 Ok",
                 rcpt: dict[str, str] | None = None, data_reply: str = "354 End data with <CR><LF>.<CR><LF>",
                 end_reply: str = "250 2.0.0 Ok: queued as TEST1", lmtp: bool = False,
                 lmtp_replies: dict[str, str] | None = None, host: str = "127.0.0.1",
                 port: int = 0, unix_path: str | None = None,
                 max_rcpts: int | None = None,
                 hold: dict[str, threading.Event] | None = None) -> None:
        self.greeting = greeting
        self.extensions = extensions if extensions is not None else \
            ["PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES"]
        self.ehlo_reply = ehlo_reply
        self.mail = mail
        self.rcpt = {k.lower(): v for k, v in (rcpt or {}).items()}
        self.data_reply = data_reply
        self.end_reply = end_reply
        self.lmtp = lmtp
        self.lmtp_replies = {k.lower(): v for k, v in (lmtp_replies or {}).items()}
        self.commands: list[str] = []
        self.messages: list[dict] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        self.unix_path = unix_path
        self.max_rcpts = max_rcpts
        self.hold = {k.lower(): v for k, v in (hold or {}).items()}
        self.holding: list[str] = []
        handler = self._handler_class()
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self.server = socketserver.ThreadingUnixStreamServer(unix_path, handler)
        else:
            socketserver.ThreadingTCPServer.allow_reuse_address = True
            self.server = socketserver.ThreadingTCPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = 0 if unix_path else self.server.server_address[1]
        self.host = host

    def __enter__(self) -> "ScriptServer":
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        for conn in self._open:        # sessions still open end with the server
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _handler_class(self):
        script = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                script.connections += 1
                script._open.append(self.connection)
                script._session(self.rfile, self.wfile)
        return Handler

    # -- one session -------------------------------------------------------
    def _session(self, rfile, wfile) -> None:
        def say(text: str) -> None:
            wfile.write(text.encode() + b"\r\n")
            wfile.flush()

        say(self.greeting)
        if not self.greeting.startswith("2"):
            rfile.readline()
            return
        txn = None
        while True:
            line = rfile.readline()
            if not line:
                return
            cmd = line.decode("utf-8", "replace").rstrip("\r\n")
            self.commands.append(cmd)
            verb = cmd.split(" ", 1)[0].upper()
            if verb in ("EHLO", "LHLO"):
                if self.ehlo_reply:
                    say(self.ehlo_reply)
                    continue
                lines = ["mx.test", *self.extensions]
                for i, text in enumerate(lines):
                    say(f"250{' ' if i == len(lines) - 1 else '-'}{text}")
            elif verb == "HELO":
                say("250 mx.test")
            elif verb == "MAIL":
                txn = {"mail": cmd, "rcpts": [], "accepted": []}
                say(self.mail)
                if not self.mail.startswith("2"):
                    txn = None
            elif verb == "RCPT":
                addr = cmd.split(":", 1)[1].split(">", 1)[0].lstrip(" <").lower()
                reply = self.rcpt.get(addr, "250 2.1.5 Ok")
                if txn is not None and self.max_rcpts is not None \
                        and len(txn["accepted"]) >= self.max_rcpts:
                    reply = "452 4.5.3 Error: too many recipients"
                if txn is None:
                    say("503 5.5.1 Error: need MAIL command")
                    continue
                txn["rcpts"].append(cmd)
                if reply.startswith("2"):
                    txn["accepted"].append(addr)
                say(reply)
            elif verb == "DATA":
                if txn is None or not txn["accepted"]:
                    say("554 5.5.1 Error: no valid recipients")
                    continue
                say(self.data_reply)
                if not self.data_reply.startswith("3"):
                    continue
                txn["data"], txn["ended"] = self._read_data(rfile)
                self.messages.append(txn)
                if not txn["ended"]:
                    return          # the client broke off the data: nobody to answer
                self._hold(txn["accepted"])
                if self.lmtp:
                    for addr in txn["accepted"]:
                        say(self.lmtp_replies.get(addr, f"250 2.0.0 <{addr}> delivered"))
                else:
                    say(self.end_reply)
                txn = None
            elif verb == "RSET":
                txn = None
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 Error: command not recognized")

    def _hold(self, accepted: list[str]) -> None:
        """_hold - keep the client waiting while a held recipient's event is clear."""
        for addr in accepted:
            if addr in self.hold:
                self.holding.append(addr)
                try:
                    self.hold[addr].wait(HOLD_LIMIT)
                finally:
                    self.holding.remove(addr)

    @staticmethod
    def _read_data(rfile) -> tuple[bytes, bool]:
        """_read_data - the content, and whether it ended with the final dot."""
        lines = []
        while True:
            line = rfile.readline()
            if not line or line == b".\r\n":
                return b"".join(lines), bool(line)
            if line.startswith(b".."):
                line = line[1:]
            lines.append(line)

