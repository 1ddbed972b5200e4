"""XCLIENT and XFORWARD against the real smtpd, with swaks as the client."""

import shutil
import smtplib
import subprocess

import pytest

from tests.support.instance import Instance


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with Instance(tmp_path_factory.mktemp("xclient"), main_cf={
            "myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
            "smtpd_authorized_xclient_hosts": "127.0.0.1",
            "smtpd_authorized_xforward_hosts": "127.0.0.1",
            "smtpd_client_restrictions": "check_client_access "
                                         "inline:{ {x.example=REJECT go away} }"}) as inst:
        yield inst


def test_ehlo_advertises_xclient_to_authorised_clients(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    code, text = s.ehlo("client.example")
    s.quit()
    assert b"XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT" in text
    assert b"XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in text


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_xclient_tests_restrictions_as_another_client(inst):
    done = subprocess.run(["swaks", "--server", f"127.0.0.1:{inst.smtp_port}",
                           "--xclient", "NAME=x.example ADDR=192.0.2.1",
                           "--from", "a@b.example", "--to", "root@mx.example.com",
                           "--quit-after", "RCPT"], capture_output=True, text=True, timeout=30)
    assert "554 5.7.1 <x.example[192.0.2.1]>: Client host rejected: go away" in done.stdout
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from x\.example\[192\.0\.2\.1\]: 554 5\.7\.1 "
                      r"<x\.example\[192\.0\.2\.1\]>: Client host rejected: go away;")


def test_xclient_greets_again_and_needs_ehlo(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    assert s.docmd("XCLIENT", "ADDR=192.0.2.7 NAME=[UNAVAILABLE]") == \
        (220, b"mx.example.com ESMTP Postfix")
    s.ehlo("other.example")
    s.docmd("MAIL", "FROM:<a@b.example>")
    assert s.docmd("RCPT", "TO:<x@elsewhere.example>")[0] == 454    # a stranger now
    s.quit()


def test_bad_xclient_attribute(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    assert s.docmd("XCLIENT", "COLOUR=blue") == (501, b"5.5.4 Bad XCLIENT attribute name: COLOUR")
    s.quit()


def test_xforward_records_the_original_client(inst):
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    assert s.docmd("XFORWARD", "NAME=origin.example ADDR=192.0.2.44")[0] == 250
    s.sendmail("a@b.example", ["root@mx.example.com"], b"Subject: x\n\nhi\n")
    s.quit()
