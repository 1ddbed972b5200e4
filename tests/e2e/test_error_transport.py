"""A recipient whose transport is `error` is refused at RCPT with that
transport's text, as Postfix's smtpd does, and compared with Debian's
Postfix where it is installed."""

from __future__ import annotations

import pytest

from tests.support.instance import Instance
from tests.support.parity import postfix
from tests.support.parity.dialogue import play

SETTINGS = {
    "transport_maps": ("inline:{ { dead.test = error:5.1.2 host gone }, bare.test=error:, "
                       "{ soft.test = error:4.3.2 try later }, { plain.test = error:host down } }"),
    "relay_domains": "dead.test bare.test soft.test plain.test",
}
CASES = {
    "x@dead.test": "550 5.1.2 <x@dead.test>: Recipient address rejected: host gone",
    "x@bare.test": "550 5.1.1 <x@bare.test>: Recipient address rejected: Address is undeliverable",
    "x@soft.test": "550 5.3.2 <x@soft.test>: Recipient address rejected: try later",
    "x@plain.test": "550 5.1.1 <x@plain.test>: Recipient address rejected: host down",
}
DIALOGUE = [b"EHLO client.example", b"MAIL FROM:<a@example.com>",
            *(f"RCPT TO:<{rcpt}>".encode() for rcpt in CASES), b"QUIT"]


def rcpt_replies(port: int) -> list[str]:
    return [reply[0] for reply in play(port, DIALOGUE)[3:3 + len(CASES)]]


def test_error_transport_recipients_are_refused_at_rcpt(tmp_path):
    with Instance(tmp_path, main_cf=SETTINGS) as inst:
        assert rcpt_replies(inst.smtp_port) == list(CASES.values())
        inst.wait_for_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.2 "
                          r"<x@dead\.test>: Recipient address rejected: host gone; "
                          r"from=<a@example\.com> to=<x@dead\.test> proto=ESMTP "
                          r"helo=<client\.example>")


@pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")
def test_the_same_replies_as_postfix(tmp_path):
    with postfix.DebianPostfix(tmp_path / "postfix", SETTINGS) as pf:
        assert rcpt_replies(pf.smtp_port) == list(CASES.values())
