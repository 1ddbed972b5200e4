"""End to end: TLS in the smtp client, against a TLS-enabled second pymaster.

Instance B (mx.example.com) has a certificate from its built-in CA
(`postfix tls new-ca`, `enable-server --ca`) and smtpd listeners on
127.0.0.2: TLS offered (`tls`), a second one for the policy-map cases
(`pol`), no TLS (`plain`), TLSv1.3 only (`tls13`), and one that relays only
for a client certificate listed in relay_clientcerts (`ccert`). B accepts
every test domain into one virtual Maildir; its Received: header says
`with ESMTPS` when the mail came over TLS.

Instance A sends every case at the start, each recipient domain routed by
a transport map to an smtp transport with its own `-o
smtp_tls_security_level=…`, so one pair of instances serves the module.
Names resolve through a loopback DNS server (tests/support/dnsserver.py).
"""

from __future__ import annotations

import os
import re
import smtplib
from pathlib import Path

import pytest

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port, is_root, listening
from tests.support.wait import wait_until

NOBODY = 65534
PORTS = ("tls", "pol", "plain", "tls13", "ccert")


def run_ok(inst: Instance, *args: str) -> str:
    done = inst.postfix(*args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def wait_listening(host: str, port: int, timeout: float = 20) -> None:
    wait_until(lambda: listening(host, port), timeout, f"a listener on {host}:{port}")


def start_server(tmp: Path, ports: dict[str, int], listeners: str, domains: list[str],
                 main_cf: dict[str, str] | None = None) -> Instance:
    """start_server - B: mx.example.com with a CA-signed certificate, Maildir for DOMAINS."""
    settings = {"myhostname": "mx.example.com", "mynetworks": "127.0.0.0/8",
                "virtual_mailbox_domains": " ".join(domains),
                "virtual_mailbox_maps": "static:relayed/",
                "virtual_uid_maps": f"static:{NOBODY}", "virtual_gid_maps": f"static:{NOBODY}",
                "smtpd_tls_loglevel": "1"}
    settings.update(main_cf or {})
    b = Instance(tmp, main_cf=settings, master_cf_extra=listeners, start=False)
    run_ok(b, "tls", "new-ca")
    run_ok(b, "tls", "enable-server", "--ca", "mx.example.com")
    b.ca = b.config_dir / "tls-ca" / "ca-cert.pem"
    b.clients = b.config_dir / "tls-ca" / "clients"
    b.ports = ports
    return b


def start_both(b: Instance) -> None:
    b.start()
    b.mailbox_dir.mkdir(parents=True, exist_ok=True)
    if is_root():
        os.chown(b.mailbox_dir, NOBODY, NOBODY)
    for port in b.ports.values():
        wait_listening("127.0.0.2", port)


def listener(name: str, port: int, *options: str) -> str:
    lines = [f"127.0.0.2:{port} inet n - n - - smtpd", f"  -o syslog_name=postfix/{name}"]
    return "\n".join(lines + [f"  -o {o}" for o in options]) + "\n"


def transport(name: str, *options: str) -> str:
    lines = [f"{name} unix - - n - - smtp", f"  -o syslog_name=postfix/{name}"]
    return "\n".join(lines + [f"  -o {o}" for o in options]) + "\n"


def message_for(b: Instance, subject: str, count: int) -> bytes:
    """message_for - the message B stored with SUBJECT (COUNT messages expected in all)."""
    for msg in b.maildir_messages(b.mailbox_dir / "relayed", count=count):
        if f"Subject: {subject}\n".encode() in msg:
            return msg
    raise AssertionError(f"no message with subject {subject}")


# Each case: recipient domain -> (transport:nexthop template, what the test expects).
CASES = {
    "none.test": "t_none:[mx.example.com]:{tls}",
    "may.test": "t_may:[mx.example.com]:{tls}",
    "mayplain.test": "t_may:[mx.example.com]:{plain}",
    "mayfall.test": "t_may12:[mx.example.com]:{tls13}",
    "enc.test": "t_enc:[mx.example.com]:{tls}",
    "encplain.test": "t_enc:[mx.example.com]:{plain}",
    "ver.test": "t_ver:[mx.example.com]:{tls}",
    "vernoca.test": "t_vernoca:[mx.example.com]:{tls}",
    "verwrong.test": "t_ver:[alias.test]:{tls}",
    "sec.test": "t_sec:example.com:{tls}",
    "secwrong.test": "t_sec:other.test:{tls}",
    "oldmay.test": "t_oldmay:[mx.example.com]:{tls}",
    "oldenc.test": "t_oldenc:[mx.example.com]:{plain}",
    "polenc.test": "smtp:[policy-plain.test]:{plain}",
    "polmx.test": "smtp:polmx.test:{pol}",
    "sub.parent.test": "smtp:sub.parent.test:{pol}",
    "cert.test": "t_cert:[mx.example.com]:{ccert}",
    "nocert.test": "t_enc:[mx.example.com]:{ccert}",
}
DELIVERED = ["none.test", "may.test", "mayplain.test", "mayfall.test", "enc.test", "ver.test",
             "sec.test", "oldmay.test", "polmx.test", "sub.parent.test", "cert.test"]
ZONE = {"mx.example.com": {"A": ["127.0.0.2"]}, "alias.test": {"A": ["127.0.0.2"]},
        "policy-plain.test": {"A": ["127.0.0.2"]},
        "example.com": {"MX": ["10 mx.example.com."]}, "other.test": {"MX": ["10 mx.example.com."]},
        "polmx.test": {"MX": ["10 mx.example.com."]},
        "sub.parent.test": {"MX": ["10 mx.example.com."]}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smtp_tls")
    ports = {name: free_port() for name in PORTS}
    listeners = (listener("tls", ports["tls"]) + listener("pol", ports["pol"])
                 + listener("plain", ports["plain"], "smtpd_tls_security_level=none")
                 + listener("tls13", ports["tls13"], "smtpd_tls_protocols=TLSv1.3")
                 + listener("ccert", ports["ccert"], "smtpd_tls_ask_ccert=yes",
                            "smtpd_relay_restrictions=permit_tls_clientcerts,reject"))
    b = start_server(tmp / "b", ports, listeners, list(CASES))
    fingerprint = re.search(r"relay_clientcerts: (\S+)",
                            run_ok(b, "tls", "new-client-cert", "a-relay")).group(1)
    (b.config_dir / "relay_clientcerts").write_text(f"{fingerprint} a-relay\n")
    b.set_main_cf({"smtpd_tls_CAfile": str(b.ca),
                   "relay_clientcerts": f"texthash:{b.config_dir}/relay_clientcerts"})
    with DnsServer(ZONE) as dns:
        start_both(b)
        try:
            a = start_client(tmp / "a", b, dns)
            try:
                send_all(a)
                yield a, b
            finally:
                a.stop()
        finally:
            b.stop()


def start_client(tmp: Path, b: Instance, dns: DnsServer) -> Instance:
    ports = b.ports
    cert, key = b.clients / "a-relay-cert.pem", b.clients / "a-relay-key.pem"
    extra = (transport("t_none", "smtp_tls_security_level=none")
             + transport("t_may", "smtp_tls_security_level=may")
             + transport("t_may12", "smtp_tls_security_level=may",
                         "smtp_tls_protocols=<=TLSv1.2")
             + transport("t_enc", "smtp_tls_security_level=encrypt")
             + transport("t_ver", "smtp_tls_security_level=verify")
             + transport("t_vernoca", "smtp_tls_security_level=verify", "smtp_tls_CAfile=")
             + transport("t_sec", "smtp_tls_security_level=secure")
             + transport("t_oldmay", "smtp_tls_security_level=", "smtp_use_tls=yes")
             + transport("t_oldenc", "smtp_tls_security_level=", "smtp_enforce_tls=yes")
             + transport("t_cert", "smtp_tls_security_level=encrypt",
                         f"smtp_tls_cert_file={cert}", f"smtp_tls_key_file={key}"))
    a = Instance(tmp, main_cf={
        "myhostname": "a.test", "mynetworks": "127.0.0.0/8", "inet_interfaces": "127.0.0.1",
        "dns_nameservers": dns.nameserver, "smtp_connect_timeout": "5s",
        "smtp_tls_security_level": "may", "smtp_tls_loglevel": "1",
        "smtp_tls_CAfile": str(b.ca),
        "transport_maps": f"texthash:{tmp}/etc/transport",
        "smtp_tls_policy_maps": f"texthash:{tmp}/etc/tls_policy",
    }, master_cf_extra=extra, start=False)
    (a.config_dir / "transport").write_text(
        "".join(f"{domain} {route.format(**ports)}\n" for domain, route in CASES.items()))
    (a.config_dir / "tls_policy").write_text(
        f"[policy-plain.test]:{ports['plain']} encrypt\n"
        "polmx.test verify match=mx.example.com\n"
        ".parent.test secure match=.example.com\n")
    return a.start()


def send_all(a: Instance) -> None:
    with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as s:
        for domain in CASES:
            s.sendmail("", [f"user@{domain}"], f"Subject: {domain}\n\nto {domain}\n".encode())


def status_line(a: Instance, domain: str, status: str) -> str:
    return a.wait_for_log(rf"postfix/(?:\w+/)?smtp\[\d+\]: \w+: to=<user@{re.escape(domain)}>, "
                          rf".*status={status} .*$").group(0)


class TestSecurityLevels:
    def test_none_sends_in_plain_text(self, pair):
        a, b = pair
        assert "status=sent (250 " in status_line(a, "none.test", "sent")
        assert b"with ESMTP id" in message_for(b, "none.test", len(DELIVERED))

    def test_may_uses_starttls_and_logs_a_trusted_connection(self, pair):
        a, b = pair
        status_line(a, "may.test", "sent")
        a.wait_for_log(rf"postfix/t_may/smtp\[\d+\]: Trusted TLS connection established to "
                       rf"mx\.example\.com\[127\.0\.0\.2\]:{b.ports['tls']}: TLSv1\.3 with "
                       r"cipher \S+ \(\d+/\d+ bits\)")
        assert b"with ESMTPS id" in message_for(b, "may.test", len(DELIVERED))

    def test_may_without_starttls_offered_sends_in_plain_text(self, pair):
        a, b = pair
        status_line(a, "mayplain.test", "sent")
        assert b"with ESMTP id" in message_for(b, "mayplain.test", len(DELIVERED))

    def test_may_retries_in_plain_text_after_a_failed_handshake(self, pair):
        a, b = pair
        a.wait_for_log(r"postfix/t_may12/smtp\[\d+\]: Cannot start TLS: handshake failure with "
                       r"mx\.example\.com\[127\.0\.0\.2\]: .*; retrying without TLS")
        status_line(a, "mayfall.test", "sent")
        assert b"with ESMTP id" in message_for(b, "mayfall.test", len(DELIVERED))

    def test_encrypt_delivers_over_tls(self, pair):
        a, b = pair
        status_line(a, "enc.test", "sent")
        assert b"with ESMTPS id" in message_for(b, "enc.test", len(DELIVERED))

    def test_encrypt_defers_when_starttls_is_not_offered(self, pair):
        a, b = pair
        line = status_line(a, "encplain.test", "deferred")
        assert f"relay=mx.example.com[127.0.0.2]:{b.ports['plain']}" in line
        assert "dsn=4.7.4" in line
        assert line.endswith("(TLS is required, but was not offered by host "
                             "mx.example.com[127.0.0.2])")

    def test_legacy_smtp_use_tls_and_smtp_enforce_tls(self, pair):
        a, b = pair
        status_line(a, "oldmay.test", "sent")
        assert b"with ESMTPS id" in message_for(b, "oldmay.test", len(DELIVERED))
        line = status_line(a, "oldenc.test", "deferred")
        assert "TLS is required, but was not offered by host" in line


class TestVerification:
    def test_verify_with_the_ca_logs_a_verified_connection(self, pair):
        a, b = pair
        status_line(a, "ver.test", "sent")
        a.wait_for_log(rf"postfix/t_ver/smtp\[\d+\]: Verified TLS connection established to "
                       rf"mx\.example\.com\[127\.0\.0\.2\]:{b.ports['tls']}: TLSv1\.[23] with")

    def test_verify_without_the_ca_defers(self, pair):
        a, b = pair
        line = status_line(a, "vernoca.test", "deferred")
        assert "dsn=4.7.5" in line and line.endswith("(Server certificate not verified)")
        a.wait_for_log(r"postfix/t_vernoca/smtp\[\d+\]: server certificate verification failed "
                       r"for mx\.example\.com\[127\.0\.0\.2\]:\d+: num=\d+:")

    def test_verify_defers_when_the_hostname_does_not_match(self, pair):
        a, b = pair
        line = status_line(a, "verwrong.test", "deferred")
        assert "relay=alias.test[127.0.0.2]" in line
        assert line.endswith("(Server certificate not verified)")

    def test_secure_matches_a_subdomain_of_the_nexthop(self, pair):
        a, b = pair
        line = status_line(a, "sec.test", "sent")
        assert f"relay=mx.example.com[127.0.0.2]:{b.ports['tls']}" in line

    def test_secure_defers_when_the_nexthop_does_not_match(self, pair):
        a, b = pair
        line = status_line(a, "secwrong.test", "deferred")
        assert line.endswith("(Server certificate not verified)")


class TestPolicyMaps:
    def test_policy_for_a_bracketed_nexthop_requires_tls(self, pair):
        a, b = pair
        line = status_line(a, "polenc.test", "deferred")
        assert "TLS is required, but was not offered by host policy-plain.test[127.0.0.2]" in line

    def test_policy_with_a_literal_match_name_verifies(self, pair):
        a, b = pair
        status_line(a, "polmx.test", "sent")
        status_line(a, "sub.parent.test", "sent")
        # Both went through the `pol` listener at verify/secure (the default here is may).
        a.wait_for_log(rf"Verified TLS connection established to mx\.example\.com"
                       rf"\[127\.0\.0\.2\]:{b.ports['pol']}: ", count=2)
        assert "Trusted TLS connection established to mx.example.com[127.0.0.2]:" \
            f"{b.ports['pol']}:" not in a.log_text()


class TestClientCertificate:
    def test_a_listed_client_certificate_may_relay(self, pair):
        a, b = pair
        status_line(a, "cert.test", "sent")
        b.wait_for_log(r"postfix/ccert/smtpd\[\d+\]: Trusted TLS connection established from ")
        assert b"with ESMTPS id" in message_for(b, "cert.test", len(DELIVERED))

    def test_without_the_certificate_the_server_refuses_to_relay(self, pair):
        a, b = pair
        line = status_line(a, "nocert.test", "bounced")
        assert "said: 554 5.7.1" in line
