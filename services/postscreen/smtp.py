"""postscreen's own SMTP engine: the deep protocol tests and enforced rejections.

Postfix's postscreen talks SMTP itself to a client that must still pass a
test after the greeting (postscreen_pipelining_enable,
postscreen_non_smtp_command_enable, postscreen_bare_newline_enable) or that
failed a test whose action is enforce. It never accepts mail: RCPT gets the
enforced failure's reply (550 ...) or, when no test failed, `450 4.3.2
Service currently unavailable`, so that a good client comes back later
and, having passed, reaches smtpd from the cache. Each refused RCPT is
logged `NOQUEUE: reject: RCPT from [a]:p: REPLY; from=<s>, to=<r>,
proto=ESMTP, helo=<h>`.

The tests, on each command line:
    bare newline     the line ends in LF without CR        BARE NEWLINE
    non-SMTP command its verb is in postscreen_forbidden_commands (an HTTP
                     request, a header line)               NON-SMTP COMMAND
    pipelining       more input waits behind the command although our
                     EHLO reply offers no PIPELINING       COMMAND PIPELINING
STARTTLS (postscreen_tls_security_level may or encrypt) goes through the
tlsproxy service: the client's connection is passed to it, and the engine
reads and writes plain text over its connection to tlsproxy from then on
(input pipelined after STARTTLS is discarded, RFC 3207 section 4.2).

The deep tests pass when the client, having failed none, reaches RCPT or
says QUIT; postscreen_command_count_limit, postscreen_command_time_limit
and a line longer than LINE_LIMIT end the session.

Interface:
    Engine(session).run()
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import TYPE_CHECKING

from pymaster.master import handoff
from pymaster.util import log
from pymaster.util.tables import TableError, open_table

from . import replies

if TYPE_CHECKING:
    from .session import Session

LINE_LIMIT = 2048
PROXY_TIMEOUT = 10.0    # seconds for tlsproxy to take a client
_ADDR_RE = re.compile(r"^\s*(?:FROM|TO)\s*:\s*<?([^<>\s]*)>?", re.I)


class Engine:
    def __init__(self, session: Session) -> None:
        self.s = session
        self.settings = session.settings
        self.conn = session.conn
        self.where = "CONNECT"           # the last command, for the log lines
        self.helo = ""
        self.proto = "SMTP"
        self.sender: str | None = None
        self.count = 0
        self.deep_ok = False             # reached RCPT or QUIT with no failure
        self.flunked: set[str] = set()   # deep tests failed in this session
        self.forbidden = _forbidden(self.settings.forbidden_commands)
        self.tls = False

    async def run(self) -> None:
        self.start = time.monotonic()
        # A client that already spoke (a pregreet) gets no more greeting:
        # its command is answered as the next thing it reads.
        if not self.s.pregreeted and not await self.conn.send(f"220 {self.settings.banner}"):
            return
        while True:
            line = await self._read_line()
            if line is None:
                break
            if not await self._command(line):
                break
        if self.deep_ok and not self.s.failed:
            for test in self.s.todo - self.s.passed - self.flunked:
                self.s.pass_test(test)

    async def _read_line(self) -> bytes | None:
        """_read_line - the next command line; None when the session ends."""
        deadline = time.monotonic() + self.settings.command_time_limit
        while (line := self.conn.take_line()) is None:
            if len(self.conn.buf) > LINE_LIMIT:
                self._protocol("COMMAND LENGTH LIMIT")
                await self.conn.send(replies.TOO_LONG)
                return None
            try:
                more = await self.conn.fill(deadline - time.monotonic())
            except TimeoutError:
                self._protocol("COMMAND TIME LIMIT")
                await self.conn.send(replies.TIMEOUT.format(host=self.settings.hostname))
                return None
            if not more:
                replies.hangup(time.monotonic() - self.start, self.s.addr, self.s.port, True)
                return None
        return line

    def _protocol(self, what: str, data: bytes | None = None) -> None:
        replies.protocol(what, self.s.addr, self.s.port, self.where, data)

    async def _command(self, line: bytes) -> bool:
        """_command - run the tests on LINE, then answer it; False: session over."""
        self.count += 1
        if not await self._tests(line):
            return False
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        self.where = verb or "UNKNOWN"
        if self.settings.command_count_limit and self.count > self.settings.command_count_limit:
            self._protocol("COMMAND COUNT LIMIT")
            await self.conn.send(replies.TOO_MANY.format(host=self.settings.hostname))
            return False
        handler = getattr(self, f"smtp_{verb.lower()}", None) if verb.isalpha() else None
        if handler is None:
            return await self.conn.send(replies.UNKNOWN)
        return await handler(arg)

    async def _tests(self, line: bytes) -> bool:
        """_tests - the deep tests still due; False when one dropped the client."""
        todo = self.s.todo - self.flunked
        if "barlf" in todo and not line.endswith(b"\r\n"):
            where, self.where = self.where, line.rstrip(b"\r\n").decode("utf-8", "replace")
            self._protocol("BARE NEWLINE")
            self.where = where
            if not await self._act(self.settings.bare_newline_action, replies.PROTOCOL_DROP,
                                   replies.PROTOCOL_ENFORCE, "barlf"):
                return False
        if "nsmtp" in todo and self._is_forbidden(line):
            self._protocol("NON-SMTP COMMAND", line.rstrip(b"\r\n"))
            if not await self._act(self.settings.non_smtp_action, replies.NON_SMTP_DROP,
                                   replies.PROTOCOL_ENFORCE, "nsmtp"):
                return False
        if "pipel" in todo and self.conn.pending():
            where, self.where = self.where, _verb(line)
            self._protocol("COMMAND PIPELINING", bytes(self.conn.buf) or line)
            self.where = where
            if not await self._act(self.settings.pipelining_action, replies.PROTOCOL_DROP,
                                   replies.PROTOCOL_ENFORCE, "pipel"):
                return False
        return True

    async def _act(self, action: str, drop: str, enforce: str, test: str) -> bool:
        self.flunked.add(test)           # not to be passed this session
        if action == "drop":
            await self.conn.send(drop)
            return False
        return await self.s.act(action, drop, enforce)

    def _is_forbidden(self, line: bytes) -> bool:
        text = line.rstrip(b"\r\n").decode("utf-8", "replace")
        verb = text.split(" ", 1)[0].upper()
        for entry in self.forbidden:
            if isinstance(entry, str):
                if verb == entry or (entry.endswith(":") and verb.startswith(entry)):
                    return True
                continue
            try:
                if entry.lookup(text):
                    return True
            except TableError:
                continue
        return False

    # -- the commands --------------------------------------------------------
    async def smtp_helo(self, arg: str) -> bool:
        if not arg.strip():
            return await self.conn.send(replies.BAD_SYNTAX.format(verb="HELO"))
        self.helo, self.proto = arg.strip(), "SMTP"
        return await self.conn.send(f"250 {self.settings.hostname}")

    async def smtp_ehlo(self, arg: str) -> bool:
        if not arg.strip():
            return await self.conn.send(replies.BAD_SYNTAX.format(verb="EHLO"))
        self.helo, self.proto = arg.strip(), "ESMTP"
        lines = [self.settings.hostname]
        if self.settings.size_limit:
            lines.append(f"SIZE {self.settings.size_limit}")
        else:
            lines.append("SIZE")
        if not self.settings.disable_vrfy:
            lines.append("VRFY")
        lines.append("ETRN")
        if self.settings.tls_level != "none" and not self.tls:
            lines.append("STARTTLS")
        lines += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
        lines = lines[:1] + self._keep(lines[1:])
        text = "\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}"
        return await self.conn.send(text)

    def _keep(self, keywords: list[str]) -> list[str]:
        """_keep - the EHLO keywords postscreen_discard_ehlo_keywords leaves;
        what it takes is logged unless the list says silent-discard."""
        discard = self.settings.discard_ehlo
        if not discard:
            return keywords
        gone = [k for k in keywords if k.split()[0].lower() in discard]
        if gone and "silent-discard" not in discard:
            log.info(f"discarding EHLO keywords: {' '.join(k.split()[0] for k in gone)}")
        return [k for k in keywords if k not in gone]

    async def smtp_mail(self, arg: str) -> bool:
        if self.settings.helo_required and not self.helo:
            return await self.conn.send(replies.NEED_HELO)
        if self.settings.tls_level == "encrypt" and not self.tls:
            return await self.conn.send(replies.TLS_REQUIRED)
        if self.sender is not None:
            return await self.conn.send(replies.NESTED_MAIL)
        m = _ADDR_RE.match(arg)
        self.sender = m.group(1) if m else ""
        return await self.conn.send(replies.MAIL_OK)

    async def smtp_rcpt(self, arg: str) -> bool:
        if self.sender is None:
            return await self.conn.send(replies.NEED_MAIL)
        m = _ADDR_RE.match(arg)
        rcpt = m.group(1) if m else ""
        self.deep_ok = not self.s.failed
        reply = self.s.final_reply or replies.TRY_AGAIN
        replies.reject(self.s.addr, self.s.port, reply, self.sender, rcpt, self.helo,
                       self.proto)
        return await self.conn.send(reply)

    async def smtp_data(self, arg: str) -> bool:
        """smtp_data - no recipient is ever accepted here: goodbye."""
        if self.sender is None:
            return await self.conn.send(replies.NEED_MAIL)
        replies.data_without_rcpt(self.s.addr, self.s.port)
        await self.conn.send(replies.NEED_RCPT)
        return False

    smtp_bdat = smtp_data

    async def smtp_rset(self, arg: str) -> bool:
        self.sender = None
        return await self.conn.send(replies.OK)

    async def smtp_noop(self, arg: str) -> bool:
        return await self.conn.send(replies.OK)

    async def smtp_vrfy(self, arg: str) -> bool:
        if self.settings.disable_vrfy:
            return await self.conn.send(replies.VRFY_DISABLED)
        return await self.conn.send(self.s.final_reply or replies.TRY_AGAIN)

    async def smtp_etrn(self, arg: str) -> bool:
        return await self.conn.send(replies.NO_ETRN)

    async def smtp_starttls(self, arg: str) -> bool:
        """smtp_starttls - hand the client to tlsproxy, go on in plain text."""
        if self.settings.tls_level == "none":
            return await self.conn.send(replies.UNKNOWN)
        if self.tls:
            return await self.conn.send(replies.TLS_ACTIVE)
        if arg.strip():
            return await self.conn.send(replies.TLS_SYNTAX)
        path = f"private/{self.settings.tlsproxy_service}"
        attrs = {"client_address": self.s.addr, "client_port": self.s.port,
                 "server_address": self.s.saddr, "server_port": self.s.sport}
        loop = asyncio.get_running_loop()
        try:
            proxy = await loop.run_in_executor(None, handoff.open_proxy, path,
                                               self.conn.sock, attrs, PROXY_TIMEOUT)
        except handoff.HandoffError as e:
            log.warning(f"cannot start TLS for {replies.client(self.s.addr, self.s.port)}: {e}")
            return await self.conn.send(replies.TLS_UNAVAILABLE)
        if not await self.conn.send(replies.TLS_READY):
            proxy.close()
            return False
        self.conn.switch(proxy)
        self.tls, self.helo, self.sender = True, "", None
        return True

    async def smtp_quit(self, arg: str) -> bool:
        self.deep_ok = self.deep_ok or not self.s.failed
        await self.conn.send(replies.BYE)
        return False


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].strip().decode("ascii", "replace").upper() or "UNKNOWN"


def _forbidden(entries: list[str]) -> list:
    """_forbidden - postscreen_forbidden_commands: words, or tables matched
    against the whole line (`regexp:{{/^[^A-Z]/ Bogus}}`)."""
    out: list = []
    for entry in entries:
        if ":" in entry and not entry.endswith(":"):
            try:
                out.append(open_table(entry))
            except TableError:
                continue
        else:
            out.append(entry.upper())
    return out
