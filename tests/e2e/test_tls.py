"""End to end: STARTTLS, smtps wrapper mode and client certificates in smtpd.

One instance for the module: certificates from `postfix tls` (the local CA
signs the server certificate and two client certificates), smtpd on the
usual test port with TLS `may`, a submission service that requires TLS
(encrypt), and an smtps service in wrapper mode. Real clients: smtplib,
`openssl s_client`, swaks.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import ssl
import subprocess

import pytest

from tests.support.instance import Instance, free_port

RELAY_RCPT = "someone@relay-target.example"


def run_ok(inst: Instance, *args: str) -> str:
    done = inst.postfix(*args)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    sub_port, smtps_port, lenient_port = free_port(), free_port(), free_port()
    extra = (f"127.0.0.1:{lenient_port} inet n - n - - smtpd\n"
             "  -o smtpd_forbid_unauth_pipelining=no\n"
             f"127.0.0.1:{sub_port} inet n - n - - smtpd\n"
             "  -o syslog_name=postfix/submission\n"
             "  -o smtpd_tls_security_level=encrypt\n"
             f"127.0.0.1:{smtps_port} inet n - n - - smtpd\n"
             "  -o syslog_name=postfix/smtps\n"
             "  -o smtpd_tls_wrappermode=yes\n")
    instance = Instance(tmp, main_cf={
        "myhostname": "mx.example.com",
        "mynetworks": "192.0.2.0/24",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_relay_restrictions": "permit_mynetworks, permit_tls_clientcerts, "
                                    "reject_unauth_destination",
        "smtpd_tls_received_header": "yes",
    }, master_cf_extra=extra, start=False)
    ca = instance.config_dir / "tls-ca" / "ca-cert.pem"
    run_ok(instance, "tls", "new-ca")
    run_ok(instance, "tls", "enable-server", "--ca", "mx.example.com")
    good = run_ok(instance, "tls", "new-client-cert", "trusted-relay")
    run_ok(instance, "tls", "new-client-cert", "stranger")
    fingerprint = re.search(r"relay_clientcerts: (\S+)", good).group(1)
    (instance.config_dir / "relay_clientcerts").write_text(f"{fingerprint} trusted-relay\n")
    instance.set_main_cf({"smtpd_tls_CAfile": str(ca),
                          "relay_clientcerts": f"texthash:{instance.config_dir}/relay_clientcerts"})
    instance.sub_port, instance.smtps_port, instance.ca = sub_port, smtps_port, ca
    instance.lenient_port = lenient_port
    instance.clients = instance.config_dir / "tls-ca" / "clients"
    with instance.start():
        instance.wait_for_port(sub_port)
        instance.wait_for_port(smtps_port)
        instance.wait_for_port(lenient_port)
        yield instance


def client_context(inst: Instance, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(inst.ca))
    if cert:
        ctx.load_cert_chain(inst.clients / f"{cert}-cert.pem", inst.clients / f"{cert}-key.pem")
    return ctx


class TestStartTLS:
    def test_ehlo_offers_starttls_after_etrn_and_tls_verifies_with_the_local_ca(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            keywords = [line.split()[0].decode() for line in s.ehlo_resp.splitlines()[1:]]
            assert keywords.index("STARTTLS") == keywords.index("ETRN") + 1
            code, text = s.starttls(context=_hostname_ctx(inst))
            assert code == 220 and text == b"2.0.0 Ready to start TLS"
            s.ehlo("client.example")
            assert not s.has_extn("starttls")       # no STARTTLS inside TLS
            assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        inst.wait_for_log(r"postfix/smtpd\[\d+\]: Anonymous TLS connection established from "
                          r"localhost\[127\.0\.0\.1\]: TLSv1\.[23] with cipher \S+ "
                          r"\(\d+/\d+ bits\)")

    def test_openssl_s_client_starttls_smtp(self, inst):
        if shutil.which("openssl") is None:
            pytest.skip("openssl is not installed")
        done = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect",
             f"127.0.0.1:{inst.smtp_port}", "-CAfile", str(inst.ca),
             "-verify_hostname", "mx.example.com", "-verify_return_error", "-brief",
             "-ign_eof"],
            input=b"QUIT\r\n", capture_output=True, timeout=30)
        output = done.stdout.decode() + done.stderr.decode()
        assert "Verification: OK" in output, output
        assert "221 2.0.0 Bye" in output

    def test_pipelined_starttls_is_refused_by_default(self, inst):
        # smtpd_forbid_unauth_pipelining = yes (Postfix 3.10's default).
        with socket.create_connection(("127.0.0.1", inst.smtp_port), timeout=10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO client.example\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\nRSET\r\n")
            assert f.readline() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
            assert f.readline() == b""
        inst.wait_for_log(r"improper command pipelining after STARTTLS from localhost\[127\.0\.0\.1\]")

    def test_pipelined_input_after_starttls_is_discarded(self, inst):
        # With smtpd_forbid_unauth_pipelining = no, as before Postfix 3.10.
        with socket.create_connection(("127.0.0.1", inst.lenient_port), timeout=10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO client.example\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            # The injected RSET must never be executed inside the TLS session.
            raw.sendall(b"STARTTLS\r\nRSET\r\n")
            assert f.readline().startswith(b"220 ")
            tls = _hostname_ctx(inst).wrap_socket(raw, server_hostname="mx.example.com")
            tf = tls.makefile("rb")
            tls.sendall(b"NOOP\r\n")
            assert tf.readline() == b"250 2.0.0 Ok\r\n"
            tls.sendall(b"QUIT\r\n")
            assert tf.readline().startswith(b"221")
        line = inst.wait_for_log(r"disconnect from localhost\[127\.0\.0\.1\] ehlo=1 "
                                 r"starttls=1 noop=1 quit=1 commands=4")
        assert "rset" not in line.group(0)

    def test_starttls_resets_the_session(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            s.starttls(context=_hostname_ctx(inst))
            # RFC 3207 4.2: the server forgets the EHLO it was given in the clear.
            assert s.docmd("MAIL FROM:<forgotten@example.com>")[0] == 250
            assert s.docmd(f"RCPT TO:<{RELAY_RCPT}>")[0] == 554
        line = inst.wait_for_log(r"NOQUEUE: reject: RCPT .*from=<forgotten@example\.com>.*$")
        assert "proto=SMTP" in line.group(0) and "helo=" not in line.group(0)


class TestEncryptLevel:
    def test_mail_before_starttls_is_refused(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.sub_port) as s:
            s.ehlo("client.example")
            assert s.has_extn("starttls")
            assert s.mail("a@example.com") == (530, b"5.7.0 Must issue a STARTTLS command first")
            s.starttls(context=_hostname_ctx(inst))
            s.ehlo("client.example")
            assert s.mail("a@example.com")[0] == 250


class TestWrapperMode:
    def test_smtps_greets_inside_tls(self, inst):
        with smtplib.SMTP_SSL("127.0.0.1", inst.smtps_port, context=_hostname_ctx(inst)) as s:
            code, _ = s.ehlo("client.example")
            assert code == 250
            assert not s.has_extn("starttls")
        inst.wait_for_log(r"postfix/smtps/smtpd\[\d+\]: Anonymous TLS connection established")


class TestClientCertificates:
    def relay(self, inst, cert: str) -> int:
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            s.starttls(context=_hostname_ctx(inst, cert))
            s.ehlo("client.example")
            assert s.mail("a@client.example")[0] == 250
            code, _ = s.rcpt(RELAY_RCPT)
            s.rset()
            return code

    def test_listed_fingerprint_may_relay(self, inst):
        assert self.relay(inst, "trusted-relay") == 250
        inst.wait_for_log(r"Trusted TLS connection established from localhost\[127\.0\.0\.1\]")

    def test_other_certificate_may_not_relay(self, inst):
        assert self.relay(inst, "stranger") == 554

    def test_without_certificate_no_relay(self, inst):
        assert self.relay(inst, None) == 554

    def test_swaks_with_a_client_certificate(self, inst):
        if shutil.which("swaks") is None:
            pytest.skip("swaks is not installed")
        done = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{inst.smtp_port}", "--tls",
             "--tls-cert", str(inst.clients / "trusted-relay-cert.pem"),
             "--tls-key", str(inst.clients / "trusted-relay-key.pem"),
             "--from", "a@client.example", "--to", RELAY_RCPT, "--quit-after", "RCPT",
             "--helo", "client.example"], capture_output=True, timeout=60)
        output = done.stdout.decode()
        assert done.returncode == 0, output + done.stderr.decode()
        assert re.search(r"<~\s+250 2\.1\.5 Ok", output), output


def _hostname_ctx(inst: Instance, cert: str | None = None) -> ssl.SSLContext:
    """A verifying context whose check matches the server name mx.example.com."""
    ctx = client_context(inst, cert)
    ctx.check_hostname = False          # we connect to 127.0.0.1, the cert names mx.example.com
    return ctx
