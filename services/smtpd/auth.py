"""smtpd's SMTP AUTH (RFC 4954) and the SASL restrictions.

AUTH is offered when smtpd_sasl_auth_enable = yes, after STARTTLS only
when smtpd_tls_auth_only = yes (or the TLS level is encrypt). The
mechanisms come from the SASL server (pymaster/sasl: the built-in store or
Dovecot), filtered by smtpd_sasl_security_options, or by
smtpd_sasl_tls_security_options inside TLS. broken_sasl_auth_clients adds
the old `AUTH=MECH …` EHLO line for clients that only understand it.

Replies and log lines are Postfix's (fail2ban's postfix-sasl filter reads
the warning):
    235 2.7.0 Authentication successful
    535 5.7.8 Error: authentication failed: authentication failure
    warning: NAME[ADDR]: SASL PLAIN authentication failed: authentication failure
and, once a message is queued, `ID: client=N[A], sasl_method=PLAIN, sasl_username=U`.

Restrictions for check.py: reject_sender_login_mismatch and its
authenticated/known/unauthenticated variants (smtpd_sender_login_maps),
permit_sasl_authenticated and check_sasl_access are check.py's and access.py's.

Interface:
    AuthSettings.from_config(cfg) -> AuthSettings   (opens the SASL server)
    ehlo_keywords(session) -> list[str]
    await smtp_auth(session, arg)
    client_log_suffix(session) -> ", sasl_method=PLAIN, sasl_username=kdent" or ""
    received_protocol(session) -> "ESMTPSA" and friends (RFC 3848)
    received_comments(session) -> "\t(Authenticated sender: kdent)\n" or ""
    RESTRICTIONS
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pymaster.mail import sasl
from pymaster.mail.addr import split_address
from pymaster.mail.config import Config
from pymaster.mail.sasl.mechanisms import parse_options
from pymaster.mail.sasl.server import open_server
from pymaster.util import log
from pymaster.util.tables import TableError
from services.smtpd import replies
from services.smtpd.verdict import REJECT, Verdict, temporary_failure

if TYPE_CHECKING:
    from pymaster.mail.sasl.builtin import BuiltinServer
    from pymaster.mail.sasl.dovecot import DovecotServer


@dataclass
class AuthSettings:
    enabled: bool = False
    server: BuiltinServer | DovecotServer | None = None
    options: set[str] = field(default_factory=set)
    tls_options: set[str] = field(default_factory=set)
    broken_clients: bool = False
    authenticated_header: bool = False
    problem: str = ""

    @classmethod
    def from_config(cls, cfg: Config) -> "AuthSettings":
        s = cls(enabled=cfg.bool("smtpd_sasl_auth_enable"),
                broken_clients=cfg.bool("broken_sasl_auth_clients"),
                authenticated_header=cfg.bool("smtpd_sasl_authenticated_header"))
        if not s.enabled:
            return s
        try:
            s.options = parse_options(cfg.list("smtpd_sasl_security_options"))
            s.tls_options = parse_options(cfg.list("smtpd_sasl_tls_security_options"))
            s.server = open_server(cfg)
            if hasattr(s.server, "fetch_mechanisms"):
                s.server.fetch_mechanisms()
        except (ValueError, sasl.SaslError) as e:
            log.warning(f"SASL per-process initialization failed: {e}")
            s.problem = str(e)
        return s


def _settings(session) -> AuthSettings:
    return getattr(session.s, "auth", None) or AuthSettings()


def _tls_on(session) -> bool:
    return getattr(session, "tls_session", None) is not None


def available(session) -> bool:
    """available - may AUTH be used at this point of the session?"""
    s = _settings(session)
    if not s.enabled:
        return False
    tls = getattr(session.s, "tls", None)
    return not (tls is not None and tls.auth_only and not _tls_on(session))


def mechanisms(session) -> list[str]:
    s = _settings(session)
    if s.server is None:
        return []
    if getattr(s.server, "stale", lambda: False)():
        _refresh_soon(s.server)
    return s.server.mechanisms(s.tls_options if _tls_on(session) else s.options)


def _refresh_soon(server) -> None:
    """_refresh_soon - fetch Dovecot's mechanism list again, without waiting for it."""
    if getattr(server, "_refreshing", False):
        return
    server._refreshing = True

    async def refresh() -> None:
        try:
            await server.refresh()
        except sasl.SaslError as e:
            log.warning(str(e))
        finally:
            server._refreshing = False
    try:
        asyncio.get_running_loop().create_task(refresh())
    except RuntimeError:
        server._refreshing = False


def ehlo_keywords(session) -> list[str]:
    if not available(session):
        return []
    mechs = mechanisms(session)
    if not mechs:
        return []
    words = " ".join(mechs)
    out = [f"AUTH {words}"]
    if _settings(session).broken_clients:
        out.append(f"AUTH={words}")
    return out


# -- the AUTH command ----------------------------------------------------------------

async def smtp_auth(session, arg: str) -> None:
    s = _settings(session)
    refusal = _refusal(session, s, arg)
    if refusal:
        await session.reply(refusal)
        return
    words = arg.split()
    mech = words[0].upper()
    if mech not in mechanisms(session):
        _log_failure(session, mech, "Invalid authentication mechanism")
        await session.reply(replies.ERR_AUTH_NO_MECH)
        return
    limits = getattr(session, "limits", None)
    refusal = await limits.auth(session.real_peer) if limits is not None else None
    if refusal:
        await session.reply(refusal)
        return
    initial = None
    if len(words) == 2:
        initial = _decode(words[1])
        if initial is None:
            await session.reply(replies.ERR_AUTH_DECODE)
            return
    await _converse(session, s, mech, initial)


def _refusal(session, s: AuthSettings, arg: str) -> str | None:
    if not s.enabled:
        return replies.ERR_UNKNOWN_COMMAND
    if not available(session):
        return replies.ERR_AUTH_NOT_ENABLED
    if not session.esmtp:
        return replies.ERR_NEED_HELO
    if session.sasl_username:
        return replies.ERR_AUTH_ALREADY
    if session.mail is not None:
        return replies.ERR_MAIL_IN_PROGRESS
    if not arg.split() or len(arg.split()) > 2:
        return replies.ERR_SYNTAX_AUTH
    return None


def _decode(text: str) -> bytes | None:
    """_decode - a client's base64 message; "=" is the empty initial response."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def _converse(session, s: AuthSettings, mech: str, initial: bytes | None) -> None:
    info = {"client_addr": session.peer.addr, "secured": _tls_on(session),
            "local_addr": _local_addr(session)}
    assert s.server is not None  # AUTH is offered only with a server
    try:
        conv = s.server.conversation(mech, info)
        step = await conv.start(initial)
        while step.kind == sasl.CHALLENGE:
            await session.send("334 " + base64.b64encode(step.data).decode())
            line = await session.read_command()
            if line is None:
                return
            if line.strip() == "*":
                _close(conv)
                await session.reply(replies.ERR_AUTH_ABORTED)
                return
            data = _decode(line.strip())
            if data is None:
                _close(conv)
                await session.reply(replies.ERR_AUTH_DECODE)
                return
            step = await conv.respond(data)
    except sasl.SaslError as e:
        log.warning(f"{session.peer.namaddr}: SASL {mech}: {e}")
        await session.reply(replies.ERR_AUTH_SERVER.format(reason="internal error"))
        return
    if step.kind == sasl.OK:
        session.sasl_username = step.user
        session.sasl_method = mech
        await session.reply(replies.OK_AUTH)
    else:
        _log_failure(session, mech, step.reason)
        reason = step.reason or sasl.FAILURE_REASON
        await session.reply(replies.ERR_AUTH_FAILED.format(reason=reason))


def _close(conv) -> None:
    close = getattr(conv, "close", None)
    if close is not None:
        close()


def _local_addr(session) -> str:
    transport = getattr(session.conn, "transport", None)
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return sockname[0] if isinstance(sockname, tuple) else ""


def _log_failure(session, mech: str, reason: str) -> None:
    log.warning(f"{session.peer.namaddr}: SASL {mech} authentication failed: "
                f"{reason or sasl.FAILURE_REASON}")


# -- what the rest of smtpd shows -------------------------------------------------------

def client_log_suffix(session) -> str:
    if not getattr(session, "sasl_username", ""):
        return ""
    return f", sasl_method={session.sasl_method}, sasl_username={session.sasl_username}"


def received_protocol(session) -> str:
    """received_protocol - RFC 3848: ESMTP + S (TLS) + A (authenticated)."""
    proto = session.protocol
    if proto != "ESMTP":
        return proto
    return proto + ("S" if _tls_on(session) else "") + \
        ("A" if getattr(session, "sasl_username", "") else "")


def received_comments(session) -> str:
    if not (_settings(session).authenticated_header and getattr(session, "sasl_username", None)):
        return ""
    return f"\t(Authenticated sender: {session.sasl_username})\n"


# -- restrictions (check.py) ------------------------------------------------------------

def _login_owners(checker, sender: str) -> list[str] | None:
    """_login_owners - the logins smtpd_sender_login_maps gives SENDER, None if unlisted."""
    maps = checker.param_maps("smtpd_sender_login_maps")
    if not maps:
        return None
    local, domain = split_address(sender)
    keys = [sender, f"@{domain}"] if domain else [sender]
    if domain and checker.resolver.is_local_domain(domain):
        keys.insert(1, local)
    for key in keys:
        value = maps.lookup(key)
        if value is not None:
            return [w.lower() for w in value.replace(",", " ").split()]
    return None


def _mismatch(checker, ctx, authenticated: bool, unauthenticated: bool, known_only: bool):
    if not ctx.sender:
        return None
    try:
        owners = _login_owners(checker, ctx.sender)
    except TableError as e:
        log.warning(f"smtpd_sender_login_maps: table lookup problem for {ctx.sender}: {e}")
        return temporary_failure(ctx.sender)
    user = (ctx.sasl_username or "").lower()
    if user and authenticated:
        if owners is None and known_only:
            return None
        if owners is None or user not in owners:
            return Verdict(REJECT, replies.ERR_SENDER_NOT_OWNED.format(
                sender=ctx.sender, user=ctx.sasl_username))
    if not user and unauthenticated and owners is not None:
        return Verdict(REJECT, replies.ERR_SENDER_NOT_LOGGED_IN.format(sender=ctx.sender))
    return None


def reject_sender_login_mismatch(checker, ctx, arg):
    return _mismatch(checker, ctx, True, True, False)


def reject_authenticated_sender_login_mismatch(checker, ctx, arg):
    return _mismatch(checker, ctx, True, False, False)


def reject_known_sender_login_mismatch(checker, ctx, arg):
    return _mismatch(checker, ctx, True, True, True)


def reject_unauthenticated_sender_login_mismatch(checker, ctx, arg):
    return _mismatch(checker, ctx, False, True, False)


# name -> (function, argument kind), check.py's RESTRICTIONS shape
RESTRICTIONS = {
    "reject_sender_login_mismatch": (reject_sender_login_mismatch, ""),
    "reject_authenticated_sender_login_mismatch":
        (reject_authenticated_sender_login_mismatch, ""),
    "reject_known_sender_login_mismatch": (reject_known_sender_login_mismatch, ""),
    "reject_unauthenticated_sender_login_mismatch":
        (reject_unauthenticated_sender_login_mismatch, ""),
}

