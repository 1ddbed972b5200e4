"""smtpd's milters: smtpd_milters (or smtpd_milter_maps) event by event.

Postfix's smtpd applies a milter's verdict at the command it answers: a
refusal at CONNECT makes every later command (QUIT aside) get that reply,
at HELO/EHLO, MAIL FROM and DATA the command is refused, at RCPT TO that
recipient is refused (`milter-reject: RCPT from host[addr]: 451 4.7.1 …;
from=<…> to=<…> proto=ESMTP helo=<…>`), an unknown command (SMFIC_UNKNOWN,
to milters of protocol 3 and later that did not turn it off) gets the
milter's refusal instead of 502, and the rest of the conversation goes on
over the same milter sessions.

Design: smtpd owns the milter sessions (pymaster.mail.milter.SessionChain, one
per SMTP session, connected at the first event). Each event runs in a worker
thread (asyncio.to_thread), because the milter protocol module is blocking
and a milter may take its time (greylisting, DNS lookups) while other
sessions go on. At the end of the message smtpd also runs the content
stage (headers as smtpd hands them to cleanup: its prepended ones and
Received: first; the body; end of message) on the same sessions, and passes
the verdict and the edits, in order, to cleanup in the `message` request
(attribute `milter_result`, JSON). cleanup applies them as it applied its
own chain's before (services/cleanup/milters.py): the milter-reject/
-discard/-hold log line with the queue ID, the refusal the client gets, the
header, body, sender and recipient edits. Why not hand the milter sockets
to cleanup as Postfix does: cleanup is reached through the master's zeromq
broker, which cannot pass descriptors; and why not run the whole conversation
again in cleanup: the milter would see the envelope twice. The caveat: the
milters see the headers before cleanup's own header processing (canonical
rewriting, header_checks, added Message-ID:/Date:), so an edit that names a
header by position applies to cleanup's header list (insert at 0, add at
the end and change by name and count are unaffected in practice).

With no milters configured none of this exists: Settings.milters is None and
each hook in session.py is one test of `session.milters is None`.
receive_override_options=no_milters turns smtpd_milters off here too.
smtpd_milter_maps (Postfix 3.2) is looked up with the client address at the
start of the session: a milter list replaces smtpd_milters for the
session, DISABLE means none; a table failure tempfails the session.

Interface:
    MilterSettings.from_config(cfg) -> MilterSettings | None
    await open_milters(session) -> SessionMilters | None     at connect (the CONNECT event)
    m.denied                                                  the CONNECT refusal, or ""
    await m.helo(session) / m.mail(session) / m.rcpt(session, address) / m.data(session)
        / m.unknown(session, line)                            -> refusal reply or ""
    await m.end_of_message(session, header, frames) -> refusal reply or ""
    m.reset()      the transaction is gone;    await m.close()   the session is over
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field

from pymaster.mail import milter
from pymaster.mail.config import Config
from pymaster.mail.headers import split_header_block
from pymaster.mail.maps import Maps
from pymaster.util import log
from services.smtpd import replies


@dataclass
class MilterSettings:
    """smtpd_milters and what goes with them, read once per process."""
    specs: list[milter.Spec] | None     # None: smtpd_milters does not parse
    names: dict[int, list[str]]
    values: dict[str, str]              # macro values fixed for the process
    maps: Maps | None = None            # pymaster.mail.maps.Maps for smtpd_milter_maps
    parsed: dict[str, list[milter.Spec]] = field(default_factory=dict)
    cfg: Config | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> "MilterSettings | None":
        """from_config - None when this smtpd has no milters at all."""
        if "no_milters" in cfg.list("receive_override_options"):
            return None
        text = cfg.get("smtpd_milters")
        maps = None
        if cfg.get("smtpd_milter_maps").strip():
            maps = Maps(cfg, "smtpd_milter_maps")
        if not text.strip() and maps is None:
            return None
        try:
            specs = milter.parse_milters(cfg, text)
        except ValueError as e:
            # The administrator's error: every session tempfails (as a table failure).
            log.warning(f"smtpd_milters: {e}")
            specs = None
        return cls(specs, milter.macro_names(cfg), _fixed_values(cfg), maps, cfg=cfg)

    def specs_for(self, addr: str) -> list[milter.Spec] | None:
        """specs_for - the milters for a client at ADDR; None: a configuration error."""
        if self.maps is not None:
            try:
                found = self.maps.lookup(addr)
            except Exception as e:      # a table failure defers, never accepts unfiltered
                log.warning(f"smtpd_milter_maps lookup of {addr}: {e}")
                return None
            if found is not None:
                return self._parse(found)
        return self.specs

    def _parse(self, text: str) -> list[milter.Spec] | None:
        if text.strip().upper() == "DISABLE":
            return []
        if text not in self.parsed:
            assert self.cfg is not None  # from_config sets it
            try:
                self.parsed[text] = milter.parse_milters(self.cfg, text)
            except ValueError as e:
                log.warning(f"smtpd_milter_maps: {e}")
                return None
        return self.parsed[text]


def _fixed_values(cfg: Config) -> dict[str, str]:
    values = {}
    for word in cfg.get("milter_macro_defaults").replace(",", " ").split():
        key, _, value = word.partition("=")
        values[key] = value
    values.update({"j": cfg.get("myhostname"), "v": cfg.get("milter_macro_v"),
                   "{daemon_name}": cfg.get("milter_macro_daemon_name")})
    return values


async def open_milters(session) -> "SessionMilters | None":
    """open_milters - the milters for SESSION's client, after the CONNECT event;
    None when this client has none."""
    settings = session.s.milters
    specs = settings.specs_for(session.peer.addr)
    if specs == []:
        return None
    milters = SessionMilters(settings, specs or [])
    if specs is None:
        milters.denied = replies.ERR_CONFIGURATION
    await milters.connect(session)
    return milters


class SessionMilters:
    """The milters of one SMTP session, with the session's macro values."""

    def __init__(self, settings: MilterSettings, specs: list[milter.Spec]) -> None:
        self.chain = milter.SessionChain(specs, settings.names)
        self.values = dict(settings.values)
        self.denied = ""            # CONNECT's refusal: every later command gets it
        self.sticky: list[dict] = []    # a hold or discard at CONNECT/HELO: every message

    # -- the events ----------------------------------------------------------
    async def connect(self, session) -> None:
        """connect - SMFIC_CONNECT; a refusal denies the rest of the session."""
        if self.denied:
            return
        peer = session.peer
        env = milter.Envelope("", [], [], b"", client_name=peer.name,
                              client_address=peer.addr if peer.addr != "unknown" else "",
                              client_port=peer.port)
        self._client_values(session)
        self.denied = await self._event(session, "connect", milter.connect_data(env))

    async def helo(self, session) -> str:
        self._client_values(session)
        return await self._event(session, "helo", milter.strings(session.helo or ""))

    async def mail(self, session) -> str:
        sender = session.mail.sender
        mailer, host = await self._route(session, sender, "{mail_mailer}", "{mail_host}")
        self.values.update({"{mail_addr}": sender, "i": session.queue_id,
                            "{mail_mailer}": mailer, "{mail_host}": host,
                            "{auth_type}": session.sasl_method,
                            "{auth_authen}": session.sasl_username,
                            "{auth_author}": session.mail.auth if session.sasl_username else ""})
        return await self._event(session, "mail", milter.strings(f"<{sender}>"))

    async def rcpt(self, session, address: str) -> str:
        mailer, host = await self._route(session, address, "{rcpt_mailer}", "{rcpt_host}")
        self.values.update({"{rcpt_addr}": address, "i": session.queue_id,
                            "{rcpt_mailer}": mailer, "{rcpt_host}": host})
        return await self._event(session, "rcpt", milter.strings(f"<{address}>"), address)

    async def _route(self, session, address: str, *names: str) -> tuple[str, str]:
        """_route - (transport, next hop) of ADDRESS, as trivial-rewrite resolves
        it, for the {mail,rcpt}_{mailer,host} macros; nothing for the null
        address, or when no milter can want them (a table lookup saved)."""
        if not address or session.checker is None or not self.chain.may_send(*names):
            return "", ""
        checker = session.checker

        def resolve() -> tuple[str, str]:
            res = checker.resolver.resolve(checker.canonical(address))
            return res.transport, res.nexthop
        try:
            return await asyncio.to_thread(resolve)
        except Exception as e:      # a macro is not worth the session
            log.warning(f"milter macros: cannot resolve {address}: {e}")
            return "", ""

    async def data(self, session) -> str:
        self.values["i"] = session.queue_id
        return await self._event(session, "data", b"")

    async def unknown(self, session, line: str) -> str:
        """unknown - SMFIC_UNKNOWN: a command smtpd does not implement, the whole
        line; the milter's refusal replaces smtpd's 502 (MILTER_README)."""
        return await self._event(session, "unknown", milter.strings(line))

    def reset(self) -> None:
        """reset - the transaction is gone: the milters get SMFIC_ABORT next."""
        self.chain.abort()

    async def close(self) -> None:
        await asyncio.to_thread(self.chain.close)

    async def _event(self, session, event: str, data: bytes, rcpt: str | None = None) -> str:
        """_event - one event through the chain; the client's refusal, or ""."""
        if self.denied:
            return self.denied
        outcome = await asyncio.to_thread(self.chain.event, event, data, dict(self.values))
        if outcome is None:
            return ""
        return self._apply(session, outcome, rcpt, event in milter.CONNECTION_EVENTS)

    def _apply(self, session, outcome: milter.Outcome, rcpt: str | None,
               whole_session: bool) -> str:
        """_apply - log the verdict as Postfix's smtpd does; the refusal, or ""
        for a hold or discard (a transaction action, or one for every
        transaction when it came at CONNECT or HELO)."""
        stage = session.where if session.where in ("HELO", "EHLO") else outcome.event
        if outcome.action in ("reject", "tempfail"):
            reply = f"{outcome.code} {outcome.dsn} {outcome.text}"
            _log(session, "milter-reject", stage, reply, rcpt)
            return reply
        action = "HOLD" if outcome.action == "hold" else "DISCARD"
        text = outcome.reason or f"milter triggers {action} action"
        _log(session, f"milter-{outcome.action}", stage, text, rcpt)
        item = {"action": action, "text": text, "logged": True}
        (self.sticky if whole_session else session.actions).append(item)
        return ""

    def _client_values(self, session) -> None:
        peer = session.peer
        info = session.tls_session
        reverse = getattr(peer, "reverse_name", "") or peer.name
        daemon_addr, daemon_port = _local_end(session)
        self.values.update({
            # Postfix: the reverse name, flagged when it did not verify.
            "_": f"{reverse} [{peer.addr}]" + ("" if reverse.lower() == peer.name.lower()
                                               else " (may be forged)"),
            "{daemon_addr}": daemon_addr, "{daemon_port}": daemon_port,
            "{client_name}": peer.name,
            "{client_addr}": peer.addr, "{client_port}": str(peer.port),
            "{client_ptr}": reverse,
            "{tls_version}": info.protocol if info else "",
            "{cipher}": info.cipher if info else "",
            "{cipher_bits}": str(info.bits) if info else "",
            "{cert_subject}": info.peer_cn if info else "",
            "{cert_issuer}": info.issuer_cn if info else ""})

    # -- the message ---------------------------------------------------------
    async def end_of_message(self, session, header: dict, frames: list[bytes | bytearray]) -> str:
        """end_of_message - the content stage over FRAMES (what cleanup gets); its
        verdict and edits go into HEADER for cleanup. A refusal here is
        cleanup's to log and answer (it names the queue ID), so this returns ""
        unless the chain cannot run at all."""
        if self.denied:
            return self.denied
        if session.bdat is not None:        # BDAT has no DATA command: the event goes now
            refusal = await self.data(session)
            if refusal:
                return refusal
        header.setdefault("actions", []).extend(self.sticky)
        self.values["i"] = session.queue_id
        env = _envelope(session, b"".join(bytes(f) for f in frames))
        outcome, edits = await asyncio.to_thread(self.chain.content, env, dict(self.values))
        header["attrs"]["milter_result"] = encode_result(outcome, edits)
        return ""


def _local_end(session) -> tuple[str, str]:
    """_local_end - smtpd's own address and port of SESSION's connection."""
    transport = getattr(session.conn, "transport", None)
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return "", ""
    return str(sockname[0]), str(sockname[1])


def _envelope(session, content: bytes) -> milter.Envelope:
    """_envelope - the message as the milters see it at the content stage."""
    head_lines, offset = split_header_block(content)
    headers = []
    for line in head_lines:
        name, _, value = line.partition(":")
        headers.append([name, value[:-1] if value.endswith("\n") else value])
    return milter.Envelope(session.mail.sender, [r.address for r in session.rcpts], headers,
                           bytes(content[offset:]))


def encode_result(outcome: milter.Outcome, edits: list) -> str:
    """encode_result - the `milter_result` request attribute: the content stage's
    verdict and each milter's edits, [leadspc, [[command, base64 data], …]]."""
    return json.dumps({
        "action": outcome.action, "code": outcome.code, "dsn": outcome.dsn,
        "text": outcome.text, "event": outcome.event, "reason": outcome.reason,
        "edits": [[int(lead), [[c.decode("latin-1"), base64.b64encode(d).decode("ascii")]
                               for c, d in got]] for got, lead in edits]})


def _log(session, action: str, stage: str, text: str, rcpt: str | None) -> None:
    mail = session.mail
    log.info(replies.log_action(session.queue_id, action, stage, session.peer.namaddr, text,
                                mail.sender if mail else None, rcpt, session.protocol,
                                session.helo))
