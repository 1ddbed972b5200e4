"""pymaster.mail.addr: SMTP paths, header address lists, quoting, local part/domain."""

import pytest

from pymaster.mail.addr import (AddressError, Mailbox, external, format_mailbox, internal,
                           is_domain_literal, is_valid_hostname, lower_domain,
                           parse_address_list, parse_path, quote_local_part,
                           split_address, unquote_local_part)


@pytest.mark.parametrize("addr, expected", [
    ("user@example.com", ("user", "example.com")),
    ("user", ("user", "")),
    ("", ("", "")),
    ("user@other@ours", ("user@other", "ours")),
    ("a b@example.com", ("a b", "example.com")),
    ("@example.com", ("", "example.com")),
])
def test_split_address_at_the_rightmost_at(addr, expected):
    assert split_address(addr) == expected


def test_lower_domain_keeps_local_part_case():
    assert lower_domain("John.Doe@EXAMPLE.Com") == "John.Doe@example.com"
    assert lower_domain("John") == "John"


@pytest.mark.parametrize("local, quoted", [
    ("user", "user"),
    ("first.last", "first.last"),
    ("user+tag", "user+tag"),
    ("john doe", '"john doe"'),
    ("a@b", '"a@b"'),
    ('say"hi', '"say\\"hi"'),
    (".leading", '".leading"'),
    ("a..b", '"a..b"'),
    ("", '""'),
])
def test_quote_local_part_only_when_needed(local, quoted):
    assert quote_local_part(local) == quoted
    assert unquote_local_part(quoted) == local


@pytest.mark.parametrize("ext, intern", [
    ('"john doe"@example.com', "john doe@example.com"),
    ('"user@other"@ours', "user@other@ours"),
    ("plain@example.com", "plain@example.com"),
    ("", ""),
])
def test_internal_and_external_forms_round_trip(ext, intern):
    assert internal(ext) == intern
    assert external(intern) == ext


@pytest.mark.parametrize("text, address, params", [
    ("<user@example.com>", "user@example.com", {}),
    ("<>", "", {}),
    ("<> SIZE=100", "", {"SIZE": "100"}),
    ("<a@b> SIZE=10 body=8BITMIME SMTPUTF8", "a@b",
     {"SIZE": "10", "BODY": "8BITMIME", "SMTPUTF8": None}),
    ("<@relay1,@relay2:user@example.com>", "user@example.com", {}),
    ('<"john doe"@example.com>', "john doe@example.com", {}),
    ('<"a>b"@example.com>', "a>b@example.com", {}),
    ("  <user@example.com>  ", "user@example.com", {}),
    ("user@example.com", "user@example.com", {}),          # lenient: no brackets
    ("user@example.com SIZE=5", "user@example.com", {"SIZE": "5"}),
    ("<NOTIFY=x@y> ORCPT=rfc822;a@b", "NOTIFY=x@y", {"ORCPT": "rfc822;a@b"}),
])
def test_parse_path(text, address, params):
    path = parse_path(text)
    assert path.address == address
    assert path.params == params


@pytest.mark.parametrize("text", [
    "<user@example.com",          # no closing bracket
    "<user@example.com>junk",     # garbage glued to the path
    "",
    '<"unterminated@example.com>',
    "<a@[1.2.3.4.5]>",            # not an address literal
    "<a@[IPv6:1.2.3.4]>",
    "<user@>",                    # "@" without a domain
    "<a@b c@d>",                  # two addresses
    "<a,b@c>",
    "<a@b..c>", "<a@-b>", "<a@1.2.3.4>",    # not host names
    "<a@" + "b" * 64 + ".com>",   # a label past 63 characters
    "<a@b)>",
])
def test_parse_path_rejects_broken_syntax(text):
    with pytest.raises(AddressError):
        parse_path(text)


@pytest.mark.parametrize("text, address", [
    ("<<a@b>>", "a@b"),            # Postfix's smtpd reads one pair of brackets too many
    ("<a@b>>", "a@b"),
    ("x<a@b>", "a@b"),             # a display name
    ("<@a,@b:u@d>", "u@d"),        # a source route
    ("y:<x@o.example>;", "x@o.example"),    # a group
    ("<a(comment)@b>", "a@b"),
    ("<a@o.example,>", "a@o.example"),
    ("<a@[01.2.3.4]>", "a@[01.2.3.4]"),
    ("<a@b.>", "a@b."),
    ("<@b>", "@b"),
])
def test_parse_path_as_postfix_smtpd_reads_it(text, address):
    assert parse_path(text).address == address


def test_parameters_are_kept_as_written():
    assert parse_path("<a@b> =x size=1").words == ("=x", "size=1")


@pytest.mark.parametrize("text", ["user@example.com", "<a b@c>", "<user@bad..host>",
                                  "<a(c)@b>", "<@b>", "<g:a@b;>", "<a@b,>"])
def test_strict_rfc821_envelopes(text):
    with pytest.raises(AddressError):
        parse_path(text, strict=True)


def test_strict_accepts_proper_mailboxes():
    assert parse_path('<"a b"@example.com>', strict=True).address == "a b@example.com"
    assert parse_path("<u@[192.0.2.1]>", strict=True).address == "u@[192.0.2.1]"
    assert parse_path("<>", strict=True).address == ""
    assert parse_path("<user>", strict=True).address == "user"      # as Postfix
    assert parse_path("<@a,@b:u@d>", strict=True).address == "u@d"


@pytest.mark.parametrize("value, expected", [
    ("user@example.com", [("", "user@example.com")]),
    ("John Doe <john@example.com>", [("John Doe", "john@example.com")]),
    ('"Doe, John" <john@example.com>, jane@example.org',
     [("Doe, John", "john@example.com"), ("", "jane@example.org")]),
    ('"x y"@example.com', [("", "x y@example.com")]),
    ("jane@example.org (Jane Roe)", [("Jane Roe", "jane@example.org")]),
    ("undisclosed-recipients:;", []),
    ("friends: a@x.example, b@y.example;, c@z.example",
     [("", "a@x.example"), ("", "b@y.example"), ("", "c@z.example")]),
    ("<@route.example:user@example.com>", [("", "user@example.com")]),
    ("bare", [("", "bare")]),
    ("", []),
    (",,,", []),
])
def test_parse_address_list(value, expected):
    assert [(m.name, m.address) for m in parse_address_list(value)] == expected


def test_group_members_know_their_group():
    boxes = parse_address_list("team: a@example.com;")
    assert boxes[0].group == "team"


def test_format_mailbox_quotes_what_needs_it():
    assert format_mailbox(Mailbox("", "user@example.com")) == "user@example.com"
    assert format_mailbox(Mailbox("John Doe", "john doe@example.com")) == \
        'John Doe <"john doe"@example.com>'
    assert format_mailbox(Mailbox("Doe, John", "j@example.com")) == '"Doe, John" <j@example.com>'


@pytest.mark.parametrize("name, valid", [
    ("example.com", True), ("a-b.example", True), ("localhost", True),
    ("-bad.example", False), ("bad..example", False), ("", False),
    ("under_score.example", True), ("x" * 64 + ".example", False),
])
def test_is_valid_hostname(name, valid):
    assert is_valid_hostname(name) is valid


@pytest.mark.parametrize("name, literal", [
    ("[127.0.0.1]", True), ("[IPv6:::1]", True), ("[999.1.1.1]", False),
    ("127.0.0.1", False), ("[example.com]", False),
])
def test_is_domain_literal(name, literal):
    assert is_domain_literal(name) is literal
