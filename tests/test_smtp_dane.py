"""services.smtp.dane: TLSA records, which are usable, matching a chain, and
the DANE decision for one MX host (with services.smtp.dns's DNSSEC flags)."""

from __future__ import annotations

import datetime
import hashlib
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pymaster.mail.config import Config
from services.smtp.dane import (DaneDefer, DaneResolver, Tlsa, match_chain, parse_digests,
                                usable)
from services.smtp.dns import Host, HostLookup
from services.smtp.nexthop import parse_destinations
from services.smtp.settings import Settings
from services.smtp.tls import peer_chain
from tests.support.dnsserver import DnsServer

NOW = datetime.datetime.now(datetime.timezone.utc)
DIGESTS = {1: "sha256", 2: "sha512"}
ANY_NAME = lambda names: True  # noqa: E731
NO_NAME = lambda names: False  # noqa: E731


# -- certificates -------------------------------------------------------------------

def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool = False,
          names: tuple[str, ...] = (), days: tuple[int, int] = (-1, 30)) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW + datetime.timedelta(days=days[0]))
               .not_valid_after(NOW + datetime.timedelta(days=days[1]))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def pki():
    """A CA, a leaf for mx.example.com it signed, an expired one, a self-signed one."""
    ca_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("Test CA", ca_key, "Test CA", ca_key, ca=True)
    return {
        "ca": ca,
        "leaf": _cert("mx.example.com", leaf_key, "Test CA", ca_key, names=("mx.example.com",)),
        "expired": _cert("mx.example.com", leaf_key, "Test CA", ca_key,
                         names=("mx.example.com",), days=(-30, -1)),
        "self": _cert("mx.example.com", other_key, "mx.example.com", other_key,
                      days=(-30, -1)),
        "other_ca": _cert("Test CA", other_key, "Test CA", other_key, ca=True),
    }


def record(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> Tlsa:
    data = der(cert) if selector == 0 else spki(cert)
    if mtype:
        data = hashlib.new(DIGESTS[mtype], data).digest()
    return Tlsa(usage, selector, mtype, data)


# -- records ------------------------------------------------------------------------

class TestRecords:
    def test_from_text_reads_split_hex_data(self):
        r = Tlsa.from_text("3 1 1 ab12 CD34")
        assert (r.usage, r.selector, r.mtype, r.data) == (3, 1, 1, bytes.fromhex("ab12cd34"))
        assert str(r) == "3 1 1 ab12cd34"

    def test_digests_by_name_or_with_numbers(self):
        assert parse_digests("sha512 sha256") == {2: "sha512", 1: "sha256"}
        assert parse_digests("sha256=1, sha512=2") == {1: "sha256", 2: "sha512"}
        assert parse_digests("sha256 nosuch") == {1: "sha256"}

    def test_pkix_usages_unknown_selectors_and_digests_are_unusable(self):
        sha256 = bytes(32)
        records = [Tlsa(0, 1, 1, sha256), Tlsa(1, 1, 1, sha256), Tlsa(3, 2, 1, sha256),
                   Tlsa(3, 1, 9, sha256), Tlsa(3, 1, 1, bytes(31)), Tlsa(4, 1, 1, sha256)]
        assert usable(records, DIGESTS) == []

    def test_dane_ta_and_dane_ee_with_known_digests_are_usable(self):
        good = [Tlsa(3, 1, 1, bytes(32)), Tlsa(2, 0, 2, bytes(64)), Tlsa(3, 0, 0, b"x")]
        assert usable(good, DIGESTS) == good
        assert usable(good, {1: "sha256"}) == [good[0], good[2]]


# -- matching -----------------------------------------------------------------------

class TestDaneEE:
    @pytest.mark.parametrize("selector,mtype", [(1, 1), (0, 1), (1, 2), (0, 0), (1, 0)])
    def test_the_leaf_matches(self, pki, selector, mtype):
        chain = [der(pki["leaf"]), der(pki["ca"])]
        assert match_chain(chain, [record(3, selector, mtype, pki["leaf"])], DIGESTS,
                           NO_NAME) == "DANE-EE"

    def test_no_name_and_no_expiry_check_for_3_1_1(self, pki):
        # An expired, self-signed certificate whose key is published is fine.
        assert match_chain([der(pki["self"])], [record(3, 1, 1, pki["self"])], DIGESTS,
                           NO_NAME) == "DANE-EE"

    def test_another_key_does_not_match(self, pki):
        assert match_chain([der(pki["self"])], [record(3, 1, 1, pki["leaf"])], DIGESTS,
                           ANY_NAME) is None

    def test_a_digest_not_enabled_does_not_match(self, pki):
        assert match_chain([der(pki["leaf"])], [record(3, 1, 2, pki["leaf"])],
                           {1: "sha256"}, ANY_NAME) is None

    def test_an_ee_record_for_the_issuer_does_not_match(self, pki):
        chain = [der(pki["leaf"]), der(pki["ca"])]
        assert match_chain(chain, [record(3, 1, 1, pki["ca"])], DIGESTS, ANY_NAME) is None


class TestDaneTA:
    def test_the_issuer_sent_by_the_server_matches(self, pki):
        chain = [der(pki["leaf"]), der(pki["ca"])]
        for sel, mt in ((1, 1), (0, 1), (0, 2), (0, 0)):
            assert match_chain(chain, [record(2, sel, mt, pki["ca"])], DIGESTS,
                               ANY_NAME) == "DANE-TA"

    def test_the_name_must_match(self, pki):
        chain = [der(pki["leaf"]), der(pki["ca"])]
        seen = []
        assert match_chain(chain, [record(2, 1, 1, pki["ca"])], DIGESTS,
                           lambda names: seen.append(names) or False) is None
        assert seen == [["mx.example.com"]]

    def test_an_expired_leaf_fails(self, pki):
        chain = [der(pki["expired"]), der(pki["ca"])]
        assert match_chain(chain, [record(2, 1, 1, pki["ca"])], DIGESTS, ANY_NAME) is None

    def test_a_full_anchor_in_the_record_need_not_be_sent(self, pki):
        assert match_chain([der(pki["leaf"])], [record(2, 0, 0, pki["ca"])], DIGESTS,
                           ANY_NAME) == "DANE-TA"

    def test_a_chain_not_signed_by_the_anchor_fails(self, pki):
        # The server sends a CA with the same name but another key.
        chain = [der(pki["leaf"]), der(pki["other_ca"])]
        assert match_chain(chain, [record(2, 1, 1, pki["other_ca"])], DIGESTS,
                           ANY_NAME) is None
        assert match_chain([der(pki["leaf"])], [record(2, 0, 0, pki["other_ca"])], DIGESTS,
                           ANY_NAME) is None

    def test_a_ta_record_for_the_leaf_itself_does_not_match(self, pki):
        assert match_chain([der(pki["leaf"])], [record(2, 1, 1, pki["leaf"])], DIGESTS,
                           ANY_NAME) is None

    def test_nothing_sent_matches_nothing(self, pki):
        assert match_chain([], [record(3, 1, 1, pki["leaf"])], DIGESTS, ANY_NAME) is None


# -- the decision for one host -------------------------------------------------------

TLSA = "3 1 1 " + "ab" * 32
ZONE = {
    "secure.example": {"MX": ["10 mx.secure.example."], "secure": True},
    "insecure.example": {"MX": ["10 mx.secure.example."]},
    "mx.secure.example": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"], "secure": ["A"]},
    "_25._tcp.mx.secure.example": {"TLSA": [TLSA], "secure": True},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(ZONE) as server:
        yield server


def config(tmp_path, dns, **values) -> Config:
    settings = {"dns_nameservers": dns.nameserver, "inet_interfaces": "loopback-only",
                "myhostname": "client.example", "smtp_dns_support_level": "dnssec",
                "smtp_tls_security_level": "dane", "inet_protocols": "all"}
    settings.update(values)
    return Config(str(tmp_path), settings)


def resolver(cfg: Config) -> DaneResolver:
    return DaneResolver(cfg, Settings.from_config(cfg))


def mx(secure: bool = True, mx_secure: bool | None = True, name: str = "mx.secure.example"):
    return Host(name, "192.0.2.1", 25, 10, secure=secure, mx_secure=mx_secure)


class TestDnssecLookups:
    def test_hosts_note_secure_mx_and_address_records(self, tmp_path, dns):
        cfg = config(tmp_path, dns)
        hosts = HostLookup(Settings.from_config(cfg), cfg).hosts(
            parse_destinations("secure.example", 25)[0])
        assert [(h.addr, h.secure, h.mx_secure) for h in hosts] == [
            ("192.0.2.1", True, True), ("2001:db8::1", False, True)]

    def test_an_insecure_mx_is_noted(self, tmp_path, dns):
        cfg = config(tmp_path, dns)
        hosts = HostLookup(Settings.from_config(cfg), cfg).hosts(
            parse_destinations("insecure.example", 25)[0])
        assert hosts[0].mx_secure is False and hosts[0].secure is True

    def test_without_dnssec_nothing_is_secure(self, tmp_path, dns):
        cfg = config(tmp_path, dns, smtp_dns_support_level="")
        hosts = HostLookup(Settings.from_config(cfg), cfg).hosts(
            parse_destinations("secure.example", 25)[0])
        assert not any(h.secure or h.mx_secure for h in hosts)
        assert all(h.mx_secure is None for h in HostLookup(Settings.from_config(cfg), cfg)
                   .hosts(parse_destinations("[mx.secure.example]", 25)[0]))

    def test_tlsa_records_only_when_secure(self, tmp_path, dns):
        res = resolver(config(tmp_path, dns))
        assert res.tlsa("mx.secure.example", 25) == [Tlsa.from_text(TLSA)]
        assert res.tlsa("mx.secure.example", 587) == []
        dns.zone["_26._tcp.mx.secure.example"] = {"TLSA": [TLSA]}
        assert res.tlsa("mx.secure.example", 26) == []


class TestDecision:
    def test_secure_usable_records_make_dane(self, tmp_path, dns):
        decision = resolver(config(tmp_path, dns)).decide("dane", mx(), 25)
        assert decision.level == "dane" and decision.records == [Tlsa.from_text(TLSA)]

    def test_no_records_is_may_for_dane_and_a_deferral_for_dane_only(self, tmp_path, dns):
        res = resolver(config(tmp_path, dns))
        assert res.decide("dane", mx(), 2525).level == "may"
        with pytest.raises(DaneDefer, match="^no TLSA records found$"):
            res.decide("dane-only", mx(), 2525)

    def test_an_insecure_host_address_is_not_looked_up(self, tmp_path, dns):
        dns.queries.clear()
        res = resolver(config(tmp_path, dns))
        assert res.decide("dane", mx(secure=False), 25).level == "may"
        assert ("_25._tcp.mx.secure.example", "TLSA") not in dns.queries
        forced = resolver(config(tmp_path, dns,
                                 smtp_tls_force_insecure_host_tlsa_lookup="yes"))
        assert forced.decide("dane", mx(secure=False), 25).level == "dane"

    def test_an_insecure_mx_follows_the_insecure_mx_policy(self, tmp_path, dns):
        # The default is `dane` when smtp_tls_security_level is dane.
        assert resolver(config(tmp_path, dns)).decide("dane", mx(mx_secure=False),
                                                      25).level == "dane"
        strict = resolver(config(tmp_path, dns, smtp_tls_dane_insecure_mx_policy="may"))
        assert strict.decide("dane", mx(mx_secure=False), 25).level == "may"
        with pytest.raises(DaneDefer, match="^non DNSSEC destination$"):
            resolver(config(tmp_path, dns)).decide("dane-only", mx(mx_secure=False), 25)

    def test_a_tlsa_lookup_failure_defers(self, tmp_path, dns):
        dns.zone["_25._tcp.mx.broken.example"] = {"TLSA": "SERVFAIL"}
        with pytest.raises(DaneDefer) as e:
            resolver(config(tmp_path, dns)).decide("dane", mx(name="mx.broken.example"), 25)
        assert (e.value.reason, e.value.dsn) == (
            "TLSA lookup error for mx.broken.example:25", "4.7.5")

    def test_unusable_records_make_encrypt_or_defer(self, tmp_path, dns):
        dns.zone["_25._tcp.mx.pkix.example"] = {"TLSA": ["1 1 1 " + "cd" * 32],
                                                "secure": True}
        res = resolver(config(tmp_path, dns))
        assert res.decide("dane", mx(name="mx.pkix.example"), 25).level == "encrypt"
        with pytest.raises(DaneDefer, match="^TLSA records unusable$"):
            res.decide("dane-only", mx(name="mx.pkix.example"), 25)

    def test_without_dnssec_lookups_dane_is_may_and_dane_only_defers(self, tmp_path, dns):
        res = resolver(config(tmp_path, dns, smtp_dns_support_level="enabled"))
        assert res.decide("dane", mx(), 25).level == "may"
        with pytest.raises(DaneDefer, match="^client TLS configuration problem$"):
            res.decide("dane-only", mx(), 25)


# -- the chain the server sends ------------------------------------------------------

def test_peer_chain_gives_every_certificate_the_server_sent(tmp_path, pki):
    """tls.peer_chain reads the whole chain, leaf first, after an unverified handshake."""
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Chain CA", ca_key, "Chain CA", ca_key, ca=True)
    leaf = _cert("mx.example.com", key, "Chain CA", ca_key, names=("mx.example.com",))
    pem = tmp_path / "chain.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + leaf.public_bytes(serialization.Encoding.PEM)
                    + ca.public_bytes(serialization.Encoding.PEM))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pem)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname="mx.example.com") as tls:
            chain = peer_chain(tls)
            tls.sendall(b"x")
    thread.join(10)
    listener.close()
    assert chain == [der(leaf), der(ca)]
    assert match_chain(chain, [record(2, 1, 1, ca)], DIGESTS, ANY_NAME) == "DANE-TA"
