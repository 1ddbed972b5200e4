"""End to end: SMTP AUTH in smtpd, with the built-in store and with Dovecot.

One instance: smtpd with TLS `may` and AUTH on the test port (users made
with saslpasswd2 before the start, broken_sasl_auth_clients on), a
submission service with smtpd_tls_auth_only, and a third service whose
smtpd_sasl_type is dovecot, talking to a real Debian dovecot (started by
the fixture with a passwd-file, its auth socket in the test directory).
mynetworks excludes 127.0.0.1, so relaying depends on AUTH alone.
"""

from __future__ import annotations

import base64
import re
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.support.instance import Instance, free_port, is_root
from tests.support.wait import poll

# base64("\0kdent\0secret"): the AUTH PLAIN initial response a test client sends.
PLAIN_KDENT = base64.b64encode(b"\0kdent\0secret").decode()
FAIL2BAN = re.compile(r"warning: [-._\w]+\[(?P<host>[^\]]+)\]: SASL ((?i:LOGIN|PLAIN|"
                      r"(?:CRAM|DIGEST)-MD5)) authentication failed:"
                      r"(?! Connection lost to authentication server| Invalid authentication "
                      r"mechanism)")
RELAY_RCPT = "friend@elsewhere.example"


def start_dovecot(tmp: Path, auth_port: int) -> subprocess.Popen | None:
    if shutil.which("dovecot") is None or not is_root():
        return None
    (tmp / "dovecot-users").write_text("kdent:{PLAIN}dovesecret\n")
    conf = tmp / "dovecot.conf"
    conf.write_text(f"""base_dir = {tmp}/dovecot-run
state_dir = {tmp}/dovecot-state
log_path = {tmp}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {tmp}/dovecot-users
}}
service auth {{
  unix_listener {tmp}/dovecot-auth {{
    mode = 0666
  }}
  inet_listener {{
    address = 127.0.0.1
    port = {auth_port}
  }}
}}
""")
    proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    socket_path = tmp / "dovecot-auth"
    poll(lambda: socket_path.exists() or proc.poll() is not None, timeout=20)
    if not socket_path.exists():
        proc.kill()
        return None
    return proc


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sasl")
    auth_port = free_port()
    dovecot = start_dovecot(tmp, auth_port)
    sub_port, dove_port = free_port(), free_port()
    # smtpd_sasl_path as inet:host:port and as unix:path, beside the bare path.
    path_ports = {"inet": free_port(), "unix": free_port()}
    paths = {"inet": f"inet:127.0.0.1:{auth_port}", "unix": f"unix:{tmp}/dovecot-auth"}
    extra = (f"127.0.0.1:{sub_port} inet n - n - - smtpd\n"
             "  -o syslog_name=postfix/submission\n"
             "  -o smtpd_tls_auth_only=yes\n"
             f"127.0.0.1:{dove_port} inet n - n - - smtpd\n"
             "  -o syslog_name=postfix/dovecot\n"
             "  -o smtpd_sasl_type=dovecot\n"
             f"  -o smtpd_sasl_path={tmp}/dovecot-auth\n")
    for kind, port in path_ports.items():
        extra += (f"127.0.0.1:{port} inet n - n - - smtpd\n"
                  f"  -o syslog_name=postfix/dovecot-{kind}\n"
                  "  -o smtpd_sasl_type=dovecot\n"
                  f"  -o smtpd_sasl_path={paths[kind]}\n")
    instance = Instance(tmp, main_cf={
        "myhostname": "mx.example.com",
        "mydestination": "$myhostname, localhost",
        "mynetworks": "192.0.2.0/24",
        "smtpd_sasl_auth_enable": "yes",
        "broken_sasl_auth_clients": "yes",
        "smtpd_tls_loglevel": "1",
        "smtpd_sender_login_maps": f"texthash:{tmp}/etc/login_maps",
        "smtpd_sender_restrictions": "reject_sender_login_mismatch",
    }, master_cf_extra=extra, start=False)
    (instance.config_dir / "login_maps").write_text("kdent@example.com kdent\n"
                                                   "boss@example.com boss, kdent\n")
    for cmd in (["tls", "enable-server"],):
        assert instance.postfix(*cmd).returncode == 0
    for user, password in (("kdent", "secret"), ("other", "pass")):
        done = instance.command("saslpasswd2", "-c", "-p", user, input=password + "\n")
        assert done.returncode == 0, done.stderr
    instance.sub_port, instance.dove_port, instance.dovecot = sub_port, dove_port, dovecot
    instance.path_ports = path_ports
    try:
        with instance.start():
            instance.wait_for_port(sub_port)
            instance.wait_for_port(dove_port)
            for port in path_ports.values():
                instance.wait_for_port(port)
            yield instance
    finally:
        if dovecot is not None:
            dovecot.terminate()
            dovecot.wait(10)


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # the self-signed certificate of enable-server
    return ctx


class TestAuthBuiltin:
    def test_ehlo_offers_auth_after_starttls_in_postfix_order(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            lines = [line.decode() for line in s.ehlo_resp.splitlines()[1:]]
            assert lines[lines.index("ETRN") + 1:lines.index("ETRN") + 4] == \
                ["STARTTLS", "AUTH PLAIN LOGIN", "AUTH=PLAIN LOGIN"]

    def test_plain_initial_response_authenticates_and_relays(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            assert s.docmd("AUTH", f"PLAIN {PLAIN_KDENT}") == \
                (235, b"2.7.0 Authentication successful")
            assert s.docmd("AUTH", f"PLAIN {PLAIN_KDENT}")[0] == 503
            s.sendmail("kdent@example.com", [RELAY_RCPT], b"Subject: t\r\n\r\nhello\r\n")
        inst.wait_for_log(r"postfix/smtpd\[\d+\]: \w+: client=localhost\[127\.0\.0\.1\], "
                          r"sasl_method=PLAIN, sasl_username=kdent$")

    def test_login_mechanism_with_smtplib(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            s.user, s.password = "other", "pass"
            code, _ = s.auth("LOGIN", s.auth_login)
            assert code == 235

    def test_wrong_password_fails_with_535_and_the_fail2ban_line(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            bad = base64.b64encode(b"\0kdent\0wrong").decode()
            assert s.docmd("AUTH", f"PLAIN {bad}") == \
                (535, b"5.7.8 Error: authentication failed: authentication failure")
        line = inst.wait_for_log(r"warning: localhost\[127\.0\.0\.1\]: SASL PLAIN "
                                 r"authentication failed: authentication failure$")
        assert FAIL2BAN.search(line.group(0)).group("host") == "127.0.0.1"

    def test_without_auth_no_relay(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            s.mail("someone@example.org")
            assert s.rcpt(RELAY_RCPT)[0] == 454     # defer_unauth_destination, the default

    def test_sender_login_mismatch(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            s.mail("kdent@example.com")
            assert s.rcpt("postmaster@mx.example.com") == \
                (553, b"5.7.1 <kdent@example.com>: Sender address rejected: not logged in")
            s.rset()
            s.login("kdent", "secret")
            s.mail("boss@example.com")
            assert s.rcpt(RELAY_RCPT)[0] == 250
            s.rset()
            s.mail("stranger@example.com")
            assert s.rcpt(RELAY_RCPT) == \
                (553, b"5.7.1 <stranger@example.com>: Sender address rejected: "
                      b"not owned by user kdent")

    def test_auth_only_hides_auth_before_starttls(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.sub_port) as s:
            s.ehlo("client.example")
            assert not s.has_extn("auth")
            assert s.docmd("AUTH", f"PLAIN {PLAIN_KDENT}")[0] == 503
            s.starttls(context=insecure())
            s.ehlo("client.example")
            assert s.has_extn("auth")
            assert s.docmd("AUTH", f"PLAIN {PLAIN_KDENT}")[0] == 235

    def test_swaks_tls_auth(self, inst):
        if shutil.which("swaks") is None:
            pytest.skip("swaks is not installed")
        done = subprocess.run(
            ["swaks", "--server", f"127.0.0.1:{inst.sub_port}", "--tls", "--auth", "PLAIN",
             "--auth-user", "kdent", "--auth-password", "secret", "--from", "kdent@example.com",
             "--to", RELAY_RCPT, "--helo", "client.example"], capture_output=True, timeout=60)
        output = done.stdout.decode()
        assert done.returncode == 0, output + done.stderr.decode()
        assert "235 2.7.0 Authentication successful" in output
        assert re.search(r"250 2\.0\.0 Ok: queued as \w+", output)
        inst.wait_for_log(r"postfix/submission/smtpd\[\d+\]: \w+: client=localhost"
                          r"\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=kdent")


class TestAuthDovecot:
    @pytest.fixture(autouse=True)
    def need_dovecot(self, inst):
        if inst.dovecot is None:
            pytest.skip("Debian's dovecot-core is not installed (or not root)")

    def test_plain_and_login_against_dovecot(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.dove_port) as s:
            s.ehlo("client.example")
            assert s.has_extn("auth")
            assert "PLAIN" in s.esmtp_features["auth"]
            ok = base64.b64encode(b"\0kdent\0dovesecret").decode()
            assert s.docmd("AUTH", f"PLAIN {ok}")[0] == 235
        with smtplib.SMTP("127.0.0.1", inst.dove_port) as s:
            s.ehlo("client.example")
            s.user, s.password = "kdent", "dovesecret"
            assert s.auth("LOGIN", s.auth_login)[0] == 235

    @pytest.mark.parametrize("kind", ["inet", "unix"])
    def test_sasl_path_forms(self, inst, kind):
        # smtpd_sasl_path = inet:127.0.0.1:PORT and unix:/path reach the same Dovecot.
        with smtplib.SMTP("127.0.0.1", inst.path_ports[kind]) as s:
            s.ehlo("client.example")
            assert "PLAIN" in s.esmtp_features.get("auth", "")
            ok = base64.b64encode(b"\0kdent\0dovesecret").decode()
            assert s.docmd("AUTH", f"PLAIN {ok}")[0] == 235
        with smtplib.SMTP("127.0.0.1", inst.path_ports[kind]) as s:
            s.ehlo("client.example")
            bad = base64.b64encode(b"\0kdent\0nope").decode()
            assert s.docmd("AUTH", f"PLAIN {bad}")[0] == 535

    def test_wrong_password_against_dovecot(self, inst):
        with smtplib.SMTP("127.0.0.1", inst.dove_port) as s:
            s.ehlo("client.example")
            bad = base64.b64encode(b"\0kdent\0nope").decode()
            code, text = s.docmd("AUTH", f"PLAIN {bad}")
            assert code == 535 and text.startswith(b"5.7.8 Error: authentication failed:")
        inst.wait_for_log(r"postfix/dovecot/smtpd\[\d+\]: warning: localhost\[127\.0\.0\.1\]: "
                          r"SASL PLAIN authentication failed:")
