"""services.smtp.nexthop: the next-hop forms Postfix accepts."""

import pytest

from services.smtp.nexthop import Destination, NextHopError, parse_destinations

CASES = [
    ("example.com", [Destination("example.com", 25, True, text="example.com")]),
    ("example.com:2525", [Destination("example.com", 2525, True, text="example.com:2525")]),
    ("[mail.example.com]", [Destination("mail.example.com", 25, False, text="[mail.example.com]")]),
    ("[192.0.2.1]:587", [Destination("192.0.2.1", 587, False, text="[192.0.2.1]:587")]),
    ("[ipv6:2001:db8::1]", [Destination("2001:db8::1", 25, False, text="[ipv6:2001:db8::1]")]),
    ("[mail.example.com]:submission",
     [Destination("mail.example.com", 587, False, text="[mail.example.com]:submission")]),
    ("a.example, [b.example]:26", [Destination("a.example", 25, True, text="a.example"),
                                   Destination("b.example", 26, False, text="[b.example]:26")]),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_smtp_destinations(text, expected):
    assert parse_destinations(text, 25) == expected


def test_without_dns_nothing_is_an_mx_lookup():
    assert not parse_destinations("example.com", 25, dns=False)[0].mx


@pytest.mark.parametrize("text, expected", [
    ("unix:/var/run/lmtp", Destination("/var/run/lmtp", 0, False, unix=True, text="unix:/var/run/lmtp")),
    ("unix:private/dovecot-lmtp",
     Destination("private/dovecot-lmtp", 0, False, unix=True, text="unix:private/dovecot-lmtp")),
    ("inet:mail.example.com:24",
     Destination("mail.example.com", 24, False, text="inet:mail.example.com:24")),
    ("inet:mail.example.com", Destination("mail.example.com", 24, False, text="inet:mail.example.com")),
    ("mail.example.com", Destination("mail.example.com", 24, False, text="mail.example.com")),
])
def test_lmtp_destinations_never_look_up_mx(text, expected):
    assert parse_destinations(text, 24, lmtp=True) == [expected]


@pytest.mark.parametrize("text", ["", "[unclosed", "[a]x", "unix:"])
def test_bad_destinations(text):
    with pytest.raises(NextHopError):
        parse_destinations(text, 25)
