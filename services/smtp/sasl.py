"""SMTP AUTH in the smtp/lmtp client (RFC 4954), as Postfix's smtp_sasl_* settings.

With smtp_sasl_auth_enable = yes the client looks for a `username:password`
in smtp_sasl_password_maps, in Postfix's order:
    1. with smtp_sender_dependent_authentication = yes, the sender address,
       then its `@domain` (never for the null sender)
    2. the next-hop destination as given: `[mail.example.com]:587`, `example.com`
    3. the name of the host connected to: `mail.example.com`
No entry: the mail goes without AUTH. A server that offers no AUTH gets the
mail without AUTH too.

The mechanism is the first of the client's preference (CRAM-MD5, PLAIN,
LOGIN) that the server offers, smtp_sasl_mechanism_filter lets through and
the security options allow: smtp_sasl_tls_security_options in a TLS session,
smtp_sasl_security_options otherwise (both `noplaintext, noanonymous` by
default, as in Postfix: set them to `noanonymous` to use PLAIN/LOGIN).

Failures are site failures (the next host is tried) and, with
smtp_sasl_auth_soft_bounce = yes, deferrals:
    SASL authentication failed; server mx.example.com[192.0.2.1] said: 535 5.7.8 …
    SASL authentication failed; cannot authenticate to server mx…[…]: no mechanism available

Interface:
    SaslClient(cfg, settings)            .enabled
    sasl.credentials(sender, dest_text, hostname) -> (user, password) | None   raises TableError
    sasl.choose(offered, tls) -> str | None
    sasl.authenticate(session, sender, dest_text) -> str | None   the username used;
        raises SessionError
    respond(mechanism, user, password, challenge) -> bytes   one client response
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from pymaster.mail.config import Config
from pymaster.mail.maps import Maps
from pymaster.mail.sasl.mechanisms import allowed, parse_options
from pymaster.util import log
from pymaster.util.tables import TableError
from services.smtp.reply import Reply
from services.smtp.session import Session, SessionError
from services.smtp.settings import Settings

# The client's own preference, strongest first (Cyrus prefers the non-plaintext one).
MECHANISMS = ("CRAM-MD5", "PLAIN", "LOGIN")


class SaslClient:
    """The SASL settings of one client process; its tables are opened at start."""

    def __init__(self, cfg: Config, settings: Settings) -> None:
        self.settings = settings
        self.enabled = cfg.bool(settings.param("_sasl_auth_enable"))
        self.sender_dependent = cfg.bool(settings.param("_sender_dependent_authentication"))
        self.soft_bounce = cfg.bool(settings.param("_sasl_auth_soft_bounce"))
        name = settings.param("_sasl_password_maps")
        try:
            self.passwords = Maps.from_specs(cfg.list(name), cfg)
        except TableError as e:      # an unknown table type: nothing can be delivered right
            log.fatal(f"{name}: {e}")
        self.options = _options(cfg, settings.param("_sasl_security_options"))
        self.tls_options = _options(cfg, settings.param("_sasl_tls_security_options"))
        self.mech_filter = [w.lower() for w in cfg.list(settings.param("_sasl_mechanism_filter"))]
        if self.enabled and not self.passwords:
            log.warning(f"{settings.param('_sasl_auth_enable')} is set, but "
                        f"{settings.param('_sasl_password_maps')} is empty")

    # -- whose password ----------------------------------------------------
    def credentials(self, sender: str, dest_text: str,
                    hostname: str) -> tuple[str, str] | None:
        """credentials - the first `user:password` in Postfix's lookup order."""
        for key in self.keys(sender, dest_text, hostname):
            value = self.passwords.lookup(key)
            if value is not None:
                user, _, password = value.strip().partition(":")
                return user, password
        return None

    def keys(self, sender: str, dest_text: str, hostname: str) -> list[str]:
        """keys - the lookup keys, in order, without repeats."""
        keys = []
        if self.sender_dependent and sender:
            keys.append(sender.lower())
            if "@" in sender:
                keys.append("@" + sender.rsplit("@", 1)[1].lower())
        keys += [dest_text.lower(), hostname.lower().rstrip(".")]
        return [k for i, k in enumerate(keys) if k and k not in keys[:i]]

    # -- which mechanism ---------------------------------------------------
    def choose(self, offered: list[str], tls: bool) -> str | None:
        """choose - the mechanism to use from what the server OFFERED, None when none fits."""
        offered_upper = {m.upper() for m in offered}
        options = self.tls_options if tls else self.options
        for mech in MECHANISMS:
            if mech in offered_upper and self._filter_allows(mech) and allowed(mech, options):
                return mech
        return None

    def _filter_allows(self, mech: str) -> bool:
        """_filter_allows - smtp_sasl_mechanism_filter: `!name` excludes, a name includes,
        `static:all` includes the rest; a non-empty filter with no match excludes."""
        if not self.mech_filter:
            return True
        for pattern in self.mech_filter:
            if pattern.startswith("!") and pattern[1:] == mech.lower():
                return False
            if pattern == mech.lower() or pattern.startswith("static:"):
                return True
        return False

    # -- the exchange ------------------------------------------------------
    def authenticate(self, session: Session, sender: str, dest_text: str) -> str | None:
        """authenticate - AUTH on SESSION when a password is known; the username used."""
        if not self.enabled or not session.has("AUTH"):
            return None
        try:
            creds = self.credentials(sender, dest_text, session.host.name)
        except TableError as e:
            log.warning(f"{self.settings.param('_sasl_password_maps')} lookup error: {e}")
            raise SessionError(f"SASL password lookup failure for {dest_text}", "4.3.0",
                               site=False) from None
        if creds is None:
            return None
        host = session.host.namaddr
        mech = self.choose(session.features.get("AUTH", "").split(), bool(session.tls))
        if mech is None:
            log.warning("SASL authentication failure: No worthy mechs found")
            raise SessionError(f"SASL authentication failed; cannot authenticate to server "
                               f"{host}: no mechanism available", "4.7.0")
        reply = self._exchange(session, mech, *creds)
        if reply.code != 235:
            dsn = reply.dsn
            if self.soft_bounce and dsn.startswith("5"):
                dsn = "4" + dsn[1:]
            raise SessionError(f"SASL authentication failed; server {host} said: {reply.text}",
                               dsn)
        return creds[0]

    def _exchange(self, session: Session, mech: str, user: str, password: str) -> Reply:
        """_exchange - AUTH MECH [initial-response], then answer each 334 challenge."""
        phase = "sending AUTH"
        if mech == "PLAIN":
            initial = base64.b64encode(respond(mech, user, password, b"")).decode()
            reply = session.command(f"AUTH PLAIN {initial}", "helo", phase)
        else:
            reply = session.command(f"AUTH {mech}", "helo", phase)
        step = 0
        while reply.code == 334 and step < 3:
            step += 1
            try:
                challenge = base64.b64decode(reply.message.strip(), validate=True)
            except (binascii.Error, ValueError):
                session.send(b"*\r\n", phase, "helo")    # RFC 4954 4: cancel the exchange
                return session.read_reply("helo", phase)
            answer = respond(mech, user, password, challenge, step)
            session.send(base64.b64encode(answer) + b"\r\n", phase, "helo")
            reply = session.read_reply("helo", phase)
        return reply


def respond(mech: str, user: str, password: str, challenge: bytes, step: int = 1) -> bytes:
    """respond - the client's response to CHALLENGE in MECH (RFC 4616, 2195, LOGIN draft)."""
    if mech == "PLAIN":
        return b"\0" + user.encode() + b"\0" + password.encode()
    if mech == "LOGIN":
        # The server asks "Username:" then "Password:"; the order is what counts.
        return user.encode() if step == 1 else password.encode()
    if mech == "CRAM-MD5":
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        return f"{user} {digest}".encode()
    raise ValueError(f"unsupported SASL mechanism {mech}")


def _options(cfg: Config, name: str) -> set[str]:
    try:
        return parse_options(cfg.list(name))
    except ValueError as e:
        log.warning(f"{name}: {e}; using noplaintext, noanonymous")
        return {"noplaintext", "noanonymous"}
