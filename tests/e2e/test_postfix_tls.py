"""End to end: `postfix tls` (postfix-tls(1)) and the local CA, as an administrator runs them."""

from __future__ import annotations

import os
import re
import stat
import subprocess

from tests.support.instance import Instance


def tls(inst: Instance, *args: str) -> subprocess.CompletedProcess:
    return inst.postfix("tls", *args)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def main_cf(inst: Instance) -> str:
    return (inst.config_dir / "main.cf").read_text()


def test_enable_server_creates_a_key_and_certificate_and_sets_main_cf(tmp_path):
    inst = Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}, start=False)
    done = tls(inst, "enable-server")
    assert done.returncode == 0, done.stderr
    cert = re.search(r"(?m)^smtpd_tls_cert_file = (.+)$", main_cf(inst)).group(1)
    key = re.search(r"(?m)^smtpd_tls_key_file = (.+)$", main_cf(inst)).group(1)
    assert "smtpd_tls_security_level = may" in main_cf(inst)
    assert mode(key) == 0o600 and os.path.dirname(key) == str(inst.config_dir)
    subject = subprocess.run(["openssl", "x509", "-noout", "-subject", "-in", cert],
                             capture_output=True, text=True).stdout
    assert "mx.example.com" in subject
    # A second run sees non-default settings and changes nothing.
    before = main_cf(inst)
    assert "no changes made" in tls(inst, "enable-server").stdout.decode()
    assert main_cf(inst) == before


def test_tlsa_record_matches_openssl(tmp_path):
    inst = Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}, start=False)
    assert tls(inst, "enable-server").returncode == 0
    key = re.search(r"(?m)^smtpd_tls_key_file = (.+)$", main_cf(inst)).group(1)
    out = tls(inst, "output-server-tlsa").stdout.decode().strip()
    pub = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                         capture_output=True).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-r"], input=pub,
                            capture_output=True).stdout.decode().split()[0]
    assert out == f"_25._tcp.mx.example.com. IN TLSA 3 1 1 {digest}"


def test_new_server_key_then_deploy(tmp_path):
    inst = Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}, start=False)
    out = tls(inst, "new-server-key", "-a", "ecdsa", "mx.example.com", "smtp.example.com")
    text = out.stdout.decode()
    cert, key = re.search(r"deploy-server-cert (\S+) (\S+)", text).groups()
    assert "smtpd_tls_cert_file" not in main_cf(inst)
    assert tls(inst, "deploy-server-cert", cert, key).returncode == 0
    assert f"smtpd_tls_cert_file = {cert}" in main_cf(inst)
    request = tls(inst, "new-server-cert-request").stdout.decode()
    assert request.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    bad = tls(inst, "deploy-server-cert", cert)
    assert bad.returncode == 1 and b"postfix tls: fatal:" in bad.stderr


def test_local_ca_signs_a_client_certificate_and_exports_pkcs12(tmp_path):
    inst = Instance(tmp_path, main_cf={"myhostname": "mx.example.com"}, start=False)
    assert tls(inst, "new-client-cert", "alice").returncode == 1     # no CA yet
    assert tls(inst, "new-ca").returncode == 0
    ca = inst.config_dir / "tls-ca"
    assert mode(ca / "ca-key.pem") == 0o600
    p12 = tmp_path / "alice.p12"
    done = tls(inst, "new-client-cert", "alice", "--p12", str(p12), "--password", "pw")
    assert done.returncode == 0, done.stderr
    fingerprint = re.search(r"relay_clientcerts: (\S+)", done.stdout.decode()).group(1)
    cert = ca / "clients" / "alice-cert.pem"
    assert mode(ca / "clients" / "alice-key.pem") == 0o600 and mode(p12) == 0o600
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca / "ca-cert.pem"), str(cert)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    openssl_fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256",
                                 "-in", str(cert)], capture_output=True, text=True).stdout
    assert openssl_fp.strip().split("=", 1)[1] == fingerprint
    from cryptography.hazmat.primitives.serialization import pkcs12
    key, leaf, extra = pkcs12.load_key_and_certificates(p12.read_bytes(), b"pw")
    assert key is not None and leaf is not None and len(extra) == 1
