"""pymaster.mail.verp: delimiters and per-recipient senders; smtpd's XVERP
parameter and sendmail's -XV/-V options (Postfix's texts, from Debian's 3.7)."""

from __future__ import annotations

import pytest

from pymaster.commands import sendmail
from pymaster.mail import records, verp
from pymaster.mail.delivery import DeliveryRequest
from services.smtpd import replies
from services.smtpd.command import CommandError, parse_mail

FILTER = "-=+"


@pytest.mark.parametrize("delims, why", [
    ("+=", ""), ("-+", ""), ("==", ""),
    ("+", "bad VERP delimiter string length"), ("+=+", "bad VERP delimiter string length"),
    ("a=", "bad first VERP delimiter character"), ("+b", "bad second VERP delimiter character"),
])
def test_verify(delims, why):
    assert verp.verify(delims, FILTER) == why


@pytest.mark.parametrize("sender, rcpt, delims, out", [
    ("list-return@lists.example.com", "alice@example.com", "+=",
     "list-return+alice=example.com@lists.example.com"),
    ("owner-list@origin", "user@domain", "-=", "owner-list-user=domain@origin"),
    ("list", "alice@example.com", "+=", "list+alice=example.com"),
    ("list@lists.example.com", "alice", "+=", "list+alice@lists.example.com"),
    ("", "alice@example.com", "+=", ""),
])
def test_sender_for(sender, rcpt, delims, out):
    assert verp.sender_for(sender, delims, rcpt) == out


def test_request_sender_uses_the_original_recipient():
    rcpt = records.Recipient("alice@mail.example.com", orig="alice@example.com")
    req = DeliveryRequest("Q", "p", "smtp", "x", "l@lists.example", [rcpt],
                          attrs={verp.ATTR: "+="})
    assert verp.request_sender(req) == "l+alice=example.com@lists.example"
    req.attrs = {}
    assert verp.request_sender(req) == "l@lists.example"


ALLOWED = ("+=", FILTER)


@pytest.mark.parametrize("arg, delims", [
    ("FROM:<list@example.com> XVERP", "+="), ("FROM:<list@example.com> XVERP=+=", "+="),
    ("FROM:<list@example.com> xverp=-+", "-+"),
])
def test_xverp_for_an_authorized_client(arg, delims):
    assert parse_mail(arg, verp=ALLOWED).verp == delims


@pytest.mark.parametrize("arg, reply", [
    ("FROM:<list@example.com> XVERP=ab", "501 5.5.4 Error: XVERP needs two characters from -=+"),
    ("FROM:<list@example.com> XVERP=+", "501 5.5.4 Error: XVERP needs two characters from -=+"),
    ("FROM:<list@example.com> XVERP=", "501 5.5.4 Error: XVERP needs two characters from -=+"),
    ("FROM:<list@example.com> XVERP=+=+", "501 5.5.4 Error: XVERP needs two characters from -=+"),
    ("FROM:<> XVERP", "503 5.5.4 Error: XVERP requires non-null sender"),
])
def test_xverp_errors(arg, reply):
    with pytest.raises(CommandError) as e:
        parse_mail(arg, verp=ALLOWED)
    assert e.value.reply == reply


@pytest.mark.parametrize("arg, option", [
    ("FROM:<list@example.com> XVERP", "XVERP"), ("FROM:<list@example.com> XVERP=+=", "XVERP=+="),
    ("FROM:<> XVERP", "XVERP"),
])
def test_xverp_is_an_unknown_option_for_other_clients(arg, option):
    with pytest.raises(CommandError) as e:
        parse_mail(arg)
    assert e.value.reply == replies.ERR_UNSUPPORTED_OPTION.format(option=option)
    assert e.value.reply == f"555 5.5.4 Unsupported option: {option}"


@pytest.mark.parametrize("argv, verp_, envid", [
    (["-XV", "a@b"], "", ""), (["-XV+=", "a@b"], "+=", ""), (["-V", "-f", "l@x", "a@b"], "", ""),
    (["-V-=", "a@b"], "-=", ""), (["-V+", "a@b"], None, "+"), (["-V", "abc", "a@b"], None, "abc"),
    (["-Vxyz", "a@b"], None, "xyz"), (["-V", "+=", "a@b"], "+=", ""),
])
def test_sendmail_verp_options(argv, verp_, envid):
    opts = sendmail.parse_args(argv)
    assert (opts.verp, opts.envid) == (verp_, envid)


def test_sendmail_records_the_delimiters():
    opts = sendmail.parse_args(["-XV+=", "-f", "list@example.com", "a@b"])
    _, _, attrs = sendmail.build_envelope(opts, b"Subject: x\n\nhi\n", 0)
    assert attrs[verp.ATTR] == "+="
