"""`postfix tls SUBCOMMAND`: server keys and certificates, and a small local CA.

The subcommands of postfix-tls(1), with its semantics: keys and
certificates live in $config_directory, private keys are written mode 0600,
and settings are made with the equivalent of `postconf -e` (only when the
TLS settings are still at their defaults; otherwise the command says what
to set and changes nothing).

    enable-client [-r randsource]
    enable-server [-r randsource] [-a rsa|ecdsa] [-b bits] [--ca] [hostname...]
    new-server-key [-a rsa|ecdsa] [-b bits] [--ca] [hostname...]
    new-server-cert [-a …] [-b …] [--ca] [hostname...]     (for the current key)
    new-server-cert-request [-a …] [-b …] [hostname...]    (CSR on stdout)
    deploy-server-cert certfile keyfile
    output-server-tlsa [-h hostname] [keyfile...]
    all-default-client, all-default-server

pymaster's additions (docs/tls.md), a local CA in $config_directory/tls-ca:
    new-ca [-d days] [common name]          ca-key.pem (0600), ca-cert.pem
    new-client-cert NAME [-d days] [--p12 FILE] [--password PASS]
        NAME-key.pem (0600), NAME-cert.pem under tls-ca/clients; prints the
        fingerprint for relay_clientcerts; --p12 also writes a PKCS#12 bundle
        (key, certificate, CA) for a mail client.
--ca has the local CA sign the server certificate instead of self-signing it.

Interface:
    main(cfg, args: list[str]) -> int      exit status (0 ok, 1 error)
    new_key(algorithm="rsa", bits=2048), self_signed(key, names, days),
    ca_signed(key, names, ca_key, ca_cert, days, client=False)
    write_key(path, key), write_cert(path, cert), spki_sha256(cert_or_key) -> str
"""

from __future__ import annotations

import datetime
import hashlib
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pymaster.commands.postconf import Fatal, edit_main_cf, load_setup, write_config_file
from pymaster.mail import tlsutil
from pymaster.mail.config import Config

DEFAULT_DAYS = 365
CA_DAYS = 3650
SERVER_DEFAULTS = ("smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls",
                   "smtpd_tls_cert_file", "smtpd_tls_key_file", "smtpd_tls_chain_files")
CLIENT_DEFAULTS = ("smtp_tls_security_level", "smtp_use_tls", "smtp_enforce_tls")


class Usage(Exception):
    """A bad command line: the text is printed after `postfix tls: fatal:`."""


# -- keys and certificates ------------------------------------------------------------

def new_key(algorithm: str = "rsa", bits: int = 2048):
    if algorithm == "rsa":
        if bits < 2048:
            raise Usage(f"RSA key size {bits} is too small (minimum 2048)")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if algorithm in ("ecdsa", "ec"):
        return ec.generate_private_key(ec.SECP256R1())
    raise Usage(f"unsupported key algorithm: {algorithm} (rsa or ecdsa)")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int):
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _with_names(builder, names: list[str], client: bool):
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    if names and not client:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    return builder


def self_signed(key, names: list[str], days: int = DEFAULT_DAYS) -> x509.Certificate:
    """self_signed - a server certificate for NAMES (the first is the CN), signed by KEY."""
    subject = _name(names[0])
    builder = _with_names(_builder(subject, subject, key.public_key(), days), names, False)
    return builder.sign(key, hashes.SHA256())


def ca_signed(key, names: list[str], ca_key, ca_cert: x509.Certificate,
              days: int = DEFAULT_DAYS, client: bool = False) -> x509.Certificate:
    """ca_signed - a server (or client) certificate for KEY, issued by the local CA."""
    builder = _builder(_name(names[0]), ca_cert.subject, key.public_key(), days)
    builder = _with_names(builder, names, client)
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
    return builder.sign(ca_key, hashes.SHA256())


def new_ca_cert(key, common_name: str, days: int = CA_DAYS) -> x509.Certificate:
    subject = _name(common_name)
    builder = _builder(subject, subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
    builder = builder.add_extension(x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False), True)
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    return builder.sign(key, hashes.SHA256())


def write_key(path: str, key) -> None:
    """write_key - PEM, unencrypted, created 0600 (never readable by others, even briefly)."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    _write(path, data, 0o600)


def write_cert(path: str, cert: x509.Certificate, *more: x509.Certificate) -> None:
    data = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (cert, *more))
    _write(path, data, 0o644)


def _write(path: str, data: bytes, mode: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_key(path: str):
    try:
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise Usage(f"cannot load private key from {path}: "
                    f"{getattr(e, 'strerror', None) or e}") from None


def load_cert(path: str) -> x509.Certificate:
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificate(f.read())
    except (OSError, ValueError) as e:
        raise Usage(f"cannot load certificate from {path}: "
                    f"{getattr(e, 'strerror', None) or e}") from None


def spki_sha256(obj) -> str:
    """spki_sha256 - hex SHA-256 of the SubjectPublicKeyInfo (TLSA 3 1 1 data)."""
    public = obj.public_key()
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


# -- configuration -------------------------------------------------------------------

def postconf_set(cfg: Config, settings: list[tuple[str, str]]) -> None:
    """postconf_set - `postconf -e name=value …` on cfg's main.cf."""
    try:
        setup = load_setup(cfg.config_dir, {})
        write_config_file(setup.main_cf, edit_main_cf(setup, settings, "set"))
    except Fatal as e:
        raise Usage(str(e)) from None


def _all_default(cfg: Config, names) -> bool:
    return not any(cfg.is_set(name) for name in names)


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


class Tool:
    """One `postfix tls` invocation: the configuration and the output streams."""

    def __init__(self, cfg: Config, out=None, err=None) -> None:
        self.cfg = cfg
        self.dir = cfg.config_dir
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def say(self, text: str) -> None:
        self.out.write(text + "\n")

    @property
    def ca_dir(self) -> str:
        return os.path.join(self.dir, "tls-ca")

    def names(self, hostnames: list[str]) -> list[str]:
        return hostnames or [self.cfg.get("myhostname")]

    # -- server keys ---------------------------------------------------------------
    def make_server_pair(self, opts: dict, hostnames: list[str],
                         key=None) -> tuple[str, str]:
        """make_server_pair - write a new (or KEY's) certificate, and the key; their paths."""
        algorithm = opts.get("a", "rsa")
        key = key or new_key(algorithm, int(opts.get("b", 2048)))
        names = self.names(hostnames)
        if opts.get("ca"):
            ca_key, ca_cert = self.load_ca()
            cert = ca_signed(key, names, ca_key, ca_cert)
            chain: tuple[x509.Certificate, ...] = (ca_cert,)
        else:
            cert, chain = self_signed(key, names), ()
        stamp = _stamp()
        key_path = os.path.join(self.dir, f"key-{algorithm}-{stamp}.pem")
        cert_path = os.path.join(self.dir, f"cert-{algorithm}-{stamp}.pem")
        write_key(key_path, key)
        write_cert(cert_path, cert, *chain)
        return cert_path, key_path

    def enable_server(self, opts: dict, args: list[str]) -> int:
        if not _all_default(self.cfg, SERVER_DEFAULTS):
            self.say("*** Non-default SMTP server TLS settings detected, no changes made.")
            self.say("*** Set smtpd_tls_security_level = may, and smtpd_tls_cert_file and "
                     "smtpd_tls_key_file to a certificate and its key.")
            return 0
        cert, key = self.make_server_pair(opts, args)
        settings = [("smtpd_tls_security_level", "may"), ("smtpd_tls_loglevel", "1"),
                    ("smtpd_tls_cert_file", cert), ("smtpd_tls_key_file", key)]
        if "r" in opts:
            settings.append(("tls_random_source", opts["r"]))
        postconf_set(self.cfg, settings)
        self.say(f"Enabling TLS in the SMTP server with key {key} and certificate {cert}")
        self.say("Run \"postfix reload\" to make the change effective.")
        return 0

    def enable_client(self, opts: dict, args: list[str]) -> int:
        if not _all_default(self.cfg, CLIENT_DEFAULTS):
            self.say("*** Non-default SMTP client TLS settings detected, no changes made.")
            self.say("*** Set smtp_tls_security_level = may to use TLS opportunistically.")
            return 0
        settings = [("smtp_tls_security_level", "may"), ("smtp_tls_loglevel", "1")]
        if "r" in opts:
            settings.append(("tls_random_source", opts["r"]))
        postconf_set(self.cfg, settings)
        self.say("Enabling opportunistic TLS in the SMTP client.")
        self.say("Run \"postfix reload\" to make the change effective.")
        return 0

    def new_server_key(self, opts: dict, args: list[str]) -> int:
        cert, key = self.make_server_pair(opts, args)
        self._deploy_hint(cert, key)
        return 0

    def new_server_cert(self, opts: dict, args: list[str]) -> int:
        current = self.cfg.get("smtpd_tls_key_file").strip()
        if not current:
            raise Usage("smtpd_tls_key_file is not set: use new-server-key")
        opts = dict(opts, a=_algorithm(load_key(current)))
        cert, key = self.make_server_pair(opts, args, key=load_key(current))
        self._deploy_hint(cert, key)
        return 0

    def new_server_cert_request(self, opts: dict, args: list[str]) -> int:
        current = self.cfg.get("smtpd_tls_key_file").strip()
        key = load_key(current) if current else new_key(opts.get("a", "rsa"),
                                                         int(opts.get("b", 2048)))
        names = self.names(args)
        csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(names[0]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                              False)
               .sign(key, hashes.SHA256()))
        self.out.write(csr.public_bytes(serialization.Encoding.PEM).decode())
        return 0

    def _deploy_hint(self, cert: str, key: str) -> None:
        self.say(f"New private key: {key}")
        self.say(f"New certificate: {cert}")
        self.say(f"To deploy: postfix tls deploy-server-cert {cert} {key}")
        self.say(f"TLSA record: postfix tls output-server-tlsa {key}")

    def deploy_server_cert(self, opts: dict, args: list[str]) -> int:
        if len(args) != 2:
            raise Usage("usage: postfix tls deploy-server-cert certfile keyfile")
        cert_path, key_path = (os.path.abspath(a) for a in args)
        cert, key = load_cert(cert_path), load_key(key_path)
        if spki_sha256(cert) != spki_sha256(key):
            raise Usage(f"{cert_path} does not match the private key in {key_path}")
        postconf_set(self.cfg, [("smtpd_tls_cert_file", cert_path),
                                ("smtpd_tls_key_file", key_path)])
        self.say(f"Deployed certificate {cert_path} with key {key_path}")
        self.say("Run \"postfix reload\" to make the change effective.")
        return 0

    def output_server_tlsa(self, opts: dict, args: list[str]) -> int:
        keys = args or [self.cfg.get("smtpd_tls_key_file").strip()]
        if not keys[0]:
            raise Usage("no key file given and smtpd_tls_key_file is not set")
        host = opts.get("h") or self.cfg.get("myhostname")
        for path in keys:
            self.say(f"_25._tcp.{host.rstrip('.')}. IN TLSA 3 1 1 {spki_sha256(load_key(path))}")
        return 0

    # -- the local CA ----------------------------------------------------------------
    def load_ca(self):
        key_path = os.path.join(self.ca_dir, "ca-key.pem")
        if not os.path.exists(key_path):
            raise Usage(f"no local CA in {self.ca_dir}: run \"postfix tls new-ca\" first")
        return load_key(key_path), load_cert(os.path.join(self.ca_dir, "ca-cert.pem"))

    def new_ca(self, opts: dict, args: list[str]) -> int:
        key_path = os.path.join(self.ca_dir, "ca-key.pem")
        if os.path.exists(key_path) and "f" not in opts:
            raise Usage(f"{key_path} exists; use -f to replace the CA")
        os.makedirs(self.ca_dir, mode=0o755, exist_ok=True)
        key = new_key("ecdsa" if opts.get("a") == "ecdsa" else "rsa", int(opts.get("b", 2048)))
        name = " ".join(args) or f"{self.cfg.get('myhostname')} mail CA"
        cert = new_ca_cert(key, name, int(opts.get("d", CA_DAYS)))
        write_key(key_path, key)
        cert_path = os.path.join(self.ca_dir, "ca-cert.pem")
        write_cert(cert_path, cert)
        self.say(f"New CA certificate: {cert_path}")
        self.say(f"Trust it with: smtpd_tls_CAfile = {cert_path} (client certificates), "
                 f"smtp_tls_CAfile = {cert_path} (server certificates)")
        return 0

    def new_client_cert(self, opts: dict, args: list[str]) -> int:
        if len(args) != 1:
            raise Usage("usage: postfix tls new-client-cert NAME [--p12 FILE] [--password PASS]")
        name = args[0]
        if "/" in name or name.startswith("."):
            raise Usage(f"bad client name: {name}")
        ca_key, ca_cert = self.load_ca()
        key = new_key(opts.get("a", "rsa"), int(opts.get("b", 2048)))
        cert = ca_signed(key, [name], ca_key, ca_cert, int(opts.get("d", DEFAULT_DAYS)),
                         client=True)
        directory = os.path.join(self.ca_dir, "clients")
        os.makedirs(directory, mode=0o755, exist_ok=True)
        key_path = os.path.join(directory, f"{name}-key.pem")
        cert_path = os.path.join(directory, f"{name}-cert.pem")
        write_key(key_path, key)
        write_cert(cert_path, cert)
        self.say(f"New client key: {key_path}")
        self.say(f"New client certificate: {cert_path}")
        digest = self.cfg.get("smtpd_tls_fingerprint_digest")
        fp = tlsutil.fingerprint(cert.public_bytes(serialization.Encoding.DER), digest)
        self.say(f"Fingerprint ({digest}) for relay_clientcerts: {fp}")
        if opts.get("p12"):
            self.write_p12(opts["p12"], name, key, cert, ca_cert, opts.get("password", ""))
        return 0

    def write_p12(self, path: str, name: str, key, cert, ca_cert, password: str) -> None:
        protection = serialization.BestAvailableEncryption(password.encode()) if password \
            else serialization.NoEncryption()
        data = pkcs12.serialize_key_and_certificates(name.encode(), key, cert, [ca_cert],
                                                     protection)
        _write(os.path.abspath(path), data, 0o600)
        self.say(f"PKCS#12 bundle for a mail client: {path}")


def _algorithm(key) -> str:
    return "ecdsa" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa"


# -- the command line ----------------------------------------------------------------

# subcommand -> (method name, short options taking a value, long options taking a value,
#                flags)
SUBCOMMANDS = {
    "enable-client": ("enable_client", "r", (), ()),
    "enable-server": ("enable_server", "rab", (), ("ca",)),
    "new-server-key": ("new_server_key", "ab", (), ("ca",)),
    "new-server-cert": ("new_server_cert", "ab", (), ("ca",)),
    "new-server-cert-request": ("new_server_cert_request", "ab", (), ()),
    "deploy-server-cert": ("deploy_server_cert", "", (), ()),
    "output-server-tlsa": ("output_server_tlsa", "h", (), ()),
    "all-default-client": ("all_default_client", "", (), ()),
    "all-default-server": ("all_default_server", "", (), ()),
    "new-ca": ("new_ca", "abd", (), ("f",)),
    "new-client-cert": ("new_client_cert", "abd", ("p12", "password"), ()),
}


def parse(words: list[str], short: str, long: tuple, flags: tuple) -> tuple[dict, list[str]]:
    """parse - (options, arguments) of one subcommand; raises Usage."""
    opts: dict[str, str] = {}
    args: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--") and w[2:].split("=", 1)[0] in long:
            name, eq, value = w[2:].partition("=")
            if not eq:
                i += 1
                if i >= len(words):
                    raise Usage(f"option --{name} needs a value")
                value = words[i]
            opts[name] = value
        elif w.startswith("--") and w[2:] in flags:
            opts[w[2:]] = "yes"
        elif w.startswith("-") and len(w) == 2 and w[1] in short:
            i += 1
            if i >= len(words):
                raise Usage(f"option {w} needs a value")
            opts[w[1]] = words[i]
        elif w.startswith("-") and len(w) == 2 and w[1] in flags:
            opts[w[1]] = "yes"
        elif w.startswith("-") and len(w) > 1:
            raise Usage(f"invalid option: {w}")
        else:
            args.append(w)
        i += 1
    for numeric in ("b", "d"):
        if numeric in opts and not opts[numeric].isdigit():
            raise Usage(f"-{numeric} needs a number, not \"{opts[numeric]}\"")
    return opts, args


def main(cfg: Config, args: list[str]) -> int:
    """main - run `postfix tls ARGS`; the exit status."""
    tool = Tool(cfg)
    if not args or args[0] not in SUBCOMMANDS:
        what = f"unknown subcommand: {args[0]}" if args else "missing subcommand"
        tool.err.write(f"postfix tls: fatal: {what}; one of: {', '.join(SUBCOMMANDS)}\n")
        return 1
    method, short, long, flags = SUBCOMMANDS[args[0]]
    try:
        opts, rest = parse(args[1:], short, long, flags)
        if method.startswith("all_default"):
            names = CLIENT_DEFAULTS if method.endswith("client") else SERVER_DEFAULTS
            for name in names:
                tool.say(f"{name} = {cfg.default(name) or ''}")
            return 0
        return getattr(tool, method)(opts, rest)
    except Usage as e:
        tool.err.write(f"postfix tls: fatal: {e}\n")
        return 1
    except OSError as e:
        tool.err.write(f"postfix tls: fatal: {e.filename or ''}: {e.strerror}\n")
        return 1
