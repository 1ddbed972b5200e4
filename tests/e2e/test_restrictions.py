"""The restriction language end to end: the seed's anti-spam sample runs unchanged,
restriction classes, HOLD through cleanup, reject_unauth_pipelining, footers."""

import smtplib
import socket
import time

import pytest

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance
from tests.support.wait import wait_until

ANTI_SPAM = ("reject_invalid_hostname, reject_non_fqdn_hostname, reject_non_fqdn_sender, "
             "reject_non_fqdn_recipient, reject_unknown_sender_domain, "
             "reject_unknown_recipient_domain, permit_mynetworks, reject_unauth_destination, "
             "check_recipient_access pcre:$config_directory/recipient_checks.pcre, "
             "check_helo_access hash:$config_directory/helo_checks, "
             "check_sender_access hash:$config_directory/sender_checks, "
             "check_client_access hash:$config_directory/client_checks, "
             "check_client_access pcre:$config_directory/client_checks.pcre, "
             "reject_rbl_client zen.example, reject_rhsbl_client dbl.example, permit")
ZONE = {"sender.example": {"MX": ["10 mx.sender.example."]}}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("restrictions")
    with DnsServer(ZONE) as dns:
        inst = Instance(tmp, start=False, main_cf={
            "myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
            "dns_nameservers": dns.nameserver,
            "mynetworks": "127.0.0.0/8",
            "smtpd_authorized_xclient_hosts": "127.0.0.1",
            "smtpd_helo_required": "yes", "disable_vrfy_command": "yes",
            "smtpd_restriction_classes": "spamlover, spamhater",
            "spamlover": "permit", "spamhater": "reject",
            "smtpd_recipient_restrictions": ANTI_SPAM,
            "smtpd_data_restrictions": "reject_unauth_pipelining",
            # Off, so that the talker meets reject_unauth_pipelining: with
            # Postfix 3.10's default (yes) the session ends before DATA.
            "smtpd_forbid_unauth_pipelining": "no",
            "smtpd_reject_footer": "For help see https://help.example",
        })
        cfg = inst.config_dir
        (cfg / "recipient_checks.pcre").write_text("/^nobody@/ HOLD\n/^abuse@/ spamlover\n")
        (cfg / "helo_checks").write_text("bad.helo.example REJECT no such helo\n")
        (cfg / "sender_checks").write_text("spammer@sender.example 550 go away\n")
        (cfg / "client_checks").write_text("192.0.2.66 REJECT\n")
        (cfg / "client_checks.pcre").write_text("/^192\\.0\\.2\\.77$/ spamhater\n")
        for name in ("helo_checks", "sender_checks", "client_checks"):
            done = inst.command("postmap", f"hash:{cfg / name}")
            assert done.returncode == 0, done.stderr
        inst.start()
        try:
            yield inst
        finally:
            inst.stop()


def session(inst, addr="192.0.2.1", helo="client.example") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    s.docmd("XCLIENT", f"NAME=unknown ADDR={addr}")
    s.ehlo(helo)
    return s


def rcpt(inst, recipient="root@mx.example.com", sender="a@sender.example", **kw):
    s = session(inst, **kw)
    s.docmd("MAIL", f"FROM:<{sender}>")
    reply = s.docmd("RCPT", f"TO:<{recipient}>")
    s.quit()
    return reply


def test_clean_mail_passes(inst):
    assert rcpt(inst)[0] == 250


@pytest.mark.parametrize("kw, code, start", [
    ({"helo": "bad..helo"}, 501, b"5.5.2 <bad..helo>: Helo command rejected: Invalid name"),
    ({"helo": "nodots"}, 504, b"5.5.2 <nodots>: Helo command rejected: need fully-qualified"),
    ({"helo": "bad.helo.example"}, 554, b"5.7.1 <bad.helo.example>: Helo command rejected: "
                                        b"no such helo"),
    ({"sender": "user"}, 504, b"5.5.2 <user>: Sender address rejected: need fully-qualified"),
    ({"sender": "x@nowhere.example"}, 450, b"4.1.8 <x@nowhere.example>: Sender address rejected: "
                                           b"Domain not found"),
    ({"sender": "spammer@sender.example"}, 550, b"5.7.1 <spammer@sender.example>: Sender "
                                                b"address rejected: go away"),
    ({"recipient": "x@elsewhere.example"}, 454, b"4.7.1 <x@elsewhere.example>: Relay access"),
    ({"addr": "192.0.2.66"}, 554, b"5.7.1 <unknown[192.0.2.66]>: Client host rejected: Access"),
    ({"addr": "192.0.2.77"}, 554, b"5.7.1 <unknown[192.0.2.77]>: Client host rejected: Access"),
])
def test_anti_spam_sample(inst, kw, code, start):
    got_code, text = rcpt(inst, **kw)
    assert got_code == code and text.startswith(start), text


def test_reject_footer(inst):
    code, text = rcpt(inst, addr="192.0.2.66")
    assert text.endswith(b"\n5.7.1 For help see https://help.example")


def test_class_from_a_table(inst):
    assert rcpt(inst, "abuse@mx.example.com", addr="192.0.2.77")[0] == 250


def test_helo_required(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    # Postfix puts smtpd_reject_footer (set for this instance) on every 4xx/5xx reply.
    assert s.docmd("MAIL", "FROM:<a@sender.example>") == (
        503, b"5.5.1 Error: send HELO/EHLO first\n5.5.1 For help see https://help.example")
    s.quit()


def test_hold_goes_to_the_hold_queue(inst):
    s = session(inst)
    s.sendmail("a@sender.example", ["nobody@mx.example.com"], b"Subject: hold me\n\nbody\n")
    s.quit()
    inst.wait_for_log(r"NOQUEUE: hold: RCPT from unknown\[192\.0\.2\.1\]: <nobody@mx\.example\.com>: "
                      r"Recipient address triggers HOLD action;")
    wait_until(lambda: any(p.is_file() for p in (inst.queue_dir / "hold").rglob("*")), 20,
               "a file in the hold queue")


def test_unauth_pipelining_talker(inst):
    sock = socket.create_connection(("127.0.0.1", inst.smtp_port))
    sock.sendall(b"HELO client.example\r\nMAIL FROM:<a@sender.example>\r\n"
                 b"RCPT TO:<root@mx.example.com>\r\nDATA\r\n")
    data = b""
    deadline = time.monotonic() + 10
    while b"503 5.5.0" not in data and time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    assert b"503-5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining" \
        b"\r\n503 5.5.0 For help see https://help.example" in data
