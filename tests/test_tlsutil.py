"""pymaster.mail.tlsutil: Postfix's TLS parameter syntax, contexts, fingerprints, log lines."""

from __future__ import annotations

import hashlib
import ssl

import pytest

from pymaster.commands import tlscmd
from pymaster.mail import tlsutil
from pymaster.mail.config import load_config

V = ssl.TLSVersion


class TestProtocols:
    @pytest.mark.parametrize("value, expected", [
        (">=TLSv1.2", (V.TLSv1_2, V.TLSv1_3)),
        (">=TLSv1", (V.TLSv1, V.TLSv1_3)),
        ("<=TLSv1.2", (V.TLSv1, V.TLSv1_2)),
        ("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1", (V.TLSv1_2, V.TLSv1_3)),
        ("TLSv1.3", (V.TLSv1_3, V.TLSv1_3)),
        ("TLSv1.2 TLSv1.3", (V.TLSv1_2, V.TLSv1_3)),
        ("", (V.TLSv1, V.TLSv1_3)),
    ])
    def test_protocol_range(self, value, expected):
        assert tlsutil.protocol_range(value) == expected

    def test_unknown_protocol_is_an_error_naming_it(self):
        with pytest.raises(tlsutil.TlsError, match='unknown TLS protocol "TLSv9"'):
            tlsutil.protocol_range(">=TLSv9")

    def test_nothing_left(self):
        with pytest.raises(tlsutil.TlsError, match="no TLS protocol left"):
            tlsutil.protocol_range("!TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3")

    def test_defaults_exclude_tls_1_0_and_1_1(self, tmp_path):
        (tmp_path / "main.cf").write_text("")
        cfg = load_config(str(tmp_path))
        assert tlsutil.protocol_range(cfg.get("smtpd_tls_protocols"))[0] == V.TLSv1_2
        assert tlsutil.protocol_range(cfg.get("smtp_tls_mandatory_protocols"))[0] == V.TLSv1_2


class TestCiphers:
    def test_grades_and_exclusions(self):
        assert tlsutil.cipher_string("high") == "HIGH:!aNULL:!eNULL"
        assert tlsutil.cipher_string("medium", "RC4, aNULL") == \
            "HIGH:MEDIUM:!aNULL:!eNULL:!RC4:!aNULL"

    def test_unknown_grade(self):
        with pytest.raises(tlsutil.TlsError, match="invalid cipher grade"):
            tlsutil.cipher_string("strong")


class TestLevels:
    def cfg(self, tmp_path, **values):
        (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
        return load_config(str(tmp_path))

    def test_level_wins_over_legacy_names(self, tmp_path):
        assert tlsutil.legacy_level(self.cfg(tmp_path, smtpd_tls_security_level="may",
                                             smtpd_enforce_tls="yes"), "smtpd") == "may"

    def test_legacy_names(self, tmp_path):
        assert tlsutil.legacy_level(self.cfg(tmp_path, smtpd_enforce_tls="yes"),
                                    "smtpd") == "encrypt"
        assert tlsutil.legacy_level(self.cfg(tmp_path, smtp_use_tls="yes"), "smtp") == "may"
        assert tlsutil.legacy_level(self.cfg(tmp_path), "smtp") == "none"


@pytest.fixture(scope="module")
def server_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    key = tlscmd.new_key("ecdsa")
    cert = tlscmd.self_signed(key, ["mx.example.com"])
    tlscmd.write_key(str(d / "key.pem"), key)
    tlscmd.write_cert(str(d / "cert.pem"), cert)
    return d, cert


class TestContexts:
    def test_no_certificate_means_no_server_context(self, tmp_path):
        (tmp_path / "main.cf").write_text("smtpd_tls_security_level = may\n")
        assert tlsutil.server_context(load_config(str(tmp_path))) is None

    def test_server_context_asks_for_client_certificates(self, tmp_path, server_files):
        d, _ = server_files
        (tmp_path / "main.cf").write_text(
            f"smtpd_tls_cert_file = {d}/cert.pem\nsmtpd_tls_key_file = {d}/key.pem\n"
            f"smtpd_tls_ask_ccert = yes\nsmtpd_tls_CAfile = {d}/cert.pem\n")
        ctx = tlsutil.server_context(load_config(str(tmp_path)), level="may")
        assert ctx.verify_mode == ssl.CERT_OPTIONAL
        assert ctx.minimum_version == V.TLSv1_2

    def test_missing_file_is_a_clear_error(self, tmp_path):
        (tmp_path / "main.cf").write_text("smtpd_tls_cert_file = /no/such/cert.pem\n")
        with pytest.raises(tlsutil.TlsError, match="/no/such/cert.pem: No such file"):
            tlsutil.server_context(load_config(str(tmp_path)), level="may")

    def test_client_levels(self, tmp_path):
        (tmp_path / "main.cf").write_text("")
        cfg = load_config(str(tmp_path))
        assert tlsutil.client_context(cfg, "may").verify_mode == ssl.CERT_NONE
        verify = tlsutil.client_context(cfg, "verify")
        assert verify.verify_mode == ssl.CERT_REQUIRED and verify.check_hostname


class TestFingerprints:
    def test_postfix_form(self):
        der = b"certificate bytes"
        want = hashlib.sha256(der).hexdigest().upper()
        fp = tlsutil.fingerprint(der)
        assert fp.replace(":", "") == want and fp[2] == ":"
        assert len(tlsutil.fingerprint(der, "md5").split(":")) == 16

    def test_unsupported_digest(self):
        with pytest.raises(tlsutil.TlsError):
            tlsutil.fingerprint(b"x", "crc32")

    def test_public_key_fingerprint_matches_tlsa_data(self, server_files):
        from cryptography.hazmat.primitives.serialization import Encoding
        _, cert = server_files
        pkey = tlsutil.pkey_fingerprint(cert.public_bytes(Encoding.DER))
        assert pkey.replace(":", "").lower() == tlscmd.spki_sha256(cert)


class TestLogLines:
    def test_server_line(self):
        info = tlsutil.Session("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256)
        assert tlsutil.established_from(info, "unknown[192.0.2.1]") == (
            "Anonymous TLS connection established from unknown[192.0.2.1]: "
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
        info.peer_der, info.verified = b"x", True
        assert tlsutil.established_from(info, "h[a]").startswith("Trusted TLS")

    def test_client_line(self):
        info = tlsutil.Session("TLSv1.3", "TLS_AES_256_GCM_SHA384", 256, 256)
        assert tlsutil.established_to("Verified", "mx.example.com[192.0.2.1]", 25, info) == (
            "Verified TLS connection established to mx.example.com[192.0.2.1]:25: "
            "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
