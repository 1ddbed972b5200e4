"""smtpd's TLS: STARTTLS (RFC 3207), wrapper mode (smtps), client certificates.

Settings come from smtpd_tls_security_level (or the legacy smtpd_use_tls /
smtpd_enforce_tls): `none` offers nothing, `may` offers STARTTLS, `encrypt`
also refuses mail before it ("530 5.7.0 Must issue a STARTTLS command
first") and implies smtpd_tls_auth_only. smtpd_tls_wrappermode (port 465)
starts the handshake before the greeting. Certificates are loaded when the
process starts (pre_jail); a file that cannot be used is logged and
STARTTLS answers "454 4.7.0 TLS not available due to local problem".

After the handshake the session forgets everything the client said before
(RFC 3207 4.2): HELO, the transaction, any AUTH; input the client pipelined
after STARTTLS is thrown away unread (the command injection defence); bytes
that arrive after the 220 reply belong to the TLS handshake.

The client certificate restrictions (permit_tls_clientcerts,
permit_tls_all_clientcerts, check_ccert_access) live in check.py and
access.py; they read what context_fields() puts in the check Context.

Interface:
    TlsSettings.from_config(cfg) -> TlsSettings
    ehlo_keywords(session) -> ["STARTTLS"] or []
    await smtp_starttls(session, arg)
    await wrap(session)                  smtps: handshake before the greeting
    mail_refusal(session) -> reply | None
    received_comments(session) -> str    the Received: header's TLS lines
    context_fields(session) -> dict      ccert_* and tls_active for check.Context
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from dataclasses import dataclass

from pymaster.mail import tlsutil
from pymaster.mail.config import Config
from pymaster.util import log
from services.smtpd import replies
from services.smtpd.connection import ConnectionLost


@dataclass
class TlsSettings:
    level: str = "none"
    wrapper: bool = False
    context: ssl.SSLContext | None = None
    auth_only: bool = False
    received_header: bool = False
    loglevel: int = 0
    digest: str = ""                    # from_config reads these two; TLS off needs neither
    handshake_timeout: float = 0.0

    @classmethod
    def from_config(cls, cfg: Config) -> "TlsSettings":
        """from_config - read the parameters and load the certificate."""
        s = cls(wrapper=cfg.bool("smtpd_tls_wrappermode"),
                received_header=cfg.bool("smtpd_tls_received_header"),
                loglevel=cfg.int("smtpd_tls_loglevel"),
                digest=cfg.get("smtpd_tls_fingerprint_digest"),
                handshake_timeout=float(cfg.time("smtpd_starttls_timeout")))
        try:
            s.level = tlsutil.legacy_level(cfg, "smtpd")
        except tlsutil.TlsError as e:
            log.warning(f"{e}; TLS is disabled")
            s.level = "none"
        if s.level not in ("none", "may", "encrypt"):
            log.warning(f"smtpd_tls_security_level = {s.level} is not a server level; using may")
            s.level = "may"
        s.auth_only = cfg.bool("smtpd_tls_auth_only") or s.level == "encrypt"
        if s.level != "none" or s.wrapper:
            s.context = _load_context(cfg, s.level)
        return s

    @property
    def offered(self) -> bool:
        return self.level != "none" and self.context is not None and not self.wrapper


def _load_context(cfg: Config, level: str) -> ssl.SSLContext | None:
    try:
        ctx = tlsutil.server_context(cfg, "smtpd", level)
    except tlsutil.TlsError as e:
        log.warning(f"TLS library problem: {e}")
        log.warning("TLS is not available: STARTTLS will be refused")
        return None
    if ctx is None:
        log.warning("No server certs available. TLS won't be enabled")
    return ctx


def _settings(session) -> TlsSettings:
    return getattr(session.s, "tls", None) or TlsSettings()


# -- the SMTP side ---------------------------------------------------------------

def ehlo_keywords(session) -> list[str]:
    s = _settings(session)
    return ["STARTTLS"] if s.offered and session.tls_session is None else []


def mail_refusal(session) -> str | None:
    """mail_refusal - the 530 reply when encryption is required and not yet on."""
    if _settings(session).level == "encrypt" and session.tls_session is None:
        return replies.ERR_MUST_STARTTLS
    return None


async def smtp_starttls(session, arg: str) -> None:
    s = _settings(session)
    if session.tls_session is not None:
        await session.reply(replies.ERR_TLS_ALREADY_ACTIVE)
    elif s.level == "none" or s.wrapper:
        await session.reply(replies.ERR_NOT_IMPLEMENTED)
    elif arg:
        await session.reply(replies.ERR_SYNTAX_STARTTLS)
    elif s.context is None:
        await session.reply(replies.ERR_TLS_LOCAL_PROBLEM)
    elif session.mail is not None:
        await session.reply(replies.ERR_MAIL_IN_PROGRESS)
    else:
        limits = getattr(session, "limits", None)
        refusal = await limits.newtls(session.real_peer) if limits is not None else None
        if refusal:
            await session.reply(refusal)
            return
        session.conn.take(session.conn.pending())   # pipelined plaintext: never read
        await session.send(replies.TLS_READY)
        await _handshake(session, s)
        _forget_plaintext_state(session)


async def wrap(session) -> None:
    """wrap - smtpd_tls_wrappermode: TLS from the first byte (port 465)."""
    s = _settings(session)
    if s.context is None:
        log.warning(f"TLS wrapper mode: no usable server certificate; "
                    f"dropping {session.peer.namaddr}")
        raise ConnectionLost()
    await _handshake(session, s)


async def _handshake(session, s: TlsSettings) -> None:
    """_handshake - TLS on the session's connection; logs as Postfix does."""
    conn = session.conn
    assert s.context is not None  # STARTTLS is offered only with a context
    try:
        transport = await _start_tls(conn, s.context, s.handshake_timeout)
    except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or type(e).__name__
        log.info(f"SSL_accept error from {session.peer.namaddr}: {reason}")
        raise ConnectionLost() from None
    if transport is None:
        raise ConnectionLost()
    conn.transport = transport
    conn._paused_reading = False
    sslobj = transport.get_extra_info("ssl_object")
    verified = s.context.verify_mode != ssl.CERT_NONE
    session.tls_session = tlsutil.Session.from_ssl(sslobj, s.digest, verified)
    if s.loglevel >= 1:
        log.info(tlsutil.established_from(session.tls_session, session.peer.namaddr))


async def _start_tls(conn, context: ssl.SSLContext, timeout: float):
    """_start_tls - loop.start_tls, but the bytes CONN already read go to TLS first.

    The client's ClientHello may arrive while the reply to STARTTLS is
    still being flushed, or (wrapper mode) before the session starts; the
    plain protocol has then read it into conn.buf. asyncio's start_tls
    would lose those bytes, so this does what it does and hands them to
    the TLS protocol before reading resumes."""
    loop = asyncio.get_running_loop()
    early = conn.take(conn.pending())
    waiter = loop.create_future()
    tls_protocol = sslproto.SSLProtocol(loop, conn, context, waiter, server_side=True,
                                        # typeshed says int; asyncio takes float seconds
                                        ssl_handshake_timeout=timeout,  # type: ignore[arg-type]
                                        call_connection_made=False)
    transport = conn.transport
    transport.pause_reading()
    transport.set_protocol(tls_protocol)
    calls = [loop.call_soon(tls_protocol.connection_made, transport),
             loop.call_soon(_feed, tls_protocol, early),
             loop.call_soon(transport.resume_reading)]
    try:
        await waiter
    except BaseException:
        transport.close()
        for call in calls:
            call.cancel()
        raise
    return tls_protocol._app_transport


def _feed(protocol, data: bytes) -> None:
    """_feed - DATA to PROTOCOL as if the transport had just read it."""
    if not isinstance(protocol, asyncio.BufferedProtocol):
        if data:
            protocol.data_received(data)
        return
    while data:
        buf = memoryview(protocol.get_buffer(len(data)))
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        protocol.buffer_updated(n)
        data = data[n:]


def _forget_plaintext_state(session) -> None:
    """_forget_plaintext_state - RFC 3207 4.2: back to the state after the greeting."""
    session.reset_transaction()
    session.helo = None
    session.esmtp = False
    session.protocol = "SMTP"
    session.sasl_username = ""
    session.sasl_method = ""


def received_comments(session) -> str:
    """received_comments - `(using TLSv1.3 with cipher …)` lines for Received:."""
    info = session.tls_session
    if info is None or not _settings(session).received_header:
        return ""
    text = f"\t(using {info.summary()})\n"
    if not info.peer_der:
        context = _settings(session).context
        assert context is not None  # a TLS session had one
        asked = context.verify_mode != ssl.CERT_NONE
        text += "\t(Client did not present a certificate)\n" if asked else \
            "\t(No client certificate requested)\n"
    else:
        status = "verified OK" if info.verified else "not verified"
        text += f"\t(Client CN \"{info.peer_cn}\", Issuer \"{info.issuer_cn}\" ({status}))\n"
    return text


def context_fields(session) -> dict:
    """context_fields - what the restrictions may know about the TLS session."""
    info = session.tls_session
    if info is None:
        return {"tls_active": False}
    return {"tls_active": True, "ccert_fingerprint": info.fingerprint,
            "ccert_pubkey_fingerprint": info.pkey_fingerprint,
            "ccert_verified": bool(info.peer_der and info.verified)}

