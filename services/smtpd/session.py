"""One SMTP session: the RFC 5321 state machine, a method per command.

The session reads commands from a Connection, answers with the texts in
replies.py, asks check.py whether a client, sender or recipient may pass,
reads content with data.py, and hands each accepted message to cleanup
through submit.py. It answers `250 … queued as ID` only after cleanup has
said the queue file is safe on disk. With smtpd_proxy_filter, the
transaction goes to the before-queue filter through proxy.py instead, and
the filter's replies are the client's.

As Postfix's smtpd, the session has a queue ID from the first accepted
recipient of a transaction on: cleanup reserves the queue file then, the
session logs `ID: client=NAME[ADDR]`, and later reject lines, the Received:
header and the `message` request name that ID. A transaction that ends
without a queued message (RSET, HELO, QUIT, a lost client, a refused
message) abandons the reservation.

Postfix behaviours kept here: the error counters (smtpd_soft_error_limit,
smtpd_error_sleep_time, smtpd_hard_error_limit), smtpd_timeout,
line_length_limit, smtpd_recipient_limit, message_size_limit,
smtpd_forbid_unauth_pipelining (RFC 2920 3.1: a client may pipeline only
after EHLO, and EHLO, DATA, VRFY, ETRN, NOOP, QUIT end a group),
smtpd_forbid_bare_newline, smtpd_junk_command_limit (NOOP, VRFY, ETRN,
RSET, HELO, EHLO past the limit count as errors), smtpd_reject_footer and
smtpd_reject_footer_maps on every 4xx/5xx reply (send), and the log lines
(connect, client=, reject:, timeout/lost connection after, disconnect with
per-command counts; NAME[ADDR]:PORT with smtpd_client_port_logging), and
BDAT's sequence (RFC 3030): no MAIL, RCPT or DATA inside it, a refused chunk
(or one past message_size_limit) read and dropped, and every later chunk up
to LAST dropped with "Discarded N bytes".

Interface:
    Settings.from_config(cfg)      everything read from main.cf once per process
    Session(conn, peer, settings, checker, cleanup).run()   awaitable
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass

from pymaster.mail import cleanup_client, endpoints, flush_client, verp
from pymaster.mail.config import Config
from pymaster.mail.maps import Maps
from pymaster.util import ipc, log
from services.smtpd import auth, commands, proxy, replies, tls, xclient
from services.smtpd.check import Checker, Context
from services.smtpd.command import (
    CommandError,
    MailArgs,
    RcptArgs,
    parse_mail,
    parse_rcpt,
    split_command,
)
from services.smtpd.connection import Connection, ConnectionLost
from services.smtpd.data import ChunkConverter, DataScanner
from services.smtpd.milters import MilterSettings, SessionMilters, open_milters
from services.smtpd.netlist import NetList
from services.smtpd.peer import Peer
from services.smtpd.rewrite_context import header_rewrite_context
from services.smtpd.submit import QUEUE_ID_PLACEHOLDER, Cleanup, received_header

READ_CHUNK = 65536
# RFC 3030 2: chunk-size is 1*DIGIT; Postfix takes it as a file offset (off_t),
# so a count past the largest 64-bit offset is malformed.
BDAT_COUNT = re.compile(r"[0-9]+")
BDAT_COUNT_MAX = 2 ** 63 - 1


@dataclass
class Settings:
    """main.cf values a session needs, read once per process."""
    hostname: str
    banner: str
    mail_name: str
    timeout: float
    line_limit: int
    size_limit: int
    recipient_limit: int
    soft_error_limit: int
    hard_error_limit: int
    error_sleep: float
    helo_required: bool
    disable_vrfy: bool
    delay_reject: bool
    strict_envelopes: bool
    smtputf8: bool
    forbid_unauth_pipelining: bool
    bare_newline: str
    bare_newline_code: int
    bare_newline_exclusions: NetList
    queue_minfree: int
    ipc_timeout: float
    fast_flush_domains: list[str]
    qmgr_endpoint: str
    flush: flush_client.FlushClient | None  # ETRN, when master.cf has flush
    content_filter: str                 # recorded in the queue file (FILTER_README)
    receive_overrides: list[str]        # cleanup flags
    xclient_hosts: NetList
    xforward_hosts: NetList
    verp_clients: NetList               # smtpd_authorized_verp_clients (XVERP)
    verp_delims: tuple[str, str]        # default_verp_delimiters, verp_delimiter_filter
    reject_footer: str
    reject_footer_maps: Maps | None     # smtpd_reject_footer_maps
    junk_command_limit: int
    client_port_logging: bool
    tls: tls.TlsSettings                # STARTTLS, smtps (services/smtpd/tls.py)
    auth: auth.AuthSettings             # SMTP AUTH (services/smtpd/auth.py)
    milters: MilterSettings | None      # smtpd_milters (services/smtpd/milters.py); None: none
    dot_lf_ends: bool = False           # sendmail -bs: a local pipe, no smuggling to fear
    proxy: proxy.ProxySettings | None = None    # smtpd_proxy_filter (services/smtpd/proxy.py)

    @classmethod
    def from_config(cls, cfg: Config) -> "Settings":
        bare = cfg.get("smtpd_forbid_bare_newline").strip().lower()
        return cls(
            hostname=cfg.get("myhostname"),
            banner=cfg.get("smtpd_banner"),
            mail_name=cfg.get("mail_name"),
            timeout=float(cfg.time("smtpd_timeout")),
            line_limit=max(cfg.int("line_length_limit"), 512),
            size_limit=cfg.size("message_size_limit"),
            recipient_limit=cfg.int("smtpd_recipient_limit"),
            soft_error_limit=cfg.int("smtpd_soft_error_limit"),
            hard_error_limit=cfg.int("smtpd_hard_error_limit"),
            error_sleep=float(cfg.time("smtpd_error_sleep_time")),
            helo_required=cfg.bool("smtpd_helo_required"),
            disable_vrfy=cfg.bool("disable_vrfy_command"),
            delay_reject=cfg.bool("smtpd_delay_reject"),
            strict_envelopes=cfg.bool("strict_rfc821_envelopes"),
            smtputf8=cfg.bool("smtputf8_enable"),
            forbid_unauth_pipelining=cfg.bool("smtpd_forbid_unauth_pipelining"),
            bare_newline="normalize" if bare in ("yes", "normalize") else bare,
            bare_newline_code=cfg.int("smtpd_forbid_bare_newline_reject_code"),
            bare_newline_exclusions=NetList.from_param(cfg, "smtpd_forbid_bare_newline_exclusions"),
            queue_minfree=cfg.size("queue_minfree"),
            ipc_timeout=float(cfg.time("ipc_timeout")),
            fast_flush_domains=[d.lower() for d in cfg.list("fast_flush_domains")],
            qmgr_endpoint=endpoints.endpoint(cfg, "qmgr"),
            flush=flush_client.FlushClient(cfg),
            content_filter=cfg.get("content_filter").strip(),
            receive_overrides=cfg.list("receive_override_options"),
            xclient_hosts=NetList.from_param(cfg, "smtpd_authorized_xclient_hosts"),
            xforward_hosts=NetList.from_param(cfg, "smtpd_authorized_xforward_hosts"),
            verp_clients=NetList.from_param(cfg, "smtpd_authorized_verp_clients"),
            verp_delims=(cfg.get("default_verp_delimiters"), cfg.get("verp_delimiter_filter")),
            # Raw: its $names are the session's, expanded at reply time.
            reject_footer=(cfg.raw("smtpd_reject_footer") or "").strip(),
            reject_footer_maps=_footer_maps(cfg),
            junk_command_limit=cfg.int("smtpd_junk_command_limit"),
            client_port_logging=cfg.bool("smtpd_client_port_logging"),
            tls=tls.TlsSettings.from_config(cfg),
            auth=auth.AuthSettings.from_config(cfg),
            milters=MilterSettings.from_config(cfg),
            proxy=proxy.ProxySettings.from_config(cfg),
        )


def _footer_maps(cfg: Config):
    """_footer_maps - smtpd_reject_footer_maps as Maps, or None when empty."""
    if not cfg.get("smtpd_reject_footer_maps").strip():
        return None
    return Maps(cfg, "smtpd_reject_footer_maps")


_process_id = ""    # _process_hex's answer; a forked child asks again


def _process_hex() -> str:
    """_process_hex - this process's ID in hex, asked once: getpid() is a
    system call, and the policy protocol's instance attribute needs it."""
    global _process_id
    if not _process_id:
        _process_id = f"{os.getpid():x}"
    return _process_id


def _forget_process_id() -> None:
    global _process_id
    _process_id = ""


os.register_at_fork(after_in_child=_forget_process_id)


class Closed(Exception):
    """The session is over: QUIT, a 421, or the client went away."""


def enough_queue_space(free: int, queue_minfree: int, size_limit: int, size: int = 0) -> bool:
    """enough_queue_space - whether FREE bytes in the queue file system may take mail.

    As postconf(5) queue_minfree: no mail at all below queue_minfree, nor
    below 1.5 times message_size_limit (Postfix 2.1 and later); a message
    announced with SIZE must fit 1.5 times over in what queue_minfree
    leaves (SIZE=0 or none: nothing announced)."""
    if free < queue_minfree or free < size_limit * 3 // 2:
        return False
    return not size or size * 3 // 2 <= free - queue_minfree


class Session:
    """One client, from the greeting to the disconnect line."""

    def __init__(self, conn: Connection, peer: Peer, settings: Settings,
                 checker: Checker | None, cleanup: Cleanup | None,
                 checker_error: str = "", limits=None) -> None:
        self.conn = conn
        self.peer = peer
        peer.log_port = settings.client_port_logging
        self.real_peer = peer       # who is connected, whatever XCLIENT says
        self.limits = limits
        self.sasl_username = ""
        self.sasl_method = ""
        self.tls_session = None     # pymaster.mail.tlsutil.Session once STARTTLS is done
        self.xforward: dict[str, str | None] = {}
        self.actions: list[dict] = []
        self.pipelining_violation = False
        self.transactions = 0
        self.s = settings
        self.checker = checker
        self.checker_error = checker_error
        self.cleanup = cleanup
        self.where = "CONNECT"
        self.helo: str | None = None
        self.protocol = "SMTP"
        self.esmtp = False
        self.counts: dict[str, list[int]] = {}
        self.errors = 0
        self.junk = 0               # NOOP, VRFY, ETRN, RSET, HELO, EHLO since mail was queued
        self.mail: MailArgs | None = None
        self.rcpts: list[RcptArgs] = []
        self.queue_id = ""          # the transaction's reserved queue file
        # sendmail -bs's maildrop submitter learns the ID only at the end;
        # a before-queue filter takes the message instead of cleanup.
        self.reserves = callable(getattr(cleanup, "reserve", None)) and settings.proxy is None
        self.proxy: proxy.Transaction | None = None     # the transaction, through the filter
        self.bdat: ChunkConverter | None = None
        self.bdat_error = ""        # the BDAT sequence failed: drop its chunks up to LAST
        self.bdat_open = False      # a BDAT sequence has begun (RFC 3030 2: no MAIL, RCPT, DATA)
        self.bdat_bytes = 0
        self.failed = False
        self.data_bytes: int | None = None     # content bytes read so far in DATA
        self.bare_lf_reject = settings.bare_newline == "reject" and \
            not settings.bare_newline_exclusions.match(peer.addr, peer.name)
        self.milters: SessionMilters | None = None  # when this client has milters
        # The policy protocol's instance attribute, unique per session and transaction.
        self.instance = f"{_process_hex()}.{id(self):x}"

    # -- the session ---------------------------------------------------------
    async def run(self) -> None:
        log.info(replies.log_connect(self.peer.namaddr))
        try:
            if self.limits is not None:
                refusal = await self.limits.connect(self.real_peer)
                if refusal:
                    await self.send(refusal)
                    raise Closed()
            if self.s.milters is not None:
                self.milters = await open_milters(self)
            await self._converse()
        except Closed:
            pass
        except ConnectionLost:
            log.info(replies.log_event("lost connection", self._stage(), self.peer.namaddr))
        except asyncio.TimeoutError:
            log.info(replies.log_event("timeout", self.where, self.peer.namaddr))
            self.conn.write((self.footed(replies.timeout(self.s.hostname)) + "\r\n").encode())
        finally:
            self.conn.close()
            self.abandon()
            if self.milters is not None:
                await self.milters.close()
            log.info(replies.log_disconnect(self.peer.namaddr, self.count_summary()))
            if self.limits is not None:
                await self.limits.disconnect(self.real_peer)

    def _stage(self) -> str:
        """_stage - where the session is, with Postfix's "DATA (N bytes)" inside content."""
        if self.where == "DATA" and self.data_bytes is not None:
            return f"DATA ({self.data_bytes} bytes)"
        return self.where

    async def _converse(self) -> None:
        if self.s.tls is not None and self.s.tls.wrapper:
            await tls.wrap(self)
        if self.conn.input_waiting():
            self.pipelining_violation = True    # it talked before the greeting
            if self.s.forbid_unauth_pipelining:
                await self._pipelining_violation()
        await self.send(replies.GREETING.format(banner=self.s.banner))
        while True:
            if self.errors >= self.s.hard_error_limit:
                log.info(replies.log_event("too many errors", self.where, self.peer.namaddr))
                await self.send(replies.too_many_errors(self.s.hostname))
                raise Closed()
            line = await self.read_command()
            if line is not None:
                await self.dispatch(line)

    # -- reading ---------------------------------------------------------------
    async def read_command(self) -> str | None:
        """read_command - the next command line, or None after a refused line."""
        while True:
            nl = self.conn.buf.find(b"\n")
            if nl >= 0:
                break
            if len(self.conn.buf) > self.s.line_limit:
                return await self._long_line()
            await self.conn.wait_data(self.s.timeout)
        raw = self.conn.take(nl + 1)
        crlf = raw.endswith(b"\r\n")
        line = raw.rstrip(b"\r\n")
        if len(line) > self.s.line_limit:
            return await self._command_text(self._cut_long_line(line))
        if not crlf and self.bare_lf_reject:
            await self._bare_lf_command()
        return await self._command_text(line)

    async def _bare_lf_command(self) -> None:
        """_bare_lf_command - smtpd_forbid_bare_newline = reject: a command line
        that ends in bare <LF> is refused uncounted and the session ends, as
        Postfix does whatever smtpd_forbid_bare_newline_reject_code says."""
        self.log_reject(self.where, replies.BARE_LF_LOG)
        await self.reply(self.bare_lf_reply())
        raise Closed()

    def bare_lf_reply(self) -> str:
        return replies.ERR_BARE_LF.format(code=self.s.bare_newline_code, hostname=self.s.hostname)

    async def refuse_bare_lf_content(self, name: str) -> None:
        """refuse_bare_lf_content - message content (DATA or BDAT) with a bare
        <LF> under smtpd_forbid_bare_newline = reject: logged as an
        END-OF-MESSAGE reject; a 521 reply code ends the session."""
        self.log_reject("END-OF-MESSAGE", replies.BARE_LF_LOG,
                        self.rcpts[0].address if len(self.rcpts) == 1 else None)
        await self.end_transaction(self.bare_lf_reply())
        if self.s.bare_newline_code == 521:
            self.count(name, False)
            raise Closed()

    async def _long_line(self) -> str | None:
        """_long_line - a command over line_length_limit: as Postfix does, keep its
        first line_length_limit bytes, drop the rest of the line, log a warning."""
        line = self.conn.take(self.s.line_limit)
        while True:
            nl = self.conn.buf.find(b"\n")
            if nl >= 0:
                self.conn.take(nl + 1)
                break
            self.conn.take(len(self.conn.buf))
            await self.conn.wait_data(self.s.timeout)
        return await self._command_text(self._cut_long_line(line))

    def _cut_long_line(self, line: bytes) -> bytes:
        log.warning(replies.log_long_request(self.peer.namaddr, self.s.line_limit, line))
        return line[:self.s.line_limit]

    async def _command_text(self, line: bytes) -> str | None:
        """_command_text - the line as text; with smtputf8_enable it must be UTF-8
        (Postfix refuses it uncounted, as no command)."""
        line = line.split(b"\0", 1)[0]    # Postfix reads a C string: NUL ends the command
        if self.s.smtputf8 and not line.isascii():
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                await self.reply(replies.ERR_BAD_UTF8)
                return None
        return line.decode("utf-8", "surrogateescape")

    # -- writing ---------------------------------------------------------------
    async def send(self, text: str) -> None:
        text = self.footed(text)
        self.conn.write((text + "\r\n").encode("utf-8", "surrogateescape"))
        await self.conn.drain(self.s.timeout)

    async def reply(self, text: str) -> None:
        """reply - a reply to a command; 4xx/5xx count as client errors (and slow down)."""
        if text[:1] in "45":
            self.failed = True
            self.errors += 1
            if self.errors > self.s.soft_error_limit and self.s.error_sleep > 0:
                await asyncio.sleep(self.s.error_sleep)
        await self.send(text)

    def footed(self, text: str) -> str:
        """footed - TEXT with smtpd_reject_footer (or the smtpd_reject_footer_maps
        entry for the reply) when it is a 4xx/5xx reply, as Postfix adds it to
        every refusal, "too many errors" and timeouts included."""
        if text[:1] not in "45":
            return text
        footer = self.s.reject_footer
        if self.s.reject_footer_maps:
            try:
                footer = self.s.reject_footer_maps.lookup(text) or footer
            except Exception as e:  # a broken table must not end the session
                log.warning(f"smtpd_reject_footer_maps lookup failed: {e}")
        if not footer:
            return text
        return replies.add_footer(text, footer, self.footer_values())

    def footer_values(self) -> dict[str, str]:
        """footer_values - the $names a reject footer may use; $recipient is the
        transaction's last accepted recipient, as in Postfix."""
        return {"client_address": self.peer.addr, "client_name": self.peer.name,
                "client_port": str(self.peer.port), "helo_name": self.helo or "",
                "sender": self.mail.sender if self.mail else "",
                "recipient": self.rcpts[-1].address if self.rcpts else "",
                "server_name": self.s.hostname}

    async def send_lines(self, lines: list[str]) -> None:
        self.conn.write("".join(line + "\r\n" for line in lines).encode())
        await self.conn.drain(self.s.timeout)

    # -- dispatch --------------------------------------------------------------
    async def dispatch(self, line: str) -> None:
        verb, arg = split_command(line)
        command = commands.lookup(verb)
        handler = getattr(self, command.handler) if command and command.handler else None
        name = verb.lower() if handler is not None else "unknown"
        self.where = verb if handler is not None else "UNKNOWN"
        if self.conn.pending() and ((command and command.ends_group) or not self.esmtp):
            self.pipelining_violation = True
            if self.s.forbid_unauth_pipelining:
                self.count(name, False)     # Postfix counts the command it hung up on
                await self._pipelining_violation()
        if command is not None and handler is not None and command.junk:
            self.count_junk()
        self.failed = False
        try:
            if not line.strip():
                await self.reply(replies.ERR_BAD_SYNTAX)
            elif handler is None:
                await self._unknown(line)
            elif self.milters is not None and self.milters.denied and verb != "QUIT":
                await self.reply(self.milters.denied)      # refused at CONNECT
            else:
                await handler(arg)
        except (ConnectionLost, asyncio.TimeoutError):
            self.count(name, False)     # Postfix counts the interrupted command (data=0/1)
            raise
        self.count(name, not self.failed)

    async def _unknown(self, line: str) -> None:
        """_unknown - a command smtpd does not implement: 502, unless a milter
        (SMFIC_UNKNOWN) answers it with a refusal of its own."""
        refusal = ""
        if self.milters is not None:
            refusal = await self.milters.unknown(self, line.rstrip("\r\n"))
        await self.reply(refusal or replies.ERR_UNKNOWN_COMMAND)

    def count_junk(self) -> None:
        """count_junk - past smtpd_junk_command_limit, each junk command counts as
        an error (Postfix compares the count before this command to the limit)."""
        if self.junk > self.s.junk_command_limit:
            self.errors += 1
        self.junk += 1

    async def _pipelining_violation(self) -> None:
        pending = bytes(self.conn.buf[:100])
        log.info(replies.log_pipelining(self.where, self.peer.namaddr, pending))
        await self.send(replies.ERR_PIPELINING)
        raise Closed()

    def count(self, name: str, ok: bool) -> None:
        entry = self.counts.setdefault(name, [0, 0])
        entry[1] += 1
        if ok:
            entry[0] += 1

    def count_summary(self) -> str:
        """count_summary - `ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4`."""
        parts = []
        ok_total = [0, 0]
        for name in commands.COUNT_ORDER:
            if name in self.counts:
                ok, total = self.counts[name]
                parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
                ok_total[0] += ok
                ok_total[1] += total
        ok, total = ok_total
        parts.append(f"commands={ok}" if ok == total and total else f"commands={ok}/{total}")
        return " ".join(parts)

    # -- transaction state -----------------------------------------------------
    def reset_transaction(self) -> None:
        self.abandon()
        if self.milters is not None:
            self.milters.reset()
        self.mail = None
        self.rcpts = []
        self.bdat = None
        self.bdat_error = ""
        self.bdat_open = False
        self.bdat_bytes = 0
        self.actions = []

    def context(self, recipient: str | None = None, verb: str = "") -> Context:
        mail = self.mail
        return Context(
            self.peer.name, self.peer.addr, self.helo, mail.sender if mail else None, recipient,
            sasl_username=self.sasl_username, reverse_name=getattr(self.peer, "reverse_name", ""),
            client_port=str(self.peer.port), protocol=self.protocol, verb=verb or self.where,
            recipient_count=len(self.rcpts), size=(mail.size or 0) if mail else 0,
            instance=f"{self.instance}.{self.transactions}",
            pipelining_violation=self.pipelining_violation, actions=[],
            queue_id=self.queue_id,
            sasl_method=self.sasl_method, **tls.context_fields(self))

    async def check(self, method, ctx: Context, stage: str = "") -> str | None:
        """check - run a restriction check; off the event loop when it may wait on
        the network (DNS, policy servers, a remote table), inline otherwise
        (Checker.blocks_at; STAGE is the check_* name, METHOD's own by default)."""
        assert self.checker is not None  # callers check it
        try:
            if self.checker.blocks_at(stage or method.__name__, ctx):
                refusal = await asyncio.to_thread(method, ctx)
            else:
                refusal = method(ctx)
        except Exception as e:  # a broken table must not end the session
            log.warning(f"access check failed: {type(e).__name__}: {e}")
            refusal = replies.ERR_CONFIGURATION
        if not refusal:
            self.actions.extend(a for a in ctx.actions if a not in self.actions)
        return refusal

    def log_reject(self, stage: str, reply: str, recipient: str | None = None) -> None:
        log.info(replies.log_reject(self.queue_id, stage, self.peer.namaddr, reply,
                                    self.mail.sender if self.mail else None, recipient,
                                    self.protocol, self.helo))

    async def refuse(self, stage: str, reply: str, recipient: str | None = None) -> None:
        self.log_reject(stage, reply, recipient)
        await self.reply(reply)     # send() adds smtpd_reject_footer

    # -- HELO, EHLO -----------------------------------------------------------
    async def smtp_HELO(self, arg: str) -> None:
        await self._hello(arg, esmtp=False)

    async def smtp_EHLO(self, arg: str) -> None:
        await self._hello(arg, esmtp=True)

    async def _hello(self, arg: str, esmtp: bool) -> None:
        if not arg.split():         # "HELO \r": white space is no host name
            await self.reply(replies.ERR_SYNTAX_EHLO if esmtp else replies.ERR_SYNTAX_HELO)
            return
        self.reset_transaction()
        self.helo = arg.split()[0]
        self.esmtp = esmtp
        self.protocol = "ESMTP" if esmtp else "SMTP"
        if not self.s.delay_reject and self.checker is not None:
            refusal = await self.check(self.checker.check_client, self.context()) or \
                await self.check(self.checker.check_helo, self.context())
            if refusal:
                await self.refuse("HELO" if not esmtp else "EHLO", refusal)
                return
        if self.milters is not None:
            refusal = await self.milters.helo(self)
            if refusal:
                await self.reply(refusal)
                return
        if esmtp:
            await self.send_lines(replies.ehlo_lines(self.s.hostname, self.features()))
        else:
            await self.send(replies.HELO_OK.format(hostname=self.s.hostname))

    def features(self) -> list[str]:
        """features - the EHLO keywords, in Postfix's order."""
        out = ["PIPELINING", f"SIZE {self.s.size_limit}" if self.s.size_limit else "SIZE"]
        if not self.s.disable_vrfy:
            out.append("VRFY")
        out.append("ETRN")
        out += tls.ehlo_keywords(self) + auth.ehlo_keywords(self)
        if self.verp_allowed():
            out.append("XVERP")
        out += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.s.smtputf8:
            out.append("SMTPUTF8")
        out.append("CHUNKING")
        if self.s.xclient_hosts is not None and \
                self.s.xclient_hosts.match(self.real_peer.addr, self.real_peer.name):
            out.append("XCLIENT " + " ".join(xclient.XCLIENT_ATTRS))
        if self.s.xforward_hosts is not None and \
                self.s.xforward_hosts.match(self.real_peer.addr, self.real_peer.name):
            out.append("XFORWARD " + " ".join(xclient.XFORWARD_ATTRS))
        return out

    def verp_allowed(self) -> bool:
        """verp_allowed - whether this client may use XVERP (smtpd_authorized_verp_clients)."""
        return self.s.verp_clients is not None and \
            self.s.verp_clients.match(self.peer.addr, self.peer.name)

    # -- MAIL, RCPT -----------------------------------------------------------
    async def smtp_MAIL(self, arg: str) -> None:
        if refusal := tls.mail_refusal(self):
            await self.reply(refusal)
            return
        if self.s.helo_required and self.helo is None:
            await self.reply(replies.ERR_NEED_HELO)
            return
        if self.mail is not None:
            await self.reply(replies.ERR_NESTED_MAIL)
            return
        if self.bdat_open:
            await self.reply(replies.ERR_MAIL_AFTER_BDAT)
            return
        try:
            mail = parse_mail(arg, self.s.strict_envelopes, self.s.smtputf8,
                              self.s.verp_delims if self.verp_allowed() else None)
        except CommandError as e:
            await self.reply(e.reply)
            return
        if mail.size is not None and self.s.size_limit and mail.size > self.s.size_limit:
            log.info(replies.log_reject("", "MAIL", self.peer.namaddr, replies.ERR_SIZE_LIMIT,
                                        mail.sender, None, self.protocol, self.helo))
            await self.reply(replies.ERR_SIZE_LIMIT)
            return
        if not self._space_for(mail.size or 0):
            await self.reply(replies.ERR_INSUFFICIENT_SPACE)
            return
        if self.limits is not None:
            refusal = await self.limits.message(self.peer)
            if refusal:
                await self.reply(refusal)
                return
        self.mail = mail
        self.transactions += 1
        if not self.s.delay_reject and self.checker is not None:
            refusal = await self.check(self.checker.check_sender, self.context())
            if refusal:
                await self.refuse("MAIL", refusal)
                self.mail = None
                return
        if self.milters is not None:
            refusal = await self.milters.mail(self)
            if refusal:
                self.mail = None
                await self.reply(refusal)
                return
        if self.s.proxy is not None:    # the filter sees MAIL with the first RCPT
            self.proxy = proxy.Transaction(self.s.proxy, f"MAIL {arg}")
        await self.reply(replies.OK_MAIL)

    def _space_for(self, size: int) -> bool:
        """_space_for - queue_minfree: refuse mail when the queue file system is nearly full."""
        try:
            st = os.statvfs(".")
        except OSError:
            return True
        free = st.f_bavail * st.f_frsize
        if enough_queue_space(free, self.s.queue_minfree, self.s.size_limit, size):
            return True
        log.warning(f"not enough free space in mail queue: {free} bytes < "
                    f"1.5*message size limit")
        return False

    async def smtp_RCPT(self, arg: str) -> None:
        if self.mail is None:
            await self.reply(replies.ERR_NEED_MAIL)
            return
        if self.bdat_open:
            await self.reply(replies.ERR_RCPT_AFTER_BDAT)
            return
        try:
            rcpt = parse_rcpt(arg, self.s.strict_envelopes, self.mail.smtputf8)
        except CommandError as e:
            await self.reply(e.reply)
            return
        if len(self.rcpts) >= self.s.recipient_limit > 0:
            await self.reply(replies.ERR_TOO_MANY_RCPTS)
            return
        if self.limits is not None:
            refusal = await self.limits.recipient(self.peer)
            if refusal:
                await self.reply(refusal)
                return
        refusal = await self.check_recipient(rcpt.address)
        if refusal:
            await self.refuse("RCPT", refusal, rcpt.address)
            return
        if self.milters is not None:
            refusal = await self.milters.rcpt(self, rcpt.address)
            if refusal:
                await self.reply(refusal)
                return
        reply = replies.OK_RCPT
        if self.proxy is not None:      # the filter's reply is the client's
            reply = await self.proxy.recipient(self, f"RCPT {arg}")
            if not reply.startswith("2"):
                await self.reply(reply)
                return
        elif self.reserves and not self.queue_id:
            refusal = await self.reserve()
            if refusal:
                await self.reply(refusal)
                return
        self.rcpts.append(rcpt)
        await self.reply(reply)

    async def reserve(self) -> str:
        """reserve - the transaction's queue file, at its first accepted recipient
        (when Postfix's smtpd opens its cleanup stream); a refusal, or ""."""
        assert self.cleanup is not None  # self.reserves
        try:
            answer = await self.cleanup.reserve()
        except ipc.IpcError as e:
            log.warning(f"{self.peer.namaddr}: cleanup: {e}")
            return replies.ERR_QUEUE_WRITE
        if answer.get("status") != "ok" or not answer.get("queue_id"):
            log.warning(f"{self.peer.namaddr}: cleanup: cannot reserve a queue file: "
                        f"{answer.get('reason') or answer}")
            return replies.ERR_QUEUE_WRITE
        self.queue_id = str(answer["queue_id"])
        self.log_client(self.queue_id)
        return ""

    def abandon(self) -> None:
        """abandon - give up the reserved queue file (or the before-queue filter's
        connection) of a transaction without a message."""
        if self.proxy is not None:
            self.proxy.close()
            self.proxy = None
        queue_id, self.queue_id = self.queue_id, ""
        if not queue_id:
            return
        assert self.cleanup is not None  # a reserved queue file came from it
        try:
            self.cleanup.abandon(queue_id)
        except ipc.IpcError as e:
            # cleanup sweeps what stays behind (services/cleanup/reservation.py).
            log.warning(f"{queue_id}: cleanup: {e}")

    def log_client(self, queue_id: str) -> None:
        log.info(replies.log_client(queue_id, self.peer.namaddr) + auth.client_log_suffix(self))

    async def check_recipient(self, address: str) -> str | None:
        if self.checker is None:
            return self.checker_error
        delayed = self.s.delay_reject
        return await self.check(lambda ctx: self.checker.check_rcpt(ctx, delayed),
                                self.context(address, "RCPT"), "check_rcpt")

    # -- DATA -------------------------------------------------------------------
    async def smtp_DATA(self, arg: str) -> None:
        if arg:
            await self.reply(replies.ERR_SYNTAX_DATA)
            return
        if self.bdat_open:
            await self.reply(replies.ERR_BDAT_AFTER_DATA)
            return
        if self.mail is None or not self.rcpts:
            await self.reply(replies.ERR_NO_VALID_RCPTS if self.mail else replies.ERR_NEED_RCPT)
            return
        if self.checker is not None and not self.checker.runs_nothing("check_data"):
            refusal = await self.check(self.checker.check_data, self.context(verb="DATA"))
            if refusal:
                await self.refuse("DATA", refusal)
                return
        if self.milters is not None:
            refusal = await self.milters.data(self)
            if refusal:
                await self.reply(refusal)
                return
        if self.proxy is not None:
            refusal = await self.proxy.begin_data(self)
            if refusal:
                await self.end_transaction(refusal)
                return
        await self.send(replies.GO_AHEAD)
        scanner = DataScanner(self.s.size_limit, self.s.dot_lf_ends)
        self.data_bytes = 0
        while not scanner.done:
            if not self.conn.buf:
                await self.conn.wait_data(self.s.timeout)
            used = scanner.feed(bytes(self.conn.buf))
            self.conn.take(used)
            self.data_bytes += used
            if self.proxy is not None:  # the filter reads the message as it arrives
                await self.proxy.stream_content(scanner.content)
        self.data_bytes = None
        self.where = "END-OF-MESSAGE"
        if scanner.too_big:
            await self.end_transaction(replies.ERR_SIZE_LIMIT)
        elif scanner.bare_lf and self.bare_lf_reject:
            await self.refuse_bare_lf_content("data")
        else:
            await self.end_transaction(await self.end_of_data(scanner.content, scanner.size))

    async def end_transaction(self, reply: str) -> None:
        self.reset_transaction()
        await self.reply(reply)
        if reply.startswith("250"):
            self.errors = 0     # errors count "without delivering mail"
            self.junk = 0

    # -- BDAT (RFC 3030) ----------------------------------------------------------
    async def smtp_BDAT(self, arg: str) -> None:
        size, last = await self._bdat_arguments(arg)
        error = self._bdat_refusal(size, last)
        chunk = self.bdat if not error else None
        await self._read_chunk(size, chunk)     # a refused chunk is read and dropped
        if error:
            if last:
                self.reset_transaction()
            await self.reply(error)
            return
        assert chunk is not None  # no error: self.bdat, made by _bdat_refusal
        if chunk.too_big:
            self.bdat_error = replies.ERR_SIZE_LIMIT
            if last:
                self.reset_transaction()
            await self.reply(replies.ERR_SIZE_LIMIT)
            return
        self.bdat_bytes += size
        if not last:
            await self.send(replies.bdat_ok(size))
            return
        chunk.finish()
        if chunk.bare_lf and self.bare_lf_reject:
            await self.refuse_bare_lf_content("bdat")
            return
        total = self.bdat_bytes
        reply = await self.end_of_data(chunk.content)
        # Postfix names the byte count too; a before-queue filter's reply stays as it is.
        if self.proxy is None and reply.startswith(replies.queued("")):
            reply = replies.bdat_queued(total, reply[len(replies.queued("")):])
        await self.end_transaction(reply)

    async def _bdat_arguments(self, arg: str) -> tuple[int, bool]:
        """_bdat_arguments - (count, LAST); a count that is not decimal or does not
        fit a 64-bit file offset is a syntax error, as in Postfix: the chunk's end
        is then unknown, the stream cannot be followed, and the session ends."""
        words = arg.split()
        if not words or not BDAT_COUNT.fullmatch(words[0]) or int(words[0]) > BDAT_COUNT_MAX \
                or len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            log.warning(replies.log_bdat_syntax(self.queue_id, self.peer.namaddr, f"BDAT {arg}"))
            await self.reply(replies.ERR_SYNTAX_BDAT)
            self.count("bdat", False)
            raise Closed()
        return int(words[0]), len(words) == 2

    def _bdat_refusal(self, size: int, last: bool) -> str:
        """_bdat_refusal - why this chunk cannot be taken, or ""; starts the sequence.

        After one refused chunk, every later chunk of the sequence up to LAST
        is read and dropped ("Discarded N bytes"), so that a client that
        pipelines its chunks cannot have a tail of its message taken as a
        message of its own. A chunk that would take the message past
        message_size_limit is refused before it is read, and read only to be
        dropped: nothing past the limit is ever held."""
        if self.bdat_error:
            return replies.ERR_BDAT_DISCARDED.format(count=size)
        self.bdat_open = True
        if not self.rcpts:
            error = replies.ERR_NO_VALID_RCPTS if self.mail else replies.ERR_NEED_RCPT
        elif size == 0 and not last:
            log.warning(replies.log_null_bdat(self.queue_id, self.peer.namaddr))
            error = replies.ERR_NULL_BDAT
        elif self.s.size_limit and self.bdat_bytes + size > self.s.size_limit:
            log.warning(replies.log_bdat_too_big(self.queue_id, self.peer.namaddr))
            error = replies.ERR_BDAT_CHUNK_SIZE
        else:
            if self.bdat is None:
                self.bdat = ChunkConverter(self.s.size_limit)
            return ""
        self.bdat_error = error
        return error

    async def _read_chunk(self, size: int, sink: ChunkConverter | None) -> None:
        """_read_chunk - exactly SIZE bytes of content, into SINK (or dropped)."""
        left = size
        while left > 0:
            if not self.conn.buf:
                await self.conn.wait_data(self.s.timeout)
            data = self.conn.take(min(left, len(self.conn.buf)))
            left -= len(data)
            if sink is not None:
                sink.feed(data)

    async def end_of_data(self, content: bytearray, size: int | None = None) -> str:
        """end_of_data - smtpd_end_of_data_restrictions, then queue the message.
        SIZE: the message's, when CONTENT no longer holds all of it (streamed
        to a before-queue filter)."""
        if self.checker is not None and not self.checker.runs_nothing("check_end_of_data"):
            ctx = self.context(verb="END-OF-MESSAGE")
            ctx.size = len(content) if size is None else size
            refusal = await self.check(self.checker.check_end_of_data, ctx)
            if refusal:
                self.log_reject("END-OF-MESSAGE", refusal)
                return refusal      # send() adds smtpd_reject_footer
        return await self.queue_message(content)

    # -- queueing ---------------------------------------------------------------
    def request_header(self) -> dict:
        mail = self.mail
        assert mail is not None  # a message follows MAIL
        return cleanup_client.message_request(
            mail.sender,
            [cleanup_client.recipient(r.address, r.address, r.notify, r.orcpt)
             for r in self.rcpts],
            {"origin": "smtpd",
             "rewrite_context": header_rewrite_context(self.checker, self.context()),
             "client_name": self.peer.name, "client_address": self.peer.addr,
             "client_port": str(self.peer.port), "helo_name": self.helo or "",
             "protocol": self.protocol, "envid": mail.envid, "ret": mail.ret,
             "body": mail.body, "smtputf8": mail.smtputf8,
             "sasl_method": self.sasl_method, "sasl_username": self.sasl_username,
             "log_queue_id": "",
             **({verp.ATTR: mail.verp} if mail.verp else {}),
             **({"content_filter": self.s.content_filter} if self.s.content_filter else {})},
            self.s.receive_overrides,
            **({"queue_id": self.queue_id} if self.queue_id
               else {"queue_id_placeholder": QUEUE_ID_PLACEHOLDER}),
            actions=[a for a in self.actions if a["action"] != "PREPEND"],
        )

    def trace_headers(self, queue_id: str) -> bytes:
        """trace_headers - what smtpd puts before the content: the headers of
        PREPEND actions, then its Received: header naming QUEUE_ID ("": none)."""
        received = received_header(self.helo, self.peer.name, self.peer.rfc_addr,
                                   self.s.hostname, self.s.mail_name,
                                   auth.received_protocol(self),
                                   [r.address for r in self.rcpts], queue_id=queue_id)
        received = _with_comments(received, tls.received_comments(self) +
                                  auth.received_comments(self))
        prepended = "".join(a["text"].rstrip("\n") + "\n" for a in self.actions
                            if a["action"] == "PREPEND").encode("utf-8", "surrogateescape")
        return prepended + received

    async def queue_message(self, content: bytearray) -> str:
        """queue_message - give the message to cleanup (or the before-queue
        filter); the reply for the client."""
        if self.proxy is not None:
            return await self.proxy_message(content)
        header = self.request_header()
        self._apply_xforward(header["attrs"])
        frames: list[bytes | bytearray] = \
            [self.trace_headers(self.queue_id or QUEUE_ID_PLACEHOLDER), content]
        if self.milters is not None:
            refusal = await self.milters.end_of_message(self, header, frames)
            if refusal:
                return refusal
        assert self.cleanup is not None  # a session that takes mail has one
        try:
            answer = await self.cleanup.submit(header, frames)
        except ipc.IpcError as e:
            log.warning(f"{self.peer.namaddr}: cleanup: {e}")
            return replies.ERR_QUEUE_WRITE      # reset_transaction abandons the file
        status = answer.get("status")
        if status == "ok" and answer.get("queue_id"):
            if not self.queue_id:       # no reservation: the ID is news
                self.log_client(answer["queue_id"])
            self.queue_id = ""          # written: nothing to abandon
            return replies.queued(answer["queue_id"])
        return self._cleanup_refusal(answer)

    async def proxy_message(self, content: bytearray) -> str:
        """proxy_message - the end of the message to the before-queue filter;
        its verdict is the client's reply (no milter sees the message's end)."""
        assert self.proxy is not None and self.mail is not None
        reply = await self.proxy.finish(self, content)
        self.xforward = {}      # XFORWARD attributes last for one transaction
        log.info(replies.log_proxy("proxy-accept" if reply.startswith("2") else "proxy-reject",
                                   reply, self.mail.sender,
                                   self.rcpts[0].address if len(self.rcpts) == 1 else None,
                                   self.protocol, self.helo))
        return reply

    def _apply_xforward(self, attrs: dict) -> None:
        """_apply_xforward - the forwarded client, recorded instead of the proxy."""
        names = {"NAME": "client_name", "ADDR": "client_address", "PORT": "client_port",
                 "HELO": "helo_name", "PROTO": "protocol"}
        for key, attr in names.items():
            if key in self.xforward:
                attrs[attr] = self.xforward[key] or ("unknown" if key == "NAME" else "")
        if self.xforward.get("IDENT"):
            attrs["log_queue_id"] = self.xforward["IDENT"]
        self.xforward = {}      # XFORWARD attributes last for one transaction

    def _cleanup_refusal(self, answer: dict) -> str:
        dsn = str(answer.get("dsn") or "")
        reason = str(answer.get("reason") or "")
        # A milter may choose its own code; it must agree with the status.
        code = answer.get("code")
        if answer.get("status") == "reject" and dsn.startswith("5"):
            if not (isinstance(code, int) and 500 <= code <= 599):
                code = {"5.3.4": 552, "5.4.6": 554}.get(dsn, 550)
            return f"{code} {dsn} {reason or 'Error: message content rejected'}"
        if answer.get("status") == "defer" and dsn.startswith("4"):
            if not (isinstance(code, int) and 400 <= code <= 499):
                code = 451
            return f"{code} {dsn} {reason or 'Error: queue file write error'}"
        log.warning(f"{self.peer.namaddr}: unexpected answer from cleanup: {answer}")
        return replies.ERR_QUEUE_WRITE

    # -- RSET, NOOP, QUIT, VRFY, ETRN ---------------------------------------------
    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self.reply(replies.ERR_SYNTAX_RSET)
            return
        self.reset_transaction()
        await self.reply(replies.OK)

    async def smtp_STARTTLS(self, arg: str) -> None:
        await tls.smtp_starttls(self, arg)

    async def smtp_AUTH(self, arg: str) -> None:
        await auth.smtp_auth(self, arg)

    async def smtp_NOOP(self, arg: str) -> None:
        await self.reply(replies.OK)

    async def smtp_QUIT(self, arg: str) -> None:
        self.count("quit", True)
        await self.send(replies.BYE)
        raise Closed()

    async def smtp_VRFY(self, arg: str) -> None:
        if self.s.disable_vrfy:
            await self.reply(replies.ERR_VRFY_DISABLED)
            return
        if not arg:
            await self.reply(replies.ERR_SYNTAX_VRFY + (" [SMTPUTF8]" if self.s.smtputf8 else ""))
            return
        address = arg.strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1]
        refusal = None
        if self.checker is not None and address:
            # Postfix runs the whole smtpd_recipient_restrictions for VRFY.
            refusal = await self.check_recipient(address)
        if refusal:
            await self.refuse("VRFY", refusal, address)
            return
        await self.reply(replies.VRFY_OK.format(address=arg.strip()))

    async def smtp_ETRN(self, arg: str) -> None:
        if self.s.helo_required and self.helo is None:
            await self.reply(replies.ERR_NEED_HELO)
        elif self.mail is not None:
            await self.reply(replies.ERR_MAIL_IN_PROGRESS)
        elif not arg:
            await self.reply(replies.ERR_SYNTAX_ETRN)
        else:
            domain = arg.strip().lstrip("@#").lower()
            if self.checker is not None:
                ctx = self.context(verb="ETRN")
                ctx.etrn_domain = domain
                refusal = await self.check(self.checker.check_etrn, ctx)
                if refusal:
                    await self.refuse("ETRN", refusal)
                    return
            if self.s.flush is not None and self.s.flush.available():
                await self.etrn_flush(domain, arg)
            elif domain in self.s.fast_flush_domains:
                ipc.trigger(self.s.qmgr_endpoint, {"op": "flush", "site": domain})
                await self.reply(replies.ETRN_STARTED)
            else:
                log.warning(f"reject: ETRN {arg.strip()}... from {self.peer.namaddr}")
                await self.reply(replies.ERR_ETRN_UNAVAILABLE.format(domain=domain))

    async def etrn_flush(self, domain: str, arg: str) -> None:
        """etrn_flush - ask the fast flush service to deliver DOMAIN's deferred mail."""
        assert self.s.flush is not None  # smtp_ETRN asked whether it is available
        status = await asyncio.to_thread(self.s.flush.send_site, domain)
        if status == flush_client.OK:
            await self.reply(replies.ETRN_STARTED)
        elif status == flush_client.DENY:
            log.warning(f"reject: ETRN {arg.strip()}... from {self.peer.namaddr}")
            await self.reply(replies.ERR_ETRN_UNAVAILABLE.format(domain=domain))
        else:
            await self.reply(replies.ERR_ETRN_FAILED)

    # -- XCLIENT, XFORWARD (Postfix's XCLIENT_README, XFORWARD_README) -------------
    async def _proxy_attributes(self, hosts: NetList | None, arg: str, allowed: list[str],
                                verb: str) -> dict | None:
        """_proxy_attributes - the XCLIENT/XFORWARD attributes, or None once refused."""
        if hosts is None or not hosts.match(self.real_peer.addr, self.real_peer.name):
            await self.reply(replies.ERR_XCLIENT_AUTH)
            return None
        if self.mail is not None:
            await self.reply(replies.ERR_MAIL_IN_PROGRESS)
            return None
        try:
            return xclient.parse_attributes(arg, allowed, verb)
        except xclient.AttributeError_ as e:
            await self.reply(e.reply)
            return None

    async def smtp_XCLIENT(self, arg: str) -> None:
        attrs = await self._proxy_attributes(self.s.xclient_hosts, arg,
                                             xclient.XCLIENT_ATTRS, "XCLIENT")
        if attrs is None:
            return
        self._become(attrs)
        # The client starts over: a new greeting, and it must say EHLO again.
        await self.send(replies.GREETING.format(banner=self.s.banner))

    def _become(self, attrs: dict) -> None:
        """_become - the session's client is now the one XCLIENT names."""
        name, addr, port = self.peer.name, self.peer.addr, self.peer.port
        if "ADDR" in attrs:
            addr = attrs["ADDR"] or "unknown"
        if "NAME" in attrs:
            name = (attrs["NAME"] or "unknown").lower()
        if "PORT" in attrs:
            port = int(attrs["PORT"] or 0)
        reverse = getattr(self.peer, "reverse_name", "")
        if "REVERSE_NAME" in attrs:
            reverse = (attrs["REVERSE_NAME"] or "unknown").lower()
        self.peer = Peer(name, addr, port)
        self.peer.reverse_name = reverse
        self.peer.log_port = self.s.client_port_logging
        if "LOGIN" in attrs:
            self.sasl_username = attrs["LOGIN"] or ""
        self.helo = attrs.get("HELO") if "HELO" in attrs else None
        if attrs.get("PROTO"):
            self.protocol = attrs["PROTO"].upper()
        self.esmtp = False
        self.reset_transaction()

    async def smtp_XFORWARD(self, arg: str) -> None:
        attrs = await self._proxy_attributes(self.s.xforward_hosts, arg,
                                             xclient.XFORWARD_ATTRS, "XFORWARD")
        if attrs is None:
            return
        self.xforward.update(attrs)
        await self.reply(replies.OK)


def _with_comments(received: bytes, comments: str) -> bytes:
    """_with_comments - TLS and AUTH comment lines after Received:'s `from` line."""
    if not comments:
        return received
    first, _, rest = received.partition(b"\n")
    return first + b"\n" + comments.encode("utf-8", "surrogateescape") + rest
