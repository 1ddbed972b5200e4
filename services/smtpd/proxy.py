"""The before-queue content filter: smtpd as an SMTP client of a proxy filter.

With `smtpd_proxy_filter` set (Postfix's SMTPD_PROXY_README), smtpd queues
nothing itself: it relays each transaction over SMTP to the filter, which
re-injects the mail into another smtpd (or refuses it), and the client gets
the filter's replies. smtpd's own restrictions run first; a command they
refuse never reaches the filter. As Postfix 3.7 does (checked side by side):

  * the filter is connected at the transaction's first accepted RCPT (when
    Postfix's smtpd would open its cleanup stream), not at the client's
    connect nor at MAIL: EHLO `$smtpd_proxy_ehlo`, XFORWARD with the
    client's attributes when the filter announces it, then the saved MAIL
    command and the RCPT; the filter's reply to that RCPT is the client's
    (a refused MAIL's reply too). `NOQUEUE: client=NAME[ADDR]` is logged
    then, as no queue ID exists;
  * DATA goes to the filter first; its content streams to the filter as
    it arrives, behind smtpd's Received: header (no `id` clause: there is
    no queue file), dot-stuffed again; the filter's answer to the final
    `.` is the client's, logged as `proxy-accept: END-OF-MESSAGE: …` or
    `proxy-reject: END-OF-MESSAGE: …`; one connection per transaction,
    closed with QUIT;
  * `smtpd_proxy_options = speed_adjust`: RCPT is answered by smtpd, the
    whole message is received first, and the filter is connected only
    after the client's `.`, to replay MAIL, every RCPT and DATA (the
    message is held in memory, within message_size_limit, where Postfix
    writes a temporary file);
  * a filter that cannot be reached, times out (`smtpd_proxy_timeout`, per
    connect, read and write) or breaks the protocol: a warning
    (`connect to proxy filter SERVICE: REASON`, `timeout talking to proxy
    SERVICE`, `lost connection with proxy SERVICE`) and, for the client,
    only `451 4.3.0 Error: queue file write error`: internal details are
    not for strangers.

A transaction that ends any other way (RSET, a refusal, a lost client)
closes the filter connection without the final `.`, so the filter queues
nothing.

`smtpd_proxy_filter` is `host:port`, `inet:host:port` (no host: the local
machine; no MX lookup) or `unix:pathname` (relative to the queue
directory, which is smtpd's working directory, in the jail or not).

Interface:
    ProxySettings.from_config(cfg) -> ProxySettings | None   (None: no filter)
    Transaction(settings, mail_line)    one SMTP transaction through the filter
        await .recipient(session, rcpt_line) -> reply for the client's RCPT
        await .begin_data(session) -> "" or the refusal of DATA
        await .stream_content(content)   pass what has arrived (the bytearray is emptied)
        await .finish(session, content) -> the reply to the client's `.`
        .close()                      drop the connection (nothing is queued)
    ProxyError        the filter failed; str() is the warning to log
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from pymaster.mail.config import Config
from pymaster.mail.dsn import xtext_encode
from pymaster.util import log
from services.smtpd import replies
from services.smtpd.rewrite_context import header_rewrite_context

UNAVAILABLE = "[UNAVAILABLE]"
# XFORWARD attributes in the order Postfix sends them.
XFORWARD_ORDER = ("NAME", "ADDR", "PORT", "HELO", "IDENT", "PROTO", "SOURCE")
XFORWARD_LINE_LIMIT = 510  # a command line with its CRLF is at most 512 bytes
MAX_REPLY_LINES = 100       # a filter that never ends its reply is broken
LINE_LIMIT = 65536


class ProxyError(Exception):
    """The filter failed: str() is the warning for the log."""


@dataclass
class ProxySettings:
    """smtpd_proxy_filter and friends, read once per process."""
    service: str            # as configured: it names the filter in warnings
    speed_adjust: bool
    timeout: float
    ehlo: str

    @classmethod
    def from_config(cls, cfg: Config) -> "ProxySettings | None":
        service = cfg.get("smtpd_proxy_filter").strip()
        if not service:
            return None
        options = [o.lower() for o in cfg.list("smtpd_proxy_options")]
        for option in options:
            if option != "speed_adjust":
                log.warning(f'unknown smtpd_proxy_options value "{option}"')
        return cls(service, "speed_adjust" in options,
                   float(cfg.time("smtpd_proxy_timeout")), cfg.get("smtpd_proxy_ehlo"))


def parse_service(service: str) -> tuple[str, str, int]:
    """parse_service - ("unix", path, 0) or ("inet", host, port) for smtpd_proxy_filter."""
    if service.startswith("unix:"):
        return "unix", service[5:], 0
    if service.startswith("inet:"):
        service = service[5:]
    host, _, port = service.rpartition(":")
    host = host.strip("[]") or "localhost"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ProxyError(f"bad smtpd_proxy_filter port: {service}")
    return "inet", host, int(port)


def to_wire(data: bytes, line_start: bool) -> tuple[bytes, bool]:
    """to_wire - LF-ended content as SMTP DATA: CRLF line ends, a leading dot
    doubled (RFC 5321 4.5.2); LINE_START says whether DATA begins a line.
    Returns the bytes and whether the next piece begins a line."""
    if not data:
        return b"", line_start
    out = data.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
    if line_start and out[:1] == b".":
        out = b"." + out
    return out, data.endswith(b"\n")


class FilterStream:
    """One SMTP connection to the filter, every wait under smtpd_proxy_timeout."""

    def __init__(self, settings: ProxySettings, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.s = settings
        self.reader = reader
        self.writer = writer
        self.keywords: dict[str, str] = {}
        self.line_start = True

    @classmethod
    async def connect(cls, settings: ProxySettings) -> "FilterStream":
        """connect - the connection, greeted and EHLO'd."""
        try:
            kind, host, port = parse_service(settings.service)
            async with asyncio.timeout(settings.timeout):
                if kind == "unix":
                    reader, writer = await asyncio.open_unix_connection(host, limit=LINE_LIMIT)
                else:
                    reader, writer = await asyncio.open_connection(host, port, limit=LINE_LIMIT)
        except TimeoutError:
            raise ProxyError(f"connect to proxy filter {settings.service}: "
                             f"Connection timed out") from None
        except OSError as e:
            # asyncio's own text names the address again; the system's does not.
            reason = os.strerror(e.errno) if e.errno else str(e)
            raise ProxyError(f"connect to proxy filter {settings.service}: {reason}") from None
        stream = cls(settings, reader, writer)
        try:
            await stream.expect("2", None, "connect")
            stream.keywords = ehlo_keywords(
                await stream.expect("2", f"EHLO {settings.ehlo}", "EHLO"))
        except BaseException:
            stream.close()
            raise
        return stream

    async def expect(self, code: str, line: str | None, what: str) -> str:
        """expect - send LINE (None: only read) and insist on a CODE reply."""
        reply = await self.command(line)
        if not reply.startswith(code):
            raise ProxyError(rejected(self.s.service, what, reply))
        return reply

    async def ask(self, code: str, line: str) -> str:
        """ask - send a command of the client's transaction and return the
        reply; one that is not CODE is logged, as Postfix logs it."""
        reply = await self.command(line)
        if not reply.startswith(code):
            log.warning(rejected(self.s.service, line, reply))
        return reply

    async def command(self, line: str | None) -> str:
        """command - send LINE (None: only read) and return the reply, lines
        joined with CRLF, as the client will get it."""
        if line is not None:
            self.writer.write(line.encode("utf-8", "surrogateescape") + b"\r\n")
        return await self._io(self._reply())

    async def write(self, data: bytes) -> None:
        """write - content (LF line ends) as it arrives, onto the DATA stream."""
        wire, self.line_start = to_wire(data, self.line_start)
        self.writer.write(wire)
        await self._io(self.writer.drain())

    async def end_data(self) -> str:
        """end_data - the final `.`; the filter's verdict."""
        self.writer.write((b"" if self.line_start else b"\r\n") + b".\r\n")
        return await self.command(None)

    async def _io(self, work):
        try:
            async with asyncio.timeout(self.s.timeout):
                return await work
        except TimeoutError:
            raise ProxyError(f"timeout talking to proxy {self.s.service}") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise ProxyError(f"lost connection with proxy {self.s.service}") from None

    async def _reply(self) -> str:
        lines: list[str] = []
        while len(lines) < MAX_REPLY_LINES:
            raw = await self.reader.readuntil(b"\n")
            line = raw.decode("utf-8", "surrogateescape").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or line[0] not in "2345" \
                    or line[3:4] not in ("", " ", "-"):
                raise ProxyError(f"proxy {self.s.service}: malformed reply: "
                                 f"{replies.printable(raw)}")
            lines.append(line)
            if line[3:4] != "-":
                return "\r\n".join(lines)
        raise ProxyError(f"proxy {self.s.service}: reply of more than {MAX_REPLY_LINES} lines")

    def quit(self) -> None:
        """quit - QUIT without waiting for its answer, and close."""
        self.writer.write(b"QUIT\r\n")
        self.close()

    def close(self) -> None:
        self.writer.close()


def rejected(service: str, command: str, reply: str) -> str:
    """rejected - `proxy SERVICE rejected "COMMAND": "REPLY"`."""
    return f'proxy {service} rejected "{command}": "{" ".join(reply.splitlines())}"'


def ehlo_keywords(reply: str) -> dict[str, str]:
    """ehlo_keywords - {"XFORWARD": "NAME ADDR …", "PIPELINING": "", …} from an EHLO reply."""
    out = {}
    for line in reply.splitlines()[1:]:
        word, _, rest = line[4:].partition(" ")
        out[word.upper()] = rest.upper()
    return out


def xforward_values(session) -> dict[str, str]:
    """xforward_values - the client's attributes for XFORWARD (XFORWARD_README):
    what an XFORWARD to this session said, else the session's own client."""
    fwd = session.xforward
    peer = session.peer
    name = fwd.get("NAME") if "NAME" in fwd else peer.name
    addr = fwd.get("ADDR") if "ADDR" in fwd else peer.addr
    port = fwd.get("PORT") if "PORT" in fwd else str(peer.port)
    helo = fwd.get("HELO") if "HELO" in fwd else session.helo
    proto = fwd.get("PROTO") if "PROTO" in fwd else session.protocol
    ident = fwd.get("IDENT") or ""
    source = fwd.get("SOURCE") if "SOURCE" in fwd else \
        header_rewrite_context(session.checker, session.context()).upper()
    return {"NAME": name if name and name != "unknown" else UNAVAILABLE,
            "ADDR": addr or UNAVAILABLE, "PORT": port or UNAVAILABLE,
            "HELO": helo or UNAVAILABLE, "IDENT": ident or UNAVAILABLE,
            "PROTO": proto or UNAVAILABLE, "SOURCE": source or UNAVAILABLE}


def xforward_commands(announced: str, values: dict[str, str]) -> list[str]:
    """xforward_commands - XFORWARD lines with the attributes the filter
    announced (none: no line), each within RFC 5321's 512-byte command line."""
    wanted = set(announced.split())
    pairs = [f"{name}={v if v == UNAVAILABLE else xtext_encode(v)}"
             for name in XFORWARD_ORDER if name in wanted and (v := values[name])]
    lines: list[str] = []
    for pair in pairs:
        if lines and len(lines[-1]) + 1 + len(pair) <= XFORWARD_LINE_LIMIT:
            lines[-1] += " " + pair
        else:
            lines.append("XFORWARD " + pair)
    return lines


class Transaction:
    """One client transaction relayed to the filter."""

    def __init__(self, settings: ProxySettings, mail_line: str) -> None:
        self.s = settings
        self.mail_line = mail_line
        self.rcpt_lines: list[str] = []
        self.stream: FilterStream | None = None
        self.in_data = False
        # The filter failed after it took a recipient: the transaction
        # cannot go on (the filter would miss what the client was told it has).
        self.broken = False

    async def recipient(self, session, rcpt_line: str) -> str:
        """recipient - the reply for the client's RCPT, smtpd's checks passed."""
        if self.s.speed_adjust:
            if not session.rcpts:
                session.log_client("NOQUEUE")
            self.rcpt_lines.append(rcpt_line)
            return replies.OK_RCPT
        if self.broken:
            return replies.ERR_QUEUE_WRITE
        try:
            if self.stream is None:
                refusal = await self._open(session)
                if refusal:
                    self.close()
                    return refusal
                session.log_client("NOQUEUE")
            assert self.stream is not None
            return await self.stream.ask("2", rcpt_line)
        except ProxyError as e:
            return self._failed(e, broken=bool(session.rcpts))

    async def begin_data(self, session) -> str:
        """begin_data - DATA to the filter and smtpd's trace headers onto the
        stream; "" to go on, else the reply that refuses the client's DATA."""
        if self.s.speed_adjust:
            return ""
        try:
            return await self._data(session)
        except ProxyError as e:
            return self._failed(e)

    async def stream_content(self, content: bytearray) -> None:
        """stream_content - pass on what has arrived, and forget it here.

        A failure is remembered: the client's `.` gets the reply for it."""
        if not self.in_data or not content or self.stream is None:
            return
        data = bytes(content)
        content.clear()
        try:
            await self.stream.write(data)
        except ProxyError as e:
            self._failed(e, broken=True)

    async def finish(self, session, content: bytearray) -> str:
        """finish - the rest of the message and the final `.`; the reply for the client."""
        if self.broken:
            return replies.ERR_QUEUE_WRITE
        try:
            refusal = ""
            if self.s.speed_adjust:
                refusal = await self._replay(session)
            elif not self.in_data:      # BDAT: nothing was sent before LAST
                refusal = await self._data(session)
            if refusal:
                return refusal
            assert self.stream is not None
            await self.stream.write(bytes(content))
            reply = await self.stream.end_data()
        except ProxyError as e:
            return self._failed(e, broken=True)
        self.stream.quit()
        self.stream = None
        self.in_data = False
        return reply

    async def _open(self, session) -> str:
        """_open - connect, XFORWARD, MAIL: "" or the filter's refusal of MAIL."""
        stream = await FilterStream.connect(self.s)
        self.stream = stream
        if "XFORWARD" in stream.keywords:
            for line in xforward_commands(stream.keywords["XFORWARD"], xforward_values(session)):
                await stream.expect("2", line, "XFORWARD")
        reply = await stream.ask("2", self.mail_line)
        return "" if reply.startswith("2") else reply

    async def _data(self, session) -> str:
        """_data - DATA, then smtpd's trace headers: "" or the filter's refusal."""
        if self.stream is None:
            raise ProxyError(f"lost connection with proxy {self.s.service}")
        reply = await self.stream.ask("3", "DATA")
        if not reply.startswith("3"):
            self.close()
            return reply
        self.in_data = True
        await self.stream.write(session.trace_headers(""))
        return ""

    async def _replay(self, session) -> str:
        """_replay - speed_adjust: connect, MAIL, every RCPT and DATA after the
        client's `.`; "" or the first refusal (a filter must not refuse only
        some recipients of a message: postconf(5) smtpd_proxy_options)."""
        refusal = await self._open(session) or await self._recipients()
        if refusal:
            self.close()
            return refusal
        return await self._data(session)

    async def _recipients(self) -> str:
        """_recipients - the saved RCPT commands: "" or the first refusal."""
        assert self.stream is not None
        for line in self.rcpt_lines:
            reply = await self.stream.ask("2", line)
            if not reply.startswith("2"):
                return reply
        return ""

    def _failed(self, error: ProxyError, broken: bool = False) -> str:
        log.warning(str(error))
        self.close()
        self.broken = self.broken or broken
        return replies.ERR_QUEUE_WRITE

    def close(self) -> None:
        """close - drop the connection mid-transaction: the filter queues nothing."""
        stream, self.stream = self.stream, None
        self.in_data = False
        if stream is not None:
            stream.close()
