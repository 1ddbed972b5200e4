"""DANE for the smtp/lmtp client: TLSA records, the DANE policy of one host,
and matching the server's certificate chain (RFC 6698, RFC 7671, RFC 7672).

Postfix's `dane` and `dane-only` levels (TLS_README "DANE", postconf(5)
smtp_tls_security_level) need `smtp_dns_support_level = dnssec`: the
client trusts what its validating resolver marks with the AD flag
(services/smtp/dns.py). For one MX host the policy is decided before
STARTTLS (decide):

    dnssec lookups disabled       dane: warning, `may`;  dane-only: defer
    MX record set insecure        `may` (dane-only: defer), unless
                                  smtp_tls_dane_insecure_mx_policy = dane
    host address records insecure no TLSA lookup (as "no TLSA records"),
                                  unless smtp_tls_force_insecure_host_tlsa_lookup
    TLSA lookup fails (SERVFAIL)  defer: "TLSA lookup error for HOST:PORT" (4.7.5)
    no secure TLSA records        `may`;  dane-only: defer "no TLSA records found"
    TLSA records, none usable     `encrypt`; dane-only: defer "TLSA records unusable"
    usable TLSA records           TLS mandatory, the chain must match one

The TLSA name is `_PORT._tcp.HOST` (RFC 7672 2.2.3). Usable records
(RFC 7672 3.1): usage DANE-TA(2) or DANE-EE(3) (PKIX-TA(0) and PKIX-EE(1)
are unusable for SMTP), selector 0 (the whole certificate) or 1
(SubjectPublicKeyInfo), matching type 0 (exact), or a digest that
tls_dane_digests enables (sha256 = 1, sha512 = 2 by default).

Matching (match_chain): a DANE-EE(3) record matches the leaf alone: no
name check, no expiry check (RFC 7672 3.1.1). A DANE-TA(2) record matches
a certificate the server sent above its leaf (or, as `2 0 0`, holds the
trust anchor itself); every certificate from the leaf up to it must be
issued by the next one and be current, and the leaf must name the MX host
or the next-hop domain (RFC 7672 3.2.2, 3.2.3).

Caveat: Python 3.11's ssl exposes the peer's chain only through the
private `SSLSocket._sslobj.get_unverified_chain()` (public in 3.13);
tls.py uses it, and falls back to the leaf alone, with which only DANE-EE
records can match. A DANE-TA(2) record with selector 1 must name a
certificate the server sends; a bare trust-anchor key (`2 1 0`) for a
certificate not in the chain is not supported.

Interface:
    Tlsa(usage, selector, mtype, data)          one record; Tlsa.from_text("3 1 1 ab…")
    parse_digests(text) -> dict[int, str]       tls_dane_digests: matching type -> hash name
    usable(records, digests) -> list[Tlsa]
    DaneResolver(cfg, settings)                 a DNSSEC resolver (pymaster.util.dns), made at start
        .tlsa(host, port) -> list[Tlsa]         [] when none secure; raises DnsError
        .decide(level, host, port) -> Decision  raises DaneDefer
    Decision(level, records)                    level "dane", "dane-only", "encrypt" or "may"
    match_chain(chain_der, records, digests, names_ok, now=None) -> str | None
        "DANE-EE" / "DANE-TA" for the record that matched, None for no match
    DaneDefer(reason, dsn)
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field
from typing import Callable

import dns.exception
import dns.name

# Record types load their module on first use: after the jail they cannot.
import dns.rdtypes.ANY.TLSA  # noqa: F401
import dns.resolver
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtensionOID, NameOID

from pymaster.mail.config import Config
from pymaster.util import log
from pymaster.util.dns import DnsError, is_secure, make_resolver
from services.smtp.dns import Host, dnssec_enabled
from services.smtp.settings import Settings

DANE_LEVELS = ("dane", "dane-only")
DANE_TA, DANE_EE = 2, 3
SELECTORS = (0, 1)
KNOWN_DIGESTS = {"sha256": 1, "sha512": 2}
# Postfix's words for each way a destination falls short of DANE.
NOT_DNSSEC = "non DNSSEC destination"
NO_TLSA = "no TLSA records found"
UNUSABLE = "TLSA records unusable"
CONFIG_PROBLEM = "client TLS configuration problem"


class DaneDefer(Exception):
    """DANE says: do not deliver to this host now."""

    def __init__(self, reason: str, dsn: str = "4.7.5") -> None:
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def from_text(cls, text: str) -> "Tlsa":
        """from_text - "3 1 1 ABCD…" (the data may be split by spaces)."""
        usage, selector, mtype, *data = text.split()
        return cls(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data)))

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass
class Decision:
    """What DANE makes of one host: the level to use and the records to match."""
    level: str
    records: list[Tlsa] = field(default_factory=list)


# -- records --------------------------------------------------------------------------

def parse_digests(text: str) -> dict[int, str]:
    """parse_digests - "sha512 sha256" or "sha512=2 sha256=1" -> {2: "sha512", 1: "sha256"}."""
    out: dict[int, str] = {}
    for word in text.replace(",", " ").split():
        name, _, number = word.lower().partition("=")
        try:
            mtype = int(number) if number else KNOWN_DIGESTS[name]
            hashlib.new(name)
        except (KeyError, ValueError):
            log.warning(f"tls_dane_digests: unsupported digest \"{word}\": ignored")
            continue
        if 1 <= mtype <= 254:
            out.setdefault(mtype, name)
    return out


def usable(records: list[Tlsa], digests: dict[int, str]) -> list[Tlsa]:
    """usable - the records an SMTP client may use (RFC 7672 3.1)."""
    out = []
    for r in records:
        if r.usage not in (DANE_TA, DANE_EE) or r.selector not in SELECTORS:
            continue
        if r.mtype == 0 or (r.mtype in digests and
                            len(r.data) == hashlib.new(digests[r.mtype]).digest_size):
            out.append(r)
    return out


# -- the policy of one host ---------------------------------------------------------

class DaneResolver:
    """TLSA lookups and DANE decisions for one client process."""

    def __init__(self, cfg: Config, settings: Settings,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        self.dnssec = dnssec_enabled(cfg, settings) and \
            "dns" in settings.host_lookup and not settings.disable_dns
        self.insecure_mx_dane = \
            cfg.get(settings.param("_tls_dane_insecure_mx_policy")).strip().lower() == "dane"
        self.force_tlsa = cfg.bool(settings.param("_tls_force_insecure_host_tlsa_lookup"))
        self.digests = parse_digests(cfg.get("tls_dane_digests"))
        self.resolver = resolver or make_resolver(cfg.list("dns_nameservers"), dnssec=True)

    def tlsa(self, host: str, port: int) -> list[Tlsa]:
        """tlsa - the secure TLSA records of _PORT._tcp.HOST; [] when there are none."""
        qname = dns.name.from_text(f"_{port}._tcp.{host.rstrip('.')}")
        try:
            answer = self.resolver.resolve(qname, "TLSA", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError, ValueError) as e:
            raise DnsError(f"TLSA lookup for {qname}: {e}") from None
        if not is_secure(answer):
            return []       # an insecure TLSA record set is no record set (RFC 7672 2.2)
        return [Tlsa(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in answer]

    def decide(self, level: str, host: Host, port: int) -> Decision:
        """decide - LEVEL (dane or dane-only) for HOST:PORT; raises DaneDefer."""
        if not self.dnssec:
            return _incompatible(level, f"{host.name}: {level} configured with dnssec "
                                        f"lookups disabled", config=True)
        if host.mx_secure is False and (level == "dane-only" or not self.insecure_mx_dane):
            return _incompatible(level, NOT_DNSSEC)
        records: list[Tlsa] = []
        if host.secure or self.force_tlsa:
            try:
                records = self.tlsa(host.name, port)
            except DnsError:
                raise DaneDefer(f"TLSA lookup error for {host.name}:{port}") from None
        if not records:
            return _incompatible(level, NO_TLSA)
        good = usable(records, self.digests)
        if not good:
            return _incompatible(level, UNUSABLE, unusable=True)
        return Decision(level, good)


def _incompatible(level: str, why: str, config: bool = False,
                  unusable: bool = False) -> Decision:
    """_incompatible - DANE does not apply: `dane` falls back (to `encrypt` when
    records exist but none is usable, else to `may`); `dane-only` defers."""
    if config:
        log.warning(why)
    if level == "dane":
        return Decision("encrypt" if unusable else "may")
    raise DaneDefer(CONFIG_PROBLEM if config else why)


# -- matching the chain -------------------------------------------------------------

def match_chain(chain_der: list[bytes], records: list[Tlsa], digests: dict[int, str],
                names_ok: Callable[[list[str]], bool],
                now: datetime.datetime | None = None) -> str | None:
    """match_chain - "DANE-EE" or "DANE-TA" when the server's chain (leaf first)
    satisfies a record, else None. NAMES_OK judges the leaf's names (DANE-TA)."""
    if not chain_der:
        return None
    if any(r.usage == DANE_EE and _matches(r, chain_der[0], digests) for r in records):
        return "DANE-EE"
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for r in (r for r in records if r.usage == DANE_TA):
        path = _path_to_anchor(r, chain, chain_der, digests)
        if path and _path_ok(path, now) and names_ok(cert_names(chain[0])):
            return "DANE-TA"
    return None


def _path_to_anchor(record: Tlsa, chain: list, chain_der: list[bytes],
                    digests: dict[int, str]) -> list | None:
    """_path_to_anchor - the certificates from the leaf up to the trust anchor
    RECORD names, each followed by its issuer; None when there is none."""
    for depth in range(1, len(chain)):
        if _matches(record, chain_der[depth], digests):
            return chain[:depth + 1]
    if (record.selector, record.mtype) == (0, 0):
        # The record holds the trust anchor itself, which the server need not send.
        try:
            anchor = x509.load_der_x509_certificate(record.data)
        except ValueError:
            return None
        for depth in range(len(chain)):
            if _issued_by(chain[depth], anchor):
                return chain[:depth + 1] + [anchor]
    return None


def _path_ok(path: list, now: datetime.datetime) -> bool:
    """_path_ok - each certificate is issued by the next, and every one below
    the anchor is current (the anchor's own dates do not matter)."""
    for cert, issuer in zip(path, path[1:]):
        if not _issued_by(cert, issuer):
            return False
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return False
    return True


def _issued_by(cert, issuer) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except Exception:      # wrong issuer name, bad signature, unsupported key type
        return False


def _matches(record: Tlsa, der: bytes, digests: dict[int, str]) -> bool:
    """_matches - does RECORD describe the certificate DER?"""
    try:
        data = der if record.selector == 0 else _spki(der)
    except ValueError:
        return False
    if record.mtype == 0:
        return data == record.data
    name = digests.get(record.mtype)
    if not name:
        return False
    return hashlib.new(name, data).digest() == record.data


def _spki(der: bytes) -> bytes:
    """_spki - the certificate's SubjectPublicKeyInfo, DER-encoded."""
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_names(cert) -> list[str]:
    """cert_names - the DNS subjectAltNames of CERT, else its subject common names."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        names = [n.lower() for n in san.value.get_values_for_type(x509.DNSName)]
        if names:
            return names
    except x509.ExtensionNotFound:
        pass
    return [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
