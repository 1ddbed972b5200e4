"""pymaster.header_addr: the address headers, and changing addresses in place."""

from __future__ import annotations

import pytest

from pymaster.header_addr import ADDRESS_HEADERS, RECIPIENT_HEADERS, SENDER_HEADERS, \
    refold, rewrite_addresses

MAP = {"old@example.com": "new@example.net", "x@y": "a much longer address than x@y.example"}


def mapped(address: str) -> str:
    return MAP.get(address, address)


def test_postfix_sender_and_recipient_headers():
    assert {"from", "sender", "reply-to", "errors-to", "return-receipt-to",
            "resent-from", "resent-sender"} <= SENDER_HEADERS
    assert {"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc",
            "apparently-to"} <= RECIPIENT_HEADERS
    assert not {"subject", "message-id", "received", "delivered-to"} & ADDRESS_HEADERS


@pytest.mark.parametrize("before, after", [
    ("To: old@example.com\n", "To: new@example.net\n"),
    ("To: Old Name <old@example.com>\n", "To: Old Name <new@example.net>\n"),
    ("To: old@example.com (a comment)\n", "To: new@example.net (a comment)\n"),
    ('To: "Doe, J." <old@example.com>, other@example.org\n',
     'To: "Doe, J." <new@example.net>, other@example.org\n'),
    ("To: list: old@example.com, old@example.com;\n",
     "To: list: new@example.net, new@example.net;\n"),
    ("To: <@relay.example:old@example.com>\n", "To: <@relay.example:new@example.net>\n"),
    ("To: old\n\t@example.com\n", "To: new@example.net\n"),
])
def test_only_addresses_change(before, after):
    assert rewrite_addresses(before, mapped) == after


def test_no_change_returns_the_same_object():
    text = "To:  someone@example.org,\n   undisclosed-recipients:;\n"
    assert rewrite_addresses(text, mapped) is text


def test_null_address_is_not_looked_up():
    asked = []
    rewrite_addresses("Return-Path: <>\n", lambda a: asked.append(a) or a)
    assert asked == []


def test_quoting_of_the_new_address():
    out = rewrite_addresses("From: old@example.com\n", lambda a: "joe user@example.net")
    assert out == 'From: "joe user"@example.net\n'


def test_failure_of_the_rewrite_is_the_callers():
    def broken(address):
        raise LookupError("table down")
    with pytest.raises(LookupError):
        rewrite_addresses("From: old@example.com\n", broken)


def test_refold_only_lines_that_are_too_long():
    long_line = "To: " + ", ".join(f"user{i}@example.com" for i in range(8))
    out = refold(long_line + "\n\tshort@example.com\n")
    lines = out.rstrip("\n").split("\n")
    assert all(len(line) <= 78 for line in lines)
    assert lines[-1] == "\tshort@example.com"
    assert out.split() == long_line.split() + ["short@example.com"]     # nothing lost
