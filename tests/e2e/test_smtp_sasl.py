"""End to end: the smtp client authenticates (SMTP AUTH after STARTTLS) to a relayhost.

The outbound-gateway set-up: instance A sends everything to
`relayhost = [127.0.0.2]:PORT`, a submission-style listener of instance B
that requires TLS and relays only for authenticated clients
(`smtpd_tls_security_level=encrypt`, `smtpd_sasl_auth_enable=yes`,
`smtpd_relay_restrictions=permit_sasl_authenticated,reject`; users made with
saslpasswd2). A uses `smtp_tls_security_level = encrypt` and a password map
keyed by the relayhost as written. Other transports of A use a wrong
password, the LOGIN mechanism, sender-dependent passwords, and the default
(plaintext-refusing) security options.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.e2e.test_smtp_tls import listener, message_for, start_both, start_server, transport
from tests.support.instance import Instance, free_port

ROUTES = {"wrong.test": "t_wrong", "login.test": "t_login", "bysender.test": "t_sender",
          "noplain.test": "t_noplain"}
DOMAINS = ["gateway.test", *ROUTES]
DELIVERED = 3      # gateway.test, login.test, bysender.test


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smtp_sasl")
    port = free_port()
    sub = listener("submission", port, "smtpd_tls_security_level=encrypt",
                   "smtpd_sasl_auth_enable=yes",
                   "smtpd_relay_restrictions=permit_sasl_authenticated,reject")
    b = start_server(tmp / "b", {"submission": port}, sub, DOMAINS)
    for user, password in (("kdent", "secret"), ("boss", "bosspw")):
        done = b.command("saslpasswd2", "-c", "-p", user, input=password + "\n")
        assert done.returncode == 0, done.stderr
    start_both(b)
    try:
        a = start_client(tmp / "a", port)
        try:
            send_all(a)
            yield a, b
        finally:
            a.stop()
    finally:
        b.stop()


def start_client(tmp: Path, port: int) -> Instance:
    relay = f"[127.0.0.2]:{port}"
    etc = tmp / "etc"
    extra = (transport("t_wrong", f"smtp_sasl_password_maps=texthash:{etc}/wrong_passwd")
             + transport("t_login", "smtp_sasl_mechanism_filter=login")
             + transport("t_sender", "smtp_sender_dependent_authentication=yes")
             + transport("t_noplain", "smtp_sasl_tls_security_options=noplaintext"))
    a = Instance(tmp, main_cf={
        "myhostname": "a.test", "mynetworks": "127.0.0.0/8", "inet_interfaces": "127.0.0.1",
        "relayhost": relay, "smtp_tls_security_level": "encrypt", "smtp_tls_loglevel": "1",
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": f"texthash:{etc}/sasl_passwd",
        "smtp_sasl_tls_security_options": "noanonymous",
        "transport_maps": f"texthash:{etc}/transport",
    }, master_cf_extra=extra, start=False)
    (etc / "sasl_passwd").write_text(f"boss@a.test boss:bosspw\n{relay} kdent:secret\n")
    (etc / "wrong_passwd").write_text(f"{relay} kdent:wrong\n")
    (etc / "transport").write_text("".join(f"{d} {t}:{relay}\n" for d, t in ROUTES.items()))
    return a.start()


def send_all(a: Instance) -> None:
    with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as s:
        for domain in DOMAINS:
            sender = "boss@a.test" if domain == "bysender.test" else ""
            s.sendmail(sender, [f"user@{domain}"], f"Subject: {domain}\n\nto {domain}\n".encode())


def status_line(a: Instance, domain: str, status: str) -> str:
    return a.wait_for_log(rf"postfix/(?:\w+/)?smtp\[\d+\]: \w+: to=<user@{domain}>, "
                          rf".*status={status} .*$").group(0)


def test_gateway_relayhost_with_auth_after_starttls(pair):
    a, b = pair
    line = status_line(a, r"gateway\.test", "sent")
    assert f"relay=127.0.0.2[127.0.0.2]:{b.ports['submission']}" in line
    a.wait_for_log(r"postfix/smtp\[\d+\]: (Untrusted|Trusted) TLS connection established to "
                   r"127\.0\.0\.2\[127\.0\.0\.2\]:\d+: TLSv1\.[23] with cipher")
    b.wait_for_log(r"postfix/submission/smtpd\[\d+\]: \w+: client=\S+, "
                   r"sasl_method=PLAIN, sasl_username=kdent$")
    msg = message_for(b, "gateway.test", DELIVERED)
    assert b"with ESMTPSA id" in msg


def test_a_wrong_password_defers_with_the_servers_reply(pair):
    a, b = pair
    line = status_line(a, r"wrong\.test", "deferred")
    assert "dsn=4.7.8" in line
    assert (f"relay=127.0.0.2[127.0.0.2]:{b.ports['submission']}, " in line)
    assert "(SASL authentication failed; server 127.0.0.2[127.0.0.2] said: 535 5.7.8 " in line
    b.wait_for_log(r"warning: \S+: SASL PLAIN authentication failed")


def test_the_mechanism_filter_selects_login(pair):
    a, b = pair
    status_line(a, r"login\.test", "sent")
    b.wait_for_log(r"sasl_method=LOGIN, sasl_username=kdent$")
    assert b"with ESMTPSA id" in message_for(b, "login.test", DELIVERED)


def test_sender_dependent_authentication_uses_the_senders_password(pair):
    a, b = pair
    status_line(a, r"bysender\.test", "sent")
    b.wait_for_log(r"sasl_method=PLAIN, sasl_username=boss$")


def test_noplaintext_inside_tls_leaves_no_mechanism(pair):
    a, b = pair
    line = status_line(a, r"noplain\.test", "deferred")
    assert line.endswith("(SASL authentication failed; cannot authenticate to server "
                         "127.0.0.2[127.0.0.2]: no mechanism available)")
