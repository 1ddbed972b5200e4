"""A DNS block list served by the loopback DNS server blocks a listed client."""

import smtplib

import pytest

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance

ZONE = {"1.2.0.192.zen.example": {"A": ["127.0.0.2"], "TXT": ["listed"]},
        "spam.example.dbl.example": {"A": ["127.0.1.2"]}}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with DnsServer(ZONE) as dns, Instance(tmp_path_factory.mktemp("rbl"), main_cf={
            "myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
            "dns_nameservers": dns.nameserver,
            "smtpd_authorized_xclient_hosts": "127.0.0.1",
            "smtpd_recipient_restrictions": "reject_rbl_client zen.example=127.0.0.[2..11], "
                                            "reject_rhsbl_sender dbl.example, permit"}) as inst:
        yield inst


def rcpt_as(inst, addr: str, sender: str = "a@b.example") -> tuple[int, bytes]:
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    s.docmd("XCLIENT", f"NAME=unknown ADDR={addr}")
    s.ehlo("client.example")
    s.docmd("MAIL", f"FROM:<{sender}>")
    reply = s.docmd("RCPT", "TO:<root@mx.example.com>")
    s.quit()
    return reply


def test_listed_client_is_blocked_with_the_txt_reason(inst):
    assert rcpt_as(inst, "192.0.2.1") == \
        (554, b"5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
              b"zen.example; listed")
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.1\]: 554 5\.7\.1 Service "
                      r"unavailable; Client host \[192\.0\.2\.1\] blocked using zen\.example; "
                      r"listed; from=<a@b\.example> to=<root@mx\.example\.com>")


def test_unlisted_client_passes(inst):
    assert rcpt_as(inst, "192.0.2.2")[0] == 250


def test_listed_sender_domain(inst):
    assert rcpt_as(inst, "192.0.2.2", "x@spam.example") == \
        (554, b"5.7.1 Service unavailable; Sender address [spam.example] blocked using "
              b"dbl.example")
