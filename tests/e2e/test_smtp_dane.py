"""End to end: DANE in the smtp client (smtp_tls_security_level = dane / dane-only).

Instance B (mx.example.com) has a certificate from its built-in CA and one
STARTTLS smtpd listener on 127.0.0.2; it takes every test domain into one
virtual Maildir. Every MX host name below resolves to 127.0.0.2, so each
case reaches the same server and differs only in what DNS says: whether
the MX and address record sets are secure (the AD flag, from the loopback
DNS server standing in for a validating resolver) and which TLSA records
`_PORT._tcp.HOST` has.

Instance A (smtp_dns_support_level = dnssec) sends every case at the
start, each recipient domain routed by a transport map to a transport with
its own security level, so one pair of instances serves the module.
"""

from __future__ import annotations

import re
import smtplib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.test_smtp_tls import (NOBODY, listener, message_for, run_ok, start_both,
                                     status_line, transport)
from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port

# recipient domain -> transport (nexthop is the domain itself, on B's port)
CASES = {
    "ok.test": "t_dane",            # secure MX, matching 3 1 1 -> Verified
    "ta.test": "t_dane",            # secure MX, 2 0 0 with B's CA -> Verified
    "bad.test": "t_dane",           # secure MX, 3 1 1 of another key -> deferred
    "insecure.test": "t_dane",      # MX and host insecure -> may, delivered
    "servfail.test": "t_dane",      # TLSA lookup fails -> deferred
    "unusable.test": "t_dane",      # only PKIX-EE(1) -> encrypt, delivered
    "only.test": "t_only",          # dane-only, no TLSA -> deferred
    "pol.test": "smtp",             # dane-only from smtp_tls_policy_maps -> Verified
}
DELIVERED = ["ok.test", "ta.test", "insecure.test", "unusable.test", "pol.test"]
WRONG = "3 1 1 " + "00" * 32


def spki_sha256_record(b: Instance) -> str:
    out = run_ok(b, "tls", "output-server-tlsa")
    return re.search(r"IN TLSA (3 1 1 [0-9a-f]{64})$", out, re.M).group(1)


def full_ca_record(b: Instance) -> str:
    ca = x509.load_pem_x509_certificate(b.ca.read_bytes())
    return "2 0 0 " + ca.public_bytes(serialization.Encoding.DER).hex()


def zone(port: int, good: str, anchor: str) -> dict:
    """zone - each case's DNS: MX host, its address, its TLSA records."""
    def host(secure: bool) -> dict:
        return {"A": ["127.0.0.2"], "secure": ["A"] if secure else []}

    def mx(name: str, secure: bool = True) -> dict:
        return {"MX": [f"10 {name}."], "secure": ["MX"] if secure else []}

    def tlsa(*records: str) -> dict:
        return {"TLSA": list(records), "secure": True}

    z = {"ok.test": mx("mx.example.com"), "pol.test": mx("mx.example.com"),
         "ta.test": mx("ta.example.com"), "bad.test": mx("bad.example.com"),
         "insecure.test": mx("ins.example.com", secure=False),
         "servfail.test": mx("fail.example.com"), "unusable.test": mx("pkix.example.com"),
         "only.test": mx("none.example.com")}
    for name, secure in (("mx", True), ("ta", True), ("bad", True), ("ins", False),
                         ("fail", True), ("pkix", True), ("none", True)):
        z[f"{name}.example.com"] = host(secure)
    z[f"_{port}._tcp.mx.example.com"] = tlsa(WRONG, good)
    z[f"_{port}._tcp.ta.example.com"] = tlsa(anchor)
    z[f"_{port}._tcp.bad.example.com"] = tlsa(WRONG)
    z[f"_{port}._tcp.ins.example.com"] = tlsa(WRONG)     # insecure host: never asked
    z[f"_{port}._tcp.fail.example.com"] = {"TLSA": "SERVFAIL"}
    z[f"_{port}._tcp.pkix.example.com"] = tlsa("1 1 1 " + good.split()[3])
    return z


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smtp_dane")
    ports = {"tls": free_port()}
    b = start_server(tmp / "b", ports)
    records = zone(ports["tls"], spki_sha256_record(b), full_ca_record(b))
    with DnsServer(records) as dns:
        start_both(b)
        try:
            a = start_client(tmp / "a", b, dns)
            try:
                with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as s:
                    for domain in CASES:
                        s.sendmail("", [f"user@{domain}"],
                                   f"Subject: {domain}\n\nto {domain}\n".encode())
                yield a, b
            finally:
                a.stop()
        finally:
            b.stop()


def start_server(tmp, ports: dict[str, int]) -> Instance:
    """start_server - B: a CA-signed certificate for mx.example.com and ta.example.com."""
    b = Instance(tmp, main_cf={
        "myhostname": "mx.example.com", "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": " ".join(CASES), "virtual_mailbox_maps": "static:relayed/",
        "virtual_uid_maps": f"static:{NOBODY}", "virtual_gid_maps": f"static:{NOBODY}",
    }, master_cf_extra=listener("tls", ports["tls"]), start=False)
    run_ok(b, "tls", "new-ca")
    run_ok(b, "tls", "enable-server", "--ca", "mx.example.com", "ta.example.com")
    b.ca = b.config_dir / "tls-ca" / "ca-cert.pem"
    b.ports = ports
    return b


def start_client(tmp, b: Instance, dns: DnsServer) -> Instance:
    # t_dane runs chrooted: everything DANE needs, and the policy map whose
    # file is out of the jail's sight, are loaded before the jail.
    extra = (transport("t_dane", "smtp_tls_security_level=dane")
             .replace("unix - - n - - smtp", "unix - - y - - smtp")
             + transport("t_only", "smtp_tls_security_level=dane-only"))
    a = Instance(tmp, main_cf={
        "myhostname": "a.test", "mynetworks": "127.0.0.0/8", "inet_interfaces": "127.0.0.1",
        "dns_nameservers": dns.nameserver, "smtp_connect_timeout": "5s",
        "smtp_dns_support_level": "dnssec",
        "smtp_tls_security_level": "may", "smtp_tls_loglevel": "1",
        "transport_maps": f"texthash:{tmp}/etc/transport",
        "smtp_tls_policy_maps": f"texthash:{tmp}/etc/tls_policy",
    }, master_cf_extra=extra, start=False)
    port = b.ports["tls"]
    (a.config_dir / "transport").write_text(
        "".join(f"{domain} {name}:{domain}:{port}\n" for domain, name in CASES.items()))
    (a.config_dir / "tls_policy").write_text("pol.test dane-only\n")
    return a.start()


def established(a: Instance, trust: str, host: str, port: int, count: int = 1) -> None:
    a.wait_for_log(rf"postfix/(?:\w+/)?smtp\[\d+\]: {trust} TLS connection established to "
                   rf"{re.escape(host)}\[127\.0\.0\.2\]:{port}: TLSv1\.[23] with", count=count)


def assert_only_delivered_reached(a: Instance, b: Instance) -> None:
    """assert_only_delivered_reached - B accepted exactly the DELIVERED messages.

    B's cleanup logs a message before B answers its DATA, hence before A
    logs any status for it: once A has logged every status, B's count is final."""
    for domain in CASES:
        status_line(a, domain, "sent" if domain in DELIVERED else "deferred")
    accepted = re.findall(r"postfix/cleanup\[\d+\]: \w+: message-id=", b.log_text())
    assert len(accepted) == len(DELIVERED)


class TestDane:
    def test_a_matching_dane_ee_record_verifies_and_delivers(self, pair):
        a, b = pair
        line = status_line(a, "ok.test", "sent")
        assert f"relay=mx.example.com[127.0.0.2]:{b.ports['tls']}" in line
        established(a, "Verified", "mx.example.com", b.ports["tls"])
        assert b"with ESMTPS id" in message_for(b, "ok.test", len(DELIVERED))

    def test_a_dane_ta_record_for_the_servers_ca_verifies(self, pair):
        a, b = pair
        status_line(a, "ta.test", "sent")
        established(a, "Verified", "ta.example.com", b.ports["tls"])

    def test_a_record_that_does_not_match_defers_and_sends_nothing(self, pair):
        a, b = pair
        line = status_line(a, "bad.test", "deferred")
        assert "dsn=4.7.5" in line and line.endswith("(Server certificate not verified)")
        a.wait_for_log(r"server certificate verification failed for bad\.example\.com"
                       rf"\[127\.0\.0\.2\]:{b.ports['tls']}: num=65:No matching DANE TLSA")
        established(a, "Untrusted", "bad.example.com", b.ports["tls"])
        assert_only_delivered_reached(a, b)

    def test_an_insecure_mx_falls_back_to_opportunistic_tls(self, pair):
        a, b = pair
        status_line(a, "insecure.test", "sent")
        established(a, "Untrusted", "ins.example.com", b.ports["tls"])
        assert b"with ESMTPS id" in message_for(b, "insecure.test", len(DELIVERED))

    def test_a_tlsa_lookup_failure_defers(self, pair):
        a, b = pair
        line = status_line(a, "servfail.test", "deferred")
        assert "dsn=4.7.5" in line
        assert line.endswith(f"(TLSA lookup error for fail.example.com:{b.ports['tls']})")

    def test_unusable_records_still_require_tls(self, pair):
        a, b = pair
        status_line(a, "unusable.test", "sent")
        assert b"with ESMTPS id" in message_for(b, "unusable.test", len(DELIVERED))

    def test_dane_only_without_tlsa_records_defers(self, pair):
        a, b = pair
        line = status_line(a, "only.test", "deferred")
        assert "dsn=4.7.5" in line and line.endswith("(no TLSA records found)")
        assert_only_delivered_reached(a, b)

    def test_dane_only_from_the_policy_map_verifies(self, pair):
        a, b = pair
        status_line(a, "pol.test", "sent")
        # ok.test and pol.test both went to mx.example.com and both verified.
        established(a, "Verified", "mx.example.com", b.ports["tls"], count=2)
