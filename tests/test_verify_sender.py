"""pymaster.mail.verify_sender: the probe sender, fixed or with address_verify_sender_ttl's stamp.

Postfix appends (time / ttl) in base 31 (digits 0-9 and the consonants
B-Z) to address_verify_sender's local part, with no delimiter, and accepts
a stamp one period off either way as its own."""

from __future__ import annotations

import pytest

from pymaster.mail.config import Config
from pymaster.mail.verify_sender import (SenderError, probe_sender, stamp, unstamp,
                                    valid_probe_sender)

TTL = 3600
NOW = 1_700_000_000.0
EPOCH = int(NOW // TTL)                # 472222


def make_cfg(**values) -> Config:
    return Config("/nonexistent", {"myhostname": "mx.example.com", **values})


@pytest.mark.parametrize("number, text", [
    (0, "0"), (9, "9"), (10, "B"), (30, "Z"), (31, "10"), (31 * 31 - 1, "ZZ"),
    (EPOCH, "HVCZ"),
])
def test_stamps_are_base_31_without_vowels(number, text):
    assert stamp(number) == text
    assert unstamp(text) == unstamp(text.lower()) == number


@pytest.mark.parametrize("text", ["", "A", "1E", "12-", "x y"])
def test_text_that_is_no_stamp(text):
    assert unstamp(text) is None


@pytest.mark.parametrize("values, sender", [
    ({}, "double-bounce@mx.example.com"),
    ({"address_verify_sender": "probe"}, "probe@mx.example.com"),
    ({"address_verify_sender": "probe@verify.example"}, "probe@verify.example"),
    ({"address_verify_sender": "<>"}, ""),
    ({"address_verify_sender": ""}, ""),
    ({"address_verify_sender_ttl": "0s"}, "double-bounce@mx.example.com"),
    ({"address_verify_sender_ttl": "1h"}, "double-bounceHVCZ@mx.example.com"),
    ({"address_verify_sender_ttl": "1h", "address_verify_sender": "probe@verify.example"},
     "probeHVCZ@verify.example"),
    ({"address_verify_sender_ttl": "1h", "address_verify_sender": "<>"}, ""),
])
def test_probe_sender(values, sender):
    assert probe_sender(make_cfg(**values), NOW) == sender


def test_the_stamp_changes_once_per_ttl():
    cfg = make_cfg(address_verify_sender_ttl="1h")
    start = EPOCH * TTL
    assert probe_sender(cfg, start) == probe_sender(cfg, start + TTL - 1)
    assert probe_sender(cfg, start + TTL) == f"double-bounce{stamp(EPOCH + 1)}@mx.example.com"


@pytest.mark.parametrize("value, why", [("@example.com", "must not start with '@'"),
                                        ("probe@", "must not end with '@'")])
def test_a_malformed_sender_is_a_clear_error(value, why):
    with pytest.raises(SenderError, match=why):
        probe_sender(make_cfg(address_verify_sender=value), NOW)


@pytest.mark.parametrize("offset, valid", [(-2, False), (-1, True), (0, True), (1, True),
                                           (2, False)])
def test_our_stamped_sender_is_recognised_within_one_period(offset, valid):
    cfg = make_cfg(address_verify_sender_ttl="1h")
    theirs = f"Double-Bounce{stamp(EPOCH + offset)}@MX.example.com"
    assert valid_probe_sender(cfg, theirs, NOW) == \
        ("double-bounce@mx.example.com" if valid else None)


@pytest.mark.parametrize("values, address, result", [
    ({}, "double-bounce@mx.example.com", "double-bounce@mx.example.com"),
    ({}, "double-bounceHVCZ@mx.example.com", None),           # no ttl: no stamp
    ({}, "double-bounce@other.example", None),
    ({}, "someone@mx.example.com", None),
    ({"address_verify_sender_ttl": "1h"}, "double-bounce@mx.example.com", None),
    ({"address_verify_sender_ttl": "1h"}, "double-bounceFVBA@mx.example.com", None),
    ({"address_verify_sender": "<>"}, "", ""),
    ({"address_verify_sender": "<>"}, "double-bounce@mx.example.com", None),
])
def test_what_is_not_our_probe_sender(values, address, result):
    assert valid_probe_sender(make_cfg(**values), address, NOW) == result
