"""One SMTP or LMTP connection: connecting, replies, the greeting and EHLO.

A Session owns a socket to one Host. It reads replies (RFC 5321 4.2,
multi-line included) under the phase's time limit, and turns every I/O
failure into a SessionError whose reason is worded as Postfix words it
("lost connection with H[A] while sending RCPT TO", "conversation with
H[A] timed out while receiving the initial server greeting", "connect to
H[A]:25: Connection refused"). The mail transaction itself is in
transaction.py; a Session stays usable for the next one (connection
cache) until it is closed or broken.

Greeting (Postfix's rules): a 2xx greeting goes on to EHLO; 4xx means
"try the next host"; 5xx also tries the next host while
smtp_skip_5xx_greeting = yes, and fails the recipients otherwise.
EHLO is sent (smtp_always_send_ehlo), HELO when EHLO is refused or
smtp_never_send_ehlo = yes; LMTP always sends LHLO (RFC 2033).

Interface:
    Session(host, settings, helo_name=None)
    session.connect()                    raises SessionError
    session.handshake() -> None          greeting + EHLO/HELO/LHLO; sets .features
    session.send(data: bytes, phase) / session.read_reply(timeout_name, phase) -> Reply
    session.command(line, timeout_name, phase) -> Reply
    session.features: dict (EHLO keywords), session.esmtp: bool
    session.tls ("" or Verified/Trusted/Untrusted, set by tls.py), session.sasl_user
    session.size_limit -> int | None, session.close(quit=True)
    session.usable, session.created, session.uses, session.label (its endpoint label)
    session.props() -> dict / Session.adopt(fd, props, settings)   a session handed
        to scache and taken back, maybe by another process (cache.py)
    session.detach()                     close our end without QUIT (scache holds a copy)
    SessionError(reason, dsn, reply=None): .soft
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import BinaryIO

from services.smtp.dns import Host
from services.smtp.reply import Reply, ReplyError, refused, said
from services.smtp.settings import Settings

MAX_LINE = 8192          # longer reply lines are cut (RFC 5321 allows 512)
MAX_LINES = 1000         # lines in one reply


class SessionError(Exception):
    """The session failed; every recipient still pending shares REASON."""

    def __init__(self, reason: str, dsn: str, reply: Reply | None = None,
                 site: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn
        self.reply = reply
        self.site = site           # the host failed (try the next one), not the mail

    @property
    def soft(self) -> bool:
        return not self.dsn.startswith("5")


class Session:
    """A connection to one SMTP/LMTP server."""

    def __init__(self, host: Host, settings: Settings, helo_name: str | None = None) -> None:
        self.host = host
        self.settings = settings
        self.helo_name = helo_name or settings.helo_name
        self.sock: socket.socket | None = None
        self._rfile: BinaryIO | None = None
        self.features: dict[str, str] = {}
        self.esmtp = False
        self.usable = False
        self.tls = ""              # "" or how STARTTLS ended: Verified, Trusted, Untrusted
        self.sasl_user: str | None = None
        self.created = time.monotonic()
        self.idle_since = self.created
        self.uses = 0
        self.label = ""            # the endpoint label it is cached under (cache.py)

    # -- handing over ------------------------------------------------------
    def props(self) -> dict:
        """props - what another process needs to go on with this connection.

        `created` is CLOCK_MONOTONIC, which every process on the host shares."""
        h = self.host
        return {"name": h.name, "addr": h.addr, "port": h.port, "pref": h.pref,
                "unix": h.unix, "helo": self.helo_name, "esmtp": self.esmtp,
                "features": self.features, "sasl_user": self.sasl_user,
                "created": self.created, "uses": self.uses}

    @classmethod
    def adopt(cls, fd: int, props: dict, settings: Settings) -> "Session":
        """adopt - a usable session on the connection FD, as props() described it."""
        host = Host(str(props.get("name", "")), str(props.get("addr", "")),
                    int(props.get("port", 0)), pref=int(props.get("pref", 0)),
                    unix=bool(props.get("unix")))
        session = cls(host, settings, str(props.get("helo") or "") or None)
        sock = socket.socket(fileno=fd)
        sock.setblocking(True)
        session.sock, session._rfile = sock, sock.makefile("rb")
        session.esmtp = bool(props.get("esmtp"))
        features = props.get("features")
        session.features = dict(features) if isinstance(features, dict) else {}
        session.sasl_user = props.get("sasl_user") or None
        session.created = float(props.get("created", session.created))
        session.uses = int(props.get("uses", 0))
        session.usable = True
        return session

    def detach(self) -> None:
        """detach - close this process's end without a word to the server."""
        self.close(quit=False)

    # -- connecting --------------------------------------------------------
    def connect(self) -> None:
        """connect - open the TCP or UNIX-domain connection."""
        timeout = self.settings.timeouts["connect"]
        where: str | tuple[str, int]
        if self.host.unix:
            family, where = socket.AF_UNIX, self.host.addr
        else:
            family = socket.AF_INET6 if ":" in self.host.addr else socket.AF_INET
            where = (self.host.addr, self.host.port)
        sock = None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(where)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as e:
            if sock is not None:
                sock.close()
            raise SessionError(self._connect_reason(e), "4.4.1") from None
        self.sock = sock
        self._rfile = sock.makefile("rb")

    def _connect_reason(self, e: OSError) -> str:
        where = self.host.namaddr if self.host.unix else f"{self.host.namaddr}:{self.host.port}"
        if isinstance(e, socket.timeout):
            text = "Connection timed out"
        else:
            text = e.strerror or os.strerror(e.errno or errno.EIO)
        return f"connect to {where}: {text}"

    # -- I/O ---------------------------------------------------------------
    def send(self, data: bytes, phase: str, timeout_name: str = "mail") -> None:
        """send - write DATA; a failure is a SessionError for PHASE."""
        assert self.sock is not None  # connect() opened it
        try:
            self.sock.settimeout(self.settings.timeouts.get(timeout_name))
            self.sock.sendall(data)
        except OSError as e:
            raise self._io_error(e, phase) from None

    def read_reply(self, timeout_name: str, phase: str) -> Reply:
        """read_reply - one complete reply, within smtp_TIMEOUT_NAME_timeout."""
        lines: list[str] = []
        assert self.sock is not None and self._rfile is not None  # connect() opened them
        try:
            self.sock.settimeout(self.settings.timeouts.get(timeout_name))
            while True:
                raw = self._rfile.readline(MAX_LINE)
                if not raw:
                    raise ConnectionResetError(errno.ECONNRESET, "lost connection")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                code, last, _ = Reply.parse_line(line)
                if len(lines) < MAX_LINES:
                    lines.append(line)
                if last:
                    return Reply(code, lines)
        except ReplyError as e:
            self.usable = False
            raise SessionError(f"host {self.host.namaddr} said: {e} "
                               f"(while {phase})", "4.5.0") from None
        except OSError as e:
            raise self._io_error(e, phase) from None

    def command(self, line: str, timeout_name: str, phase: str) -> Reply:
        """command - send LINE and read its reply."""
        self.send(line.encode("utf-8", "surrogateescape") + b"\r\n", phase, timeout_name)
        return self.read_reply(timeout_name, phase)

    def _io_error(self, e: OSError, phase: str) -> SessionError:
        self.usable = False
        if isinstance(e, socket.timeout):
            return SessionError(f"conversation with {self.host.namaddr} timed out "
                                f"while {phase}", "4.4.2")
        return SessionError(f"lost connection with {self.host.namaddr} while {phase}",
                            "4.4.2")

    # -- greeting and hello ------------------------------------------------
    def handshake(self) -> None:
        """handshake - read the greeting, then EHLO (or HELO, or LHLO)."""
        greeting = self.read_reply("helo", "receiving the initial server greeting")
        if greeting.code // 100 != 2:
            self._greeting_failed(greeting)
        if self.settings.lmtp:
            self._hello("LHLO")
        elif self.settings.never_send_ehlo:
            self._hello("HELO")
        elif self.settings.always_send_ehlo or "ESMTP" in greeting.text.upper():
            self._hello("EHLO", fallback=True)
        else:
            self._hello("HELO")
        self.usable = True

    def _greeting_failed(self, greeting: Reply) -> None:
        reason = refused(self.host.namaddr, greeting)
        if greeting.code // 100 == 5 and not self.settings.skip_5xx_greeting:
            raise SessionError(reason, greeting.dsn, greeting, site=False)
        # Skipped: the next host may do better; the mail is not refused.
        dsn = greeting.dsn
        raise SessionError(reason, "4" + dsn[1:] if dsn[0] == "5" else dsn, greeting)

    def _hello(self, verb: str, fallback: bool = False) -> None:
        reply = self.command(f"{verb} {self.helo_name}", "helo",
                             f"performing the {verb} handshake")
        if reply.code // 100 == 2:
            self.esmtp = verb != "HELO"
            self.features = reply.keywords() if self.esmtp else {}
            return
        if fallback and reply.code // 100 == 5:
            return self._hello("HELO")
        raise SessionError(said(self.host.namaddr, reply, verb), reply.dsn, reply,
                           site=reply.code // 100 == 4)

    @property
    def size_limit(self) -> int | None:
        """size_limit - the server's SIZE limit (RFC 1870), None when unknown or 0."""
        value = self.features.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    def has(self, keyword: str) -> bool:
        return keyword in self.features

    # -- ending ------------------------------------------------------------
    def close(self, quit: bool = True) -> None:
        """close - say QUIT (without waiting, as smtp_skip_quit_response) and close."""
        if self.sock is None:
            return
        assert self._rfile is not None  # opened with sock
        if quit and self.usable:
            try:
                self.sock.settimeout(self.settings.timeouts["quit"])
                self.sock.sendall(b"QUIT\r\n")
                if not self.settings.skip_quit_response:
                    self._rfile.readline(MAX_LINE)
            except OSError:
                pass
        self.usable = False
        try:
            self._rfile.close()
            self.sock.close()
        except OSError:
            pass
        self.sock = None
