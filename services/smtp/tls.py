"""TLS in the smtp/lmtp client: STARTTLS at smtp_tls_security_level.

Levels (postconf(5) smtp_tls_security_level; smtp_enforce_tls and
smtp_use_tls are the older names for `encrypt` and `may`):
    none      plain text
    may       STARTTLS when the server offers it; the certificate is not checked.
              A failed handshake fails this host (Postfix would reconnect in plain
              text; here the next host or the next attempt gets the mail)
    encrypt   STARTTLS is mandatory; the certificate is not checked
    verify    mandatory, and the certificate must chain to smtp_tls_CAfile/CApath
              and name the MX host (smtp_tls_verify_cert_match = hostname)
    secure    as verify, the name matched being the next-hop domain
              (smtp_tls_secure_cert_match = nexthop)
dane, dane-only and fingerprint are treated as `encrypt` (no DANE here).

After the handshake the client repeats EHLO (RFC 3207 4.2) and, at
smtp_tls_loglevel >= 1, logs Postfix's line:
    Verified TLS connection established to mx.example.com[192.0.2.1]:25: TLSv1.3 with …
(`Untrusted` when the certificate was not checked).

Contexts are built when the client starts (security_level), before the jail.

Interface:
    security_level(settings, cfg) -> str      also prepares the contexts
    check(session, level, nexthop="")         STARTTLS as LEVEL demands; raises SessionError
    policy_level(cfg, nexthop, level) -> str  smtp_tls_policy_maps for NEXTHOP, else LEVEL
"""

from __future__ import annotations

import socket
import ssl

from pymaster import log, tlsutil
from pymaster.config import Config
from services.smtp.session import Session, SessionError
from services.smtp.settings import TLS_REQUIRED, Settings

LEVELS_WITH_TLS = ("may", "encrypt", "verify", "secure", "dane", "dane-only", "fingerprint")


def security_level(settings: Settings, cfg: Config) -> str:
    """security_level - the effective TLS level; loads certificates for it now."""
    if settings.tls_level:
        level = settings.tls_level
    elif cfg.bool(settings.param("_enforce_tls")):
        level = "encrypt"
    elif cfg.bool(settings.param("_use_tls")):
        level = "may"
    else:
        level = "none"
    settings.tls_contexts = _contexts(cfg, settings.prefix)
    settings.tls_loglevel = cfg.int(settings.param("_tls_loglevel"))
    return level


def _contexts(cfg: Config, prefix: str) -> dict[str, ssl.SSLContext | None]:
    """_contexts - one context per level kind; None where the settings are unusable."""
    out: dict[str, ssl.SSLContext | None] = {}
    for kind in ("may", "encrypt", "verify"):
        try:
            out[kind] = tlsutil.client_context(cfg, kind, prefix)
        except tlsutil.TlsError as e:
            log.warning(f"TLS library problem: {e}")
            out[kind] = None
    return out


def policy_level(cfg: Config, nexthop: str, level: str) -> str:
    """policy_level - the level smtp_tls_policy_maps gives NEXTHOP (first word), else LEVEL."""
    specs = cfg.list("smtp_tls_policy_maps")
    if not specs or not nexthop:
        return level
    from pymaster.maps import Maps
    value = Maps.from_specs(specs, cfg).lookup(nexthop.strip("[]").lower())
    return value.split()[0].lower() if value else level


def check(session: Session, level: str, nexthop: str = "") -> None:
    """check - STARTTLS when LEVEL wants it; SessionError when TLS is required and fails."""
    if level not in LEVELS_WITH_TLS or session.host.unix:
        return
    if not session.has("STARTTLS"):
        if level in TLS_REQUIRED:
            raise SessionError(f"TLS is required, but was not offered by host "
                               f"{session.host.namaddr}", "4.7.4")
        return
    kind = "verify" if level in ("verify", "secure") else \
        ("may" if level == "may" else "encrypt")
    ctx = getattr(session.settings, "tls_contexts", {}).get(kind)
    if ctx is None:
        if level in TLS_REQUIRED:
            raise SessionError("TLS is required, but our TLS engine is unavailable", "4.7.5")
        return
    _starttls(session, ctx, kind, _match_name(session, level, nexthop))


def _match_name(session: Session, level: str, nexthop: str) -> str | None:
    if level == "secure" and nexthop:
        return nexthop.strip("[]").split(":")[0]
    return session.host.name


def _starttls(session: Session, ctx: ssl.SSLContext, kind: str, name: str | None) -> None:
    reply = session.command("STARTTLS", "starttls", "sending STARTTLS")
    if reply.code // 100 != 2:
        raise SessionError(f"TLS is required, but host {session.host.namaddr} refused to "
                           f"start TLS: {reply.text}", "4.7.5")
    try:
        session.sock.settimeout(session.settings.timeouts.get("starttls"))
        tls_sock = ctx.wrap_socket(session.sock, server_hostname=name)
    except ssl.SSLCertVerificationError as e:
        session.usable = False
        raise SessionError(f"Server certificate not verified: {e.verify_message}",
                           "4.7.5") from None
    except (ssl.SSLError, OSError, socket.timeout) as e:
        session.usable = False
        raise SessionError(f"Cannot start TLS: handshake failure with "
                           f"{session.host.namaddr}: {getattr(e, 'reason', None) or e}",
                           "4.7.5") from None
    session.sock = tls_sock
    session._rfile = tls_sock.makefile("rb")
    trust = "Verified" if kind == "verify" else "Untrusted"
    if getattr(session.settings, "tls_loglevel", 0) >= 1:
        info = tlsutil.Session.from_ssl(tls_sock)
        log.info(tlsutil.established_to(trust, session.host.namaddr, session.host.port, info))
    session.tls = trust
    session._hello("LHLO" if session.settings.lmtp else "EHLO")
