"""TLS in the smtp/lmtp client: the per-destination policy and STARTTLS.

Levels (postconf(5) smtp_tls_security_level; smtp_enforce_tls and
smtp_use_tls are the older names for `encrypt` and `may`):
    none      plain text
    may       STARTTLS when the server offers it; the certificate is not
              required to verify. When the handshake fails the client
              reconnects to the same host in plain text (as Postfix does);
              a refused STARTTLS continues in plain text
    encrypt   STARTTLS is mandatory; the certificate is not checked
    verify    mandatory; the certificate must chain to smtp_tls_CAfile/CApath
              and name the server as smtp_tls_verify_cert_match says
              (default: the MX host name)
    secure    as verify, matched by smtp_tls_secure_cert_match (default:
              the next-hop domain or a subdomain of it)
    dane      DANE (RFC 7672, dane.py): for an MX host with secure, usable
              TLSA records TLS is mandatory and the chain must match one
              (`Verified`, else deferred "Server certificate not verified");
              with none the host gets `may` (unusable ones: `encrypt`); a
              TLSA lookup failure defers the host
    dane-only as dane, but a host without usable secure TLSA records is deferred
fingerprint is treated as `encrypt`.

smtp_tls_policy_maps gives a level per next-hop destination: the key is the
destination as given (`[mx.example.com]:587`, only that one lookup), or a
domain (`mail.example.com`, then `.example.com`, `.com`). The value is a
level and optional attributes, of which `match=a:b` is honoured (the other
attributes, protocols= and ciphers=, are ignored with a warning).

Match strategies (match=, *_cert_match): `hostname` (the name of the host
connected to), `nexthop` (the next-hop domain), `dot-nexthop` (any
subdomain of it), a literal `example.com`, or `.example.com` (any
subdomain). Certificate names are the DNS subjectAltNames, else the
subject CN; `*.example.com` stands for one label.

After the handshake the client repeats EHLO (RFC 3207 4.2) and, at
smtp_tls_loglevel >= 1, logs Postfix's line
    Verified TLS connection established to mx.example.com[192.0.2.1]:25: TLSv1.3 with …
with `Trusted` (the chain verifies, no name was checked) or `Untrusted`.

Caveats: Python's ssl has no verification callback, so at verify/secure an
untrusted chain fails the handshake itself (Postfix finishes it and then
says QUIT); the deferral reason is the same. At may/encrypt the `Trusted`
label comes from checking the leaf against smtp_tls_CAfile's certificates
(a direct issuer only; chains through an intermediate log `Untrusted`).

Contexts, CA certificates and cryptography are loaded when the client
starts (its pre-jail step), and only when TLS may be used; so is the DANE
resolver when a DANE level may be used (the default level, or any level
once smtp_tls_policy_maps is set).

Interface:
    TlsClient(cfg, settings)                  .default_level
    tls_client.policy(dest_text, dest_host) -> Policy   raises PolicyError
    check(session, policy, tls_client)        STARTTLS as POLICY demands (DANE decided here);
                                              raises SessionError (PlaintextRetry at `may`)
    PolicyError, PlaintextRetry
    cryptography_x509(), dane_module()        the lazily imported heavy modules
"""

from __future__ import annotations

import datetime
import encodings.idna  # noqa: F401  (ssl IDNA-encodes SNI names with it, on first use)
import importlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field, replace
from types import ModuleType

from pymaster.mail import tlsutil
from pymaster.mail.config import Config
from pymaster.mail.maps import Maps
from pymaster.util import log
from pymaster.util.tables import TableError
from services.smtp.session import Session, SessionError
from services.smtp.settings import TLS_REQUIRED, Settings

LEVELS_WITH_TLS = ("may", "encrypt", "verify", "secure", "dane", "dane-only", "fingerprint")
MATCHING = ("verify", "secure")
DANE_LEVELS = ("dane", "dane-only")
# The chain is checked by pymaster, not OpenSSL: what OpenSSL would say.
DANE_NO_MATCH = "num=65:No matching DANE TLSA records"
IGNORED_ATTRIBUTES = ("protocols", "ciphers", "exclude", "tafile", "servername",
                      "connection_reuse", "enable_rpk")


class PolicyError(Exception):
    """A TLS policy that cannot be looked up or used: the destination is deferred."""


class PlaintextRetry(SessionError):
    """The handshake failed at `may`: reconnect to the same host without TLS."""


@dataclass
class Policy:
    """The TLS policy for one next-hop destination."""
    level: str
    nexthop: str = ""                              # the domain names are matched against
    match: list[str] = field(default_factory=list)
    tlsa: list = field(default_factory=list)       # usable DANE records to match

    @property
    def required(self) -> bool:
        return self.level in TLS_REQUIRED or bool(self.tlsa)

    def plaintext(self) -> "Policy":
        return replace(self, level="none")


class TlsClient:
    """The TLS settings of one client process: contexts, CA certificates, policy maps."""

    def __init__(self, cfg: Config, settings: Settings) -> None:
        self.settings = settings
        self.default_level = _default_level(cfg, settings)
        self.loglevel = cfg.int(settings.param("_tls_loglevel"))
        self.verify_match = _words(cfg.get(settings.param("_tls_verify_cert_match")))
        self.secure_match = _words(cfg.get(settings.param("_tls_secure_cert_match")))
        self.policy_maps = _open_maps(cfg, settings.param("_tls_policy_maps"))
        self.contexts: dict[str, ssl.SSLContext | None] = {}
        self.ca_certs: list = []
        self.dane = None
        if self._may_use_tls():
            cryptography_x509()
            self.contexts = _contexts(cfg, settings.prefix)
            self.ca_certs = _ca_certs(cfg.get(settings.param("_tls_CAfile")).strip())
        if self.default_level in DANE_LEVELS or self.policy_maps:
            self.dane = dane_module().DaneResolver(cfg, settings)

    def _may_use_tls(self) -> bool:
        return self.default_level in LEVELS_WITH_TLS or bool(self.policy_maps)

    def policy(self, dest_text: str, dest_host: str) -> Policy:
        """policy - the level and match strategies for a next-hop destination."""
        level, match = self.default_level, None
        value = self._lookup(dest_text, dest_host) if self.policy_maps else None
        if value:
            level, match = _parse_policy(value, dest_text)
        if level in ("verify", "secure") and match is None:
            match = self.verify_match if level == "verify" else self.secure_match
        return Policy(level, dest_host.lower().rstrip("."), match or [])

    def _lookup(self, dest_text: str, dest_host: str) -> str | None:
        """_lookup - `[host]:port` as given, else the domain and its parents."""
        try:
            if dest_text.startswith("["):
                return self.policy_maps.lookup(dest_text.lower())
            name = dest_host.lower().rstrip(".")
            value = self.policy_maps.lookup(name)
            while value is None and "." in name:
                name = name.split(".", 1)[1]
                value = self.policy_maps.lookup("." + name)
            return value
        except TableError as e:
            raise PolicyError(f"TLS policy lookup for {dest_text}: {e}") from None


def _open_maps(cfg: Config, name: str) -> Maps:
    """_open_maps - the tables NAME lists; an unusable table type is fatal, as in Postfix."""
    try:
        return Maps.from_specs(cfg.list(name), cfg)
    except TableError as e:
        log.fatal(f"{name}: {e}")


def cryptography_x509() -> ModuleType:
    """cryptography_x509 - cryptography's x509 module, through tlsutil's one
    accessor: TlsClient calls this at start when TLS is configured (a jailed
    process cannot import), and a client without TLS never loads it."""
    return tlsutil.x509_support().x509


def dane_module() -> ModuleType:
    """dane_module - services.smtp.dane, imported on first need.

    It loads cryptography (see cryptography_x509), which a client without a
    DANE level never needs; TlsClient imports it at start when a DANE level
    may be used, so it is there before the jail."""
    return importlib.import_module("services.smtp.dane")


def _default_level(cfg: Config, settings: Settings) -> str:
    """_default_level - *_tls_security_level, else the legacy *_enforce_tls/*_use_tls."""
    if settings.tls_level:
        return settings.tls_level
    if cfg.bool(settings.param("_enforce_tls")):
        return "encrypt"
    return "may" if cfg.bool(settings.param("_use_tls")) else "none"


def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").replace(":", " ").split() if w]


def _parse_policy(value: str, where: str) -> tuple[str, list[str] | None]:
    """_parse_policy - "verify match=hostname:nexthop" -> ("verify", [...])."""
    words = value.split()
    level = words[0].lower()
    if level not in tlsutil.LEVELS:
        raise PolicyError(f"TLS policy lookup for {where}: invalid TLS level \"{words[0]}\"")
    match = None
    for word in words[1:]:
        name, eq, arg = word.partition("=")
        if not eq:
            raise PolicyError(f"TLS policy lookup for {where}: malformed attribute \"{word}\"")
        if name.lower() == "match":
            match = [m for m in arg.split(":") if m]
        elif name.lower() in IGNORED_ATTRIBUTES:
            log.warning(f"TLS policy lookup for {where}: attribute \"{name}\" is ignored")
        else:
            raise PolicyError(f"TLS policy lookup for {where}: unknown attribute \"{name}\"")
    return level, match


def _contexts(cfg: Config, prefix: str) -> dict[str, ssl.SSLContext | None]:
    """_contexts - one context per level kind; None where the settings are unusable."""
    out: dict[str, ssl.SSLContext | None] = {}
    for kind in ("may", "encrypt", "verify"):
        try:
            ctx = tlsutil.client_context(cfg, kind, prefix)
        except tlsutil.TlsError as e:
            log.warning(f"TLS library problem: {e}")
            out[kind] = None
            continue
        # Names are matched here (several strategies), OpenSSL checks the chain.
        ctx.check_hostname = False
        out[kind] = ctx
    return out


def _ca_certs(cafile: str) -> list:
    """_ca_certs - the CAfile's certificates, to tell Trusted from Untrusted at may/encrypt."""
    if not cafile:
        return []
    try:
        with open(cafile, "rb") as f:
            return cryptography_x509().load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return []       # the context already warned about an unusable CAfile


# -- STARTTLS -------------------------------------------------------------------------

def check(session: Session, policy: Policy, tls_client: TlsClient) -> None:
    """check - STARTTLS when POLICY wants it; SessionError when TLS is required and fails."""
    if policy.level in DANE_LEVELS and not session.host.unix:
        policy = dane_policy(session, policy, tls_client)
    level = policy.level
    if level not in LEVELS_WITH_TLS or session.host.unix:
        return
    if not session.has("STARTTLS"):
        if policy.required:
            raise SessionError(f"TLS is required, but was not offered by host "
                               f"{session.host.namaddr}", "4.7.4")
        return
    kind = "verify" if level in MATCHING else ("may" if level == "may" else "encrypt")
    ctx = tls_client.contexts.get(kind)
    if ctx is None:
        if policy.required:
            raise SessionError("TLS is required, but our TLS engine is unavailable", "4.7.5")
        return
    reply = session.command("STARTTLS", "starttls", "sending STARTTLS")
    if reply.code // 100 != 2:
        if not policy.required:
            return       # RFC 3207 4: the session goes on without TLS
        raise SessionError(f"TLS is required, but host {session.host.namaddr} refused to "
                           f"start TLS: {reply.text}", "4.7.5")
    tls_sock = _handshake(session, ctx, policy, tls_client)
    trust = _classify(tls_sock, policy, session, tls_client)
    session.sock = tls_sock
    session._rfile = tls_sock.makefile("rb")
    session.tls = trust
    if (level in MATCHING or policy.tlsa) and trust != "Verified":
        raise SessionError("Server certificate not verified", "4.7.5")
    session._hello("LHLO" if session.settings.lmtp else "EHLO")


def dane_policy(session: Session, policy: Policy, tls_client: TlsClient) -> Policy:
    """dane_policy - what DANE makes of POLICY for this host: the records to
    match, or `may`/`encrypt`; SessionError when the host must be deferred."""
    if tls_client.dane is None:       # cannot happen: a DANE level made one
        raise SessionError("client TLS configuration problem", "4.7.5")
    host = session.host
    try:
        decision = tls_client.dane.decide(policy.level, host, host.port)
    except dane_module().DaneDefer as e:
        raise SessionError(e.reason, e.dsn) from None
    return replace(policy, level=decision.level, tlsa=decision.records)


def _handshake(session: Session, ctx: ssl.SSLContext, policy: Policy,
               tls_client: TlsClient) -> ssl.SSLSocket:
    host = session.host
    assert session.sock is not None  # the session is connected
    try:
        session.sock.settimeout(session.settings.timeouts.get("starttls"))
        return ctx.wrap_socket(session.sock, server_hostname=_sni(host.name))
    except ssl.SSLCertVerificationError as e:
        session.usable = False
        if tls_client.loglevel >= 1:
            log.info(f"server certificate verification failed for {host.namaddr}:{host.port}: "
                     f"num={e.verify_code}:{e.verify_message}")
        raise SessionError("Server certificate not verified", "4.7.5") from None
    except (ssl.SSLError, OSError, socket.timeout) as e:
        session.usable = False
        detail = getattr(e, "reason", None) or e
        log.warning(f"TLS library problem: {detail}")
        reason = f"Cannot start TLS: handshake failure with {host.namaddr}: {detail}"
        if policy.level == "may":
            raise PlaintextRetry(reason, "4.7.5") from None
        raise SessionError(reason, "4.7.5") from None


def _sni(name: str) -> str | None:
    """_sni - the name sent as SNI: a host name, never an address."""
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        return name or None


def _classify(tls_sock: ssl.SSLSocket, policy: Policy, session: Session,
              tls_client: TlsClient) -> str:
    """_classify - Verified, Trusted or Untrusted, and Postfix's log line for it."""
    host = session.host
    names: list[str] = []
    wanted: list[tuple[str, bool]] = []
    if policy.tlsa:
        trust = _dane_trust(tls_sock, policy, session, tls_client)
    elif policy.level in MATCHING:
        names = cert_names(tls_sock.getpeercert() or {})
        wanted = reference_names(policy, host.name)
        trust = "Verified" if matches(names, wanted) else "Trusted"
    else:
        der = tls_sock.getpeercert(binary_form=True) or b""
        trust = "Trusted" if der and issued_by_known_ca(der, tls_client.ca_certs) else "Untrusted"
    if tls_client.loglevel >= 1:
        info = tlsutil.Session.from_ssl(tls_sock)
        log.info(tlsutil.established_to(trust, host.namaddr, host.port, info))
        if policy.level in MATCHING and trust != "Verified":
            wanted_text = ", ".join(dict.fromkeys(("." if sub else "") + w for w, sub in wanted))
            log.info(f"server certificate verification failed for {host.namaddr}:{host.port}: "
                     f"certificate names {', '.join(names) or 'none'} do not match "
                     f"{wanted_text or 'nothing (no match strategy)'}")
    return trust


def _dane_trust(tls_sock: ssl.SSLSocket, policy: Policy, session: Session,
                tls_client: TlsClient) -> str:
    """_dane_trust - Verified when the chain matches a TLSA record, else Trusted
    or Untrusted as at `encrypt` (the mismatch is logged first, as Postfix does)."""
    host = session.host
    chain = peer_chain(tls_sock)
    # DANE-TA: the leaf must name the MX host or the next-hop domain (RFC 7672 3.2.3).
    wanted = [(host.name.lower().rstrip("."), False), (policy.nexthop, False)]
    assert tls_client.dane is not None  # TLSA records came from dane_policy
    how = dane_module().match_chain(chain, policy.tlsa, tls_client.dane.digests,
                      lambda names: matches(names, [w for w in wanted if w[0]]))
    if how:
        return "Verified"
    if tls_client.loglevel >= 1:
        log.info(f"server certificate verification failed for {host.namaddr}:{host.port}: "
                 f"{DANE_NO_MATCH}")
    leaf = chain[0] if chain else b""
    return "Trusted" if leaf and issued_by_known_ca(leaf, tls_client.ca_certs) else "Untrusted"


def peer_chain(tls_sock: ssl.SSLSocket) -> list[bytes]:
    """peer_chain - the certificates the server sent, leaf first, DER-encoded.

    Python 3.13 has SSLSocket.get_unverified_chain(); 3.11 and 3.12 have it
    only on the private _sslobj. Without either, the leaf alone."""
    getter = getattr(tls_sock, "get_unverified_chain", None) or \
        getattr(getattr(tls_sock, "_sslobj", None), "get_unverified_chain", None)
    if getter is not None:
        try:
            return [_der(c) for c in getter() or ()]
        except (ssl.SSLError, ValueError, AttributeError):
            pass
    leaf = tls_sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _der(cert) -> bytes:
    """_der - one certificate of get_unverified_chain() as DER bytes (3.13 gives
    bytes; 3.11's private call gives _ssl.Certificate, whose DER constant is
    private too)."""
    if isinstance(cert, bytes):
        return cert
    return cert.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]  # private


# -- certificate names ----------------------------------------------------------------

def cert_names(peercert: dict) -> list[str]:
    """cert_names - the DNS subjectAltNames of a verified peer, else its subject CN."""
    names = [v.lower() for k, v in peercert.get("subjectAltName", ()) if k == "DNS"]
    if names:
        return names
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value.lower())
    return names


def reference_names(policy: Policy, hostname: str) -> list[tuple[str, bool]]:
    """reference_names - (name, subdomains_only) pairs the match strategies ask for."""
    out = []
    for strategy in policy.match:
        s = strategy.strip().lower()
        if s == "hostname":
            out.append((hostname.lower().rstrip("."), False))
        elif s == "nexthop":
            out.append((policy.nexthop, False))
        elif s == "dot-nexthop":
            out.append((policy.nexthop, True))
        elif s.startswith("."):
            out.append((s[1:], True))
        elif s:
            out.append((s, False))
    return [(name, sub) for name, sub in out if name]


def matches(cert: list[str], wanted: list[tuple[str, bool]]) -> bool:
    """matches - does any certificate name satisfy any reference name?"""
    return any(_match_one(c, name, sub) for c in cert for name, sub in wanted)


def _match_one(cert_name: str, name: str, subdomains: bool) -> bool:
    if subdomains:
        base = cert_name[2:] if cert_name.startswith("*.") else cert_name
        return base.endswith("." + name) or (cert_name.startswith("*.") and base == name)
    if cert_name == name:
        return True
    # A wildcard stands for exactly one label (RFC 6125 6.4.3).
    return cert_name.startswith("*.") and "." in name and name.split(".", 1)[1] == cert_name[2:]


def issued_by_known_ca(der: bytes, cas: list) -> bool:
    """issued_by_known_ca - is the leaf one of CAS or signed by one of them, and current?"""
    if not cas:
        return False
    try:
        leaf = cryptography_x509().load_der_x509_certificate(der)
    except ValueError:
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return False
    for ca in cas:
        if ca == leaf:
            return True
        if ca.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(ca)
            return True
        except Exception:     # a bad signature or an unsupported key: not this CA
            continue
    return False
