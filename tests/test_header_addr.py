"""pymaster.mail.header_addr: the address headers, and changing addresses in place."""

from __future__ import annotations

import pytest

from pymaster.mail.header_addr import ADDRESS_HEADERS, RECIPIENT_HEADERS, SENDER_HEADERS, \
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


# -- pathological headers (security review) -------------------------------------------
def upper(address: str) -> str:
    return address.upper()


def test_ten_thousand_addresses_are_rewritten_up_to_the_token_limit_and_kept_whole():
    addresses = [f"u{n}@example.com" for n in range(10000)]
    text = "To: " + ", ".join(addresses) + "\n"
    out = rewrite_addresses(text, upper)
    words = out.replace("\n\t", " ").rstrip("\n")[4:].split(", ")
    assert len(words) == 10000                      # nothing lost or duplicated
    rewritten = [w for w in words if w.isupper() or w.startswith("U")]
    assert 1000 < len(rewritten) < 10000            # the limit stopped the parser
    assert words[:len(rewritten)] == [a.upper() for a in addresses[:len(rewritten)]]
    # The address the limit cut in two is left alone, not looked up half.
    assert words[len(rewritten)] == addresses[len(rewritten)]


def test_the_address_cut_by_the_token_limit_is_not_looked_up():
    seen = []
    rewrite_addresses("To: a@b.example, c@d.example\n", lambda a: seen.append(a) or a,
                      token_limit=6)
    assert seen == ["a@b.example"]


@pytest.mark.parametrize("value", [
    "(" * 5000 + "x" + ")" * 5000 + " a@b.example",      # deeply nested comments
    "(" * 20000 + "a@b.example",                          # a comment never closed
    "<" * 20000 + "a@b.example",                          # angle brackets never closed
    ">" * 20000 + " a@b.example",
    '"' * 20001 + "a@b.example",                          # a quote never closed
    "\\" * 20001 + "a@b.example",
    "g:" * 10000 + "a@b.example;",                        # groups in groups
    "a@b.example" + "\0\r" * 1000,
])
def test_hostile_values_give_a_header_back_never_an_exception(value):
    text = f"To: {value}\n"
    out = rewrite_addresses(text, upper)
    assert out.startswith("To:") and out.endswith("\n")
