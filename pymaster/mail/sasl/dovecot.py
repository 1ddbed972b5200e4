"""The Dovecot authentication protocol, client side (smtpd_sasl_type = dovecot).

Dovecot's auth service listens on a UNIX socket (smtpd_sasl_path, relative
to queue_directory as Postfix has it: `private/auth`, or `unix:private/auth`)
or on TCP (`inet:host:port`, `inet:[ipv6]:port`). The client says
`VERSION 1 1` and `CPID pid`; the server answers VERSION, one MECH line per
mechanism (with its properties: plaintext, dictionary, anonymous, active,
forward-secrecy, mutual-auth, private), SPID, CUID, COOKIE and DONE. An
authentication is `AUTH id mech service=smtp nologin lip= rip= [secured]
[resp=base64]`, answered by `CONT id base64` (send another `CONT id
base64`), `OK id user=NAME` or `FAIL id [reason=TEXT]`. Fields are tab
separated; values escape tab, newline and backslash (\\t \\n \\\\, \\1 for
tab in older servers).

One connection per authentication keeps the smtpd side simple; the
mechanism list is fetched when the server is opened and refreshed later.

Interface:
    DovecotServer(path, service="smtp")
    endpoint(path) -> ("unix", path, 0) | ("inet", host, port)   smtpd_sasl_path
    .fetch_mechanisms() -> None        (blocking; before the jail, at start)
    .mechanisms(options) -> list[str]  (cached)
    .conversation(mech, info) -> DovecotConversation  (info: client_addr, local_addr, secured)
    await .refresh()                   fetch the list again (asyncio)
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import socket
import time

from pymaster.mail.sasl.mechanisms import allowed
from pymaster.mail.sasl.steps import CHALLENGE, FAIL, FAILURE_REASON, OK, SaslError, Step

TIMEOUT = 10.0
_ids = itertools.count(1)


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append({"t": "\t", "n": "\n", "1": "\t", "r": "\r"}.get(value[i + 1], value[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_handshake(lines: list[str]) -> dict[str, set[str]]:
    """parse_handshake - {mechanism: properties} from the server's lines up to DONE."""
    mechs: dict[str, set[str]] = {}
    version_ok = False
    for line in lines:
        fields = line.split("\t")
        if fields[0] == "VERSION":
            if len(fields) < 2 or fields[1] != "1":
                raise SaslError(f"authentication server protocol version {fields[1:]} "
                                "is not supported")
            version_ok = True
        elif fields[0] == "MECH" and len(fields) >= 2:
            mechs[fields[1].upper()] = {f.lower() for f in fields[2:]}
    if not version_ok:
        raise SaslError("authentication server sent no VERSION")
    return mechs


def _hello() -> bytes:
    return f"VERSION\t1\t1\nCPID\t{os.getpid()}\n".encode()


def endpoint(path: str) -> tuple[str, str, int]:
    """endpoint - smtpd_sasl_path as ("unix", path, 0) or ("inet", host, port)."""
    path = path.strip()
    kind, colon, rest = path.partition(":")
    if colon and kind == "inet":
        host, _, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not host or not port.isdigit():
            raise SaslError(f"bad smtpd_sasl_path: {path}: need inet:host:port")
        return "inet", host, int(port)
    if colon and kind == "unix":
        return "unix", rest, 0
    return "unix", path, 0


def _open(path: str) -> socket.socket:
    """_open - a blocking connected socket to the auth server at PATH."""
    kind, where, port = endpoint(path)
    if kind == "inet":
        return socket.create_connection((where, port), timeout=TIMEOUT)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(TIMEOUT)
        sock.connect(where)
    except OSError:
        sock.close()
        raise
    return sock


async def _open_async(path: str):
    """_open_async - asyncio streams to the auth server at PATH."""
    kind, where, port = endpoint(path)
    if kind == "inet":
        return await asyncio.open_connection(where, port)
    return await asyncio.open_unix_connection(where)


class DovecotServer:
    REFRESH = 60.0

    def __init__(self, path: str, service: str = "smtp") -> None:
        self.path = path.strip()
        self.service = service or "smtp"
        self.mechs: dict[str, set[str]] = {}
        self.fetched = 0.0

    # -- the mechanism list ----------------------------------------------------
    def fetch_mechanisms(self) -> None:
        """fetch_mechanisms - connect, handshake, remember the MECH lines (blocking)."""
        lines: list[str] = []
        try:
            with _open(self.path) as sock:
                sock.sendall(_hello())
                f = sock.makefile("rb")
                while True:
                    raw = f.readline(65536)
                    if not raw:
                        raise SaslError(f"{self.path}: authentication server closed the connection")
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    if line == "DONE":
                        break
                    lines.append(line)
        except OSError as e:
            raise SaslError(f"connect to Dovecot auth socket '{self.path}' failed: "
                            f"{e.strerror or e}") from None
        self.mechs = parse_handshake(lines)
        self.fetched = time.monotonic()

    async def refresh(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.fetch_mechanisms)

    def stale(self) -> bool:
        return not self.mechs or time.monotonic() - self.fetched > self.REFRESH

    def mechanisms(self, options: set[str]) -> list[str]:
        return [m for m, props in self.mechs.items()
                if "private" not in props and allowed(m, options, props)]

    def conversation(self, mech: str, info: dict | None = None) -> "DovecotConversation":
        return DovecotConversation(self, mech.upper(), info or {})


class DovecotConversation:
    """One AUTH exchange over its own connection to the auth server."""

    def __init__(self, server: DovecotServer, mech: str, info: dict) -> None:
        self.server = server
        self.mech = mech
        self.info = info
        self.id = str(next(_ids))
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                _open_async(self.server.path), TIMEOUT)
            assert self.writer is not None
            self.writer.write(_hello())
            lines = []
            while True:
                line = await self._line()
                if line == "DONE":
                    break
                lines.append(line)
        except (OSError, asyncio.TimeoutError) as e:
            raise SaslError(f"connect to Dovecot auth socket '{self.server.path}' failed: "
                            f"{getattr(e, 'strerror', None) or e or 'timeout'}") from None
        self.server.mechs = parse_handshake(lines)
        self.server.fetched = time.monotonic()

    async def _line(self) -> str:
        assert self.reader is not None  # _connect opened it
        raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
        if not raw:
            raise SaslError("authentication server closed the connection")
        return raw.decode("utf-8", "replace").rstrip("\n")

    async def start(self, initial: bytes | None) -> Step:
        await self._connect()
        fields = ["AUTH", self.id, self.mech, f"service={escape(self.server.service)}", "nologin"]
        if self.info.get("local_addr"):
            fields.append(f"lip={escape(self.info['local_addr'])}")
        if self.info.get("client_addr"):
            fields.append(f"rip={escape(self.info['client_addr'])}")
        if self.info.get("secured"):
            fields.append("secured")
        if initial is not None:
            fields.append(f"resp={base64.b64encode(initial).decode()}")
        return await self._send("\t".join(fields))

    async def respond(self, data: bytes) -> Step:
        return await self._send(f"CONT\t{self.id}\t{base64.b64encode(data).decode()}")

    async def _send(self, line: str) -> Step:
        assert self.writer is not None  # start() connected
        try:
            self.writer.write(line.encode() + b"\n")
            await self.writer.drain()
            while True:
                answer = (await self._line()).split("\t")
                if len(answer) >= 2 and answer[1] == self.id:
                    break
        except (OSError, asyncio.TimeoutError):
            self.close()
            raise SaslError("lost connection to the authentication server") from None
        return self._step(answer)

    def _step(self, answer: list[str]) -> Step:
        kind = answer[0]
        params = dict(f.partition("=")[::2] for f in answer[2:])
        if kind == "CONT":
            try:
                data = base64.b64decode(answer[2] if len(answer) > 2 else "")
            except ValueError:
                data = b""
            return Step(CHALLENGE, data)
        self.close()
        if kind == "OK":
            return Step(OK, user=unescape(params.get("user", "")))
        if kind == "FAIL":
            return Step(FAIL, reason=unescape(params.get("reason", "")) or FAILURE_REASON)
        raise SaslError(f"unexpected reply from the authentication server: {kind}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
