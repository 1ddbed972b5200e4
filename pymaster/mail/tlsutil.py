"""TLS for pymaster: SSL contexts built from main.cf, fingerprints, log lines.

Everything TLS that the SMTP server, the SMTP client and `postfix tls`
share lives here, on top of the standard library's `ssl`:

- the Postfix protocol syntax (`>=TLSv1.2`, `!SSLv3, !TLSv1`, `TLSv1.2
  TLSv1.3`) turned into a minimum and maximum version;
- the cipher grades (high, medium, low, export, null) and the
  `*_tls_exclude_ciphers` list turned into an OpenSSL cipher string;
- server and client contexts from the smtpd_tls_* / smtp_tls_* parameters;
- certificate fingerprints in Postfix's form (`AB:CD:…`, the digest named
  by `*_tls_fingerprint_digest` over the DER certificate or its public key);
- the "TLS connection established" log line shapes.

Caveat: Python's `ssl` has no verification callback, so a server that asks
for client certificates (smtpd_tls_ask_ccert) can only accept certificates
whose issuer is in smtpd_tls_CAfile/CApath; Postfix also accepts unverified
ones (and never trusts them). docs/tls.md says so.

Interface:
    TlsError                                  a setting or file that cannot be used
    protocol_range(value) -> (ssl.TLSVersion, ssl.TLSVersion)
    cipher_string(grade, exclude="") -> str
    server_context(cfg, prefix="smtpd") -> ssl.SSLContext | None   (None: no certificate)
    client_context(cfg, level, prefix="smtp") -> ssl.SSLContext
    fingerprint(der: bytes, digest="sha256") -> str
    pkey_fingerprint(der: bytes, digest="sha256") -> str
    x509_support() -> X509Support   cryptography's certificate code, loaded on first use
    Session.from_ssl(sslobj, digest, verified) -> Session   (what was negotiated)
    session.summary() -> "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    legacy_level(cfg, prefix) -> "none" | "may" | "encrypt" | …
"""

from __future__ import annotations

import hashlib
import importlib
import os
import ssl
from dataclasses import dataclass
from types import ModuleType

from pymaster.mail.config import Config

# Postfix's protocol names, oldest first. SSLv2/SSLv3 are never enabled.
PROTOCOLS = ["SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_VERSIONS = {
    "TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# The grades of postconf(5) "tls_high_cipherlist" and friends, as OpenSSL strings.
CIPHER_GRADES = {
    "high": "HIGH:!aNULL:!eNULL",
    "medium": "HIGH:MEDIUM:!aNULL:!eNULL",
    "low": "HIGH:MEDIUM:LOW:!aNULL:!eNULL",
    "export": "HIGH:MEDIUM:LOW:EXPORT:!aNULL:!eNULL",
    "null": "eNULL:!aNULL",
}
DIGESTS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")


class TlsError(Exception):
    """A TLS setting or file that cannot be used; the text names which."""


# -- parameter parsing ----------------------------------------------------------

def protocol_range(value: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """protocol_range - the versions a protocols parameter allows, as (min, max).

    Accepts the three forms of postconf(5): `>=TLSv1.2` / `<=TLSv1.3`
    bounds, `!TLSv1` exclusions, and a plain list of included names. A gap
    in the middle (`!TLSv1.2` with 1.1 and 1.3 allowed) cannot be expressed
    with a min/max pair; the range then spans the allowed ends."""
    allowed = set(PROTOCOLS[2:])
    included: set[str] = set()
    for word in value.replace(",", " ").replace(":", " ").split():
        if word.startswith(">="):
            allowed &= set(PROTOCOLS[_index(word[2:], value):])
        elif word.startswith("<="):
            allowed &= set(PROTOCOLS[:_index(word[2:], value) + 1])
        elif word.startswith("!"):
            allowed.discard(PROTOCOLS[_index(word[1:], value)])
        else:
            included.add(PROTOCOLS[_index(word, value)])
    if included:
        allowed &= included
    usable = [p for p in PROTOCOLS if p in allowed and p in _VERSIONS]
    if not usable:
        raise TlsError(f"no TLS protocol left in \"{value}\"")
    return _VERSIONS[usable[0]], _VERSIONS[usable[-1]]


def _index(name: str, value: str) -> int:
    for i, known in enumerate(PROTOCOLS):
        if known.lower() == name.lower():
            return i
    raise TlsError(f"unknown TLS protocol \"{name}\" in \"{value}\"")


def cipher_string(grade: str, exclude: str = "") -> str:
    """cipher_string - the OpenSSL cipher list for a Postfix grade minus EXCLUDE."""
    base = CIPHER_GRADES.get(grade.strip().lower())
    if base is None:
        raise TlsError(f"invalid cipher grade: \"{grade}\"")
    excluded = [f"!{name}" for name in exclude.replace(",", " ").replace(":", " ").split()]
    return ":".join([base, *excluded])


def legacy_level(cfg: Config, prefix: str) -> str:
    """legacy_level - PREFIX_tls_security_level, else what *_use_tls/*_enforce_tls say."""
    level = cfg.get(f"{prefix}_tls_security_level").strip().lower()
    if level:
        if level not in LEVELS:
            raise TlsError(f"{prefix}_tls_security_level: unknown level \"{level}\"")
        return level
    if cfg.bool(f"{prefix}_enforce_tls"):
        return "encrypt"
    return "may" if cfg.bool(f"{prefix}_use_tls") else "none"


def _apply_common(ctx: ssl.SSLContext, cfg: Config, prefix: str, mandatory: bool) -> None:
    """_apply_common - versions and ciphers (the mandatory ones where TLS is required)."""
    which = "mandatory_" if mandatory else ""
    try:
        ctx.minimum_version, ctx.maximum_version = \
            protocol_range(cfg.get(f"{prefix}_tls_{which}protocols"))
    except TlsError as e:
        raise TlsError(f"{prefix}_tls_{which}protocols: {e}") from None
    grade = cfg.get(f"{prefix}_tls_{which}ciphers")
    exclude = cfg.get(f"{prefix}_tls_exclude_ciphers")
    try:
        ctx.set_ciphers(cipher_string(grade, exclude))
    except (TlsError, ssl.SSLError) as e:
        raise TlsError(f"{prefix}_tls_{which}ciphers: {e}") from None


def _load_cas(ctx: ssl.SSLContext, cfg: Config, prefix: str) -> None:
    cafile = cfg.get(f"{prefix}_tls_CAfile").strip() or None
    capath = cfg.get(f"{prefix}_tls_CApath").strip() or None
    if capath and not os.path.isdir(capath):
        raise TlsError(f"{prefix}_tls_CApath: {capath}: not a directory")
    if cafile or capath:
        try:
            ctx.load_verify_locations(cafile=cafile, capath=capath)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load CA certificates from {cafile or capath}: {e}") from None


def _load_chain(ctx: ssl.SSLContext, cfg: Config, prefix: str, required: bool) -> bool:
    """_load_chain - PREFIX_tls_chain_files, else cert_file/key_file; False when unset."""
    chain = cfg.list(f"{prefix}_tls_chain_files")
    if chain:
        pairs = [(path, path) for path in chain]     # each file holds key and certificates
    else:
        cert = cfg.get(f"{prefix}_tls_cert_file").strip()
        key = cfg.get(f"{prefix}_tls_key_file").strip() or cert
        if not cert:
            if required:
                raise TlsError(f"{prefix}_tls_cert_file is not set")
            return False
        pairs = [(cert, key)]
    for cert, key in pairs:
        try:
            ctx.load_cert_chain(cert, key)
        except FileNotFoundError as e:
            raise TlsError(f"cannot load certificate from {e.filename or cert}: "
                           "No such file or directory") from None
        except (OSError, ssl.SSLError) as e:
            raise TlsError(f"cannot load certificate and key from {cert} and {key}: "
                           f"{getattr(e, 'reason', None) or e}") from None
    return True


# -- contexts ---------------------------------------------------------------------

def server_context(cfg: Config, prefix: str = "smtpd",
                   level: str | None = None) -> ssl.SSLContext | None:
    """server_context - the SMTP server's context, or None when no certificate is set.

    Files are read now (before any chroot). smtpd_tls_ask_ccert asks the
    client for a certificate (verified against smtpd_tls_CAfile/CApath);
    smtpd_tls_req_ccert (with level encrypt) insists on one."""
    level = level or legacy_level(cfg, prefix)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    _apply_common(ctx, cfg, prefix, mandatory=level == "encrypt")
    if not _load_chain(ctx, cfg, prefix, required=False):
        return None
    _load_cas(ctx, cfg, prefix)
    if cfg.bool(f"{prefix}_tls_req_ccert") and level == "encrypt":
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif cfg.bool(f"{prefix}_tls_ask_ccert") or cfg.bool(f"{prefix}_tls_req_ccert"):
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(cfg: Config, level: str, prefix: str = "smtp") -> ssl.SSLContext:
    """client_context - the SMTP client's context for one security LEVEL.

    may and encrypt encrypt without checking the server's certificate (it
    is still classified for the log); verify and secure require a chain
    to smtp_tls_CAfile/CApath and a name match (checked by the caller's
    server_hostname). A client certificate is offered when one is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.options |= ssl.OP_NO_COMPRESSION
    _apply_common(ctx, cfg, prefix, mandatory=level not in ("may", "none"))
    _load_cas(ctx, cfg, prefix)
    _load_chain(ctx, cfg, prefix, required=False)
    if level in ("verify", "secure"):
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = True
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# -- fingerprints ----------------------------------------------------------------

def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def _digest(name: str) -> str:
    name = (name or "sha256").strip().lower()
    if name not in DIGESTS:
        raise TlsError(f"unsupported fingerprint digest: \"{name}\"")
    return name


def fingerprint(der: bytes, digest: str = "sha256") -> str:
    """fingerprint - Postfix's certificate fingerprint: colon-separated upper-case hex."""
    return _colon_hex(hashlib.new(_digest(digest), der).digest())


@dataclass(frozen=True)
class X509Support:
    """cryptography's modules that certificate names and key digests use."""
    x509: ModuleType
    serialization: ModuleType
    oid: ModuleType


def x509_support() -> X509Support:
    """x509_support - cryptography's certificate code, imported on first call.

    The one accessor of an optional heavy dependency (about 50 ms to
    import): a program that offers or uses TLS calls it in its pre-jail
    step, one without TLS never loads it."""
    return X509Support(importlib.import_module("cryptography.x509"),
                       importlib.import_module("cryptography.hazmat.primitives.serialization"),
                       importlib.import_module("cryptography.x509.oid"))


def pkey_fingerprint(der: bytes, digest: str = "sha256") -> str:
    """pkey_fingerprint - the digest of the certificate's public key (SubjectPublicKeyInfo)."""
    crypto = x509_support()
    key = crypto.x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(crypto.serialization.Encoding.DER,
                            crypto.serialization.PublicFormat.SubjectPublicKeyInfo)
    return _colon_hex(hashlib.new(_digest(digest), spki).digest())


def cert_names(der: bytes) -> tuple[str, str]:
    """cert_names - (subject CN, issuer CN) of a DER certificate, "" when absent."""
    crypto = x509_support()
    cert = crypto.x509.load_der_x509_certificate(der)

    def cn(name) -> str:
        attrs = name.get_attributes_for_oid(crypto.oid.NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""
    return cn(cert.subject), cn(cert.issuer)


# -- what a handshake negotiated ---------------------------------------------------------

@dataclass
class Session:
    """The outcome of one TLS handshake, for log lines, Received: and restrictions."""
    protocol: str
    cipher: str
    bits: int
    alg_bits: int
    peer_der: bytes = b""
    verified: bool = False
    fingerprint: str = ""
    pkey_fingerprint: str = ""
    peer_cn: str = ""
    issuer_cn: str = ""

    @classmethod
    def from_ssl(cls, sslobj, digest: str = "sha256", verified: bool = False) -> "Session":
        name, _, bits = sslobj.cipher() or ("", "", 0)
        info = cls(sslobj.version() or "", name, bits or 0, bits or 0)
        der = sslobj.getpeercert(binary_form=True) or b""
        if der:
            info.peer_der = der
            info.verified = verified
            info.fingerprint = fingerprint(der, digest)
            try:
                info.pkey_fingerprint = pkey_fingerprint(der, digest)
                info.peer_cn, info.issuer_cn = cert_names(der)
            except Exception:   # an odd certificate must not break the session
                pass
        return info

    def summary(self) -> str:
        """summary - `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`."""
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.alg_bits} bits)"

    def server_trust(self) -> str:
        """server_trust - how smtpd names the client: Anonymous, Untrusted or Trusted."""
        if not self.peer_der:
            return "Anonymous"
        return "Trusted" if self.verified else "Untrusted"


def established_from(info: Session, namaddr: str) -> str:
    """established_from - smtpd's `Anonymous TLS connection established from N[A]: …`."""
    return f"{info.server_trust()} TLS connection established from {namaddr}: {info.summary()}"


def established_to(trust: str, namaddr: str, port: int, info: Session) -> str:
    """established_to - the client's `Verified TLS connection established to N[A]:25: …`."""
    return f"{trust} TLS connection established to {namaddr}:{port}: {info.summary()}"
