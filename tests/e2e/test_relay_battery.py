"""An open-relay battery against the default configuration.

The client is a stranger: XCLIENT from loopback (an authorised XCLIENT
host) makes the session's client 192.0.2.1, which is not in mynetworks.
Every trick to get mail to another domain through our domain must fail."""

import smtplib

import pytest

from tests.support.instance import Instance

ROUTED = [
    "user@other.example",
    "user%other.example@mx.example.com",
    "user@other.example@mx.example.com",
    '"user@other.example"@mx.example.com',
    "@mx.example.com:user@other.example",
    "other.example!user@mx.example.com",
    "user@OTHER.EXAMPLE",
    "user@other.example.",
    "user@[IPv6:2001:db8::1]",
    "user@[192.0.2.99]",
]


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with Instance(tmp_path_factory.mktemp("relay"), main_cf={
            "myhostname": "mx.example.com", "mydomain": "example.com",
            "mydestination": "$myhostname, localhost",
            "smtpd_authorized_xclient_hosts": "127.0.0.1"}) as inst:
        yield inst


def stranger(inst: Instance) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    assert s.docmd("XCLIENT", "NAME=unknown ADDR=192.0.2.1")[0] == 220
    s.ehlo("client.example")
    return s


@pytest.mark.parametrize("recipient", ROUTED)
def test_no_relay_for_a_stranger(inst, recipient):
    s = stranger(inst)
    assert s.docmd("MAIL", "FROM:<a@sender.example>")[0] == 250
    code, text = s.docmd("RCPT", f"TO:<{recipient}>")
    s.quit()
    assert code in (454, 554, 501, 550), (recipient, code, text)
    assert code != 250


def test_relay_refusal_is_logged_in_postfix_shape(inst):
    s = stranger(inst)
    s.docmd("MAIL", "FROM:<a@b.example>")
    code, text = s.docmd("RCPT", "TO:<x@other.example>")
    s.quit()
    assert (code, text) == (454, b"4.7.1 <x@other.example>: Relay access denied")
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.1\]: 454 4\.7\.1 "
                      r"<x@other\.example>: Relay access denied; from=<a@b\.example> "
                      r"to=<x@other\.example> proto=ESMTP helo=<client\.example>")


def test_local_mail_is_still_accepted_from_a_stranger(inst):
    s = stranger(inst)
    s.docmd("MAIL", "FROM:<a@sender.example>")
    assert s.docmd("RCPT", "TO:<postmaster@mx.example.com>")[0] == 250
    s.quit()


def test_loopback_client_may_relay(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    s.docmd("MAIL", "FROM:<a@sender.example>")
    assert s.docmd("RCPT", "TO:<user@other.example>")[0] == 250
    s.quit()
