"""pymaster.mail.mime: which body lines are part headers, attached-message headers or text."""

import pytest

from pymaster.mail.mime import (BODY_8BIT_ERROR, DOMAIN_ERROR, HEADER_8BIT_ERROR, NESTING_ERROR,
                           MimeWalker, content_encoding, content_type, is_mime_header,
                           split_lines, worst_error)
from pymaster.mail.config import default_config

TOP = ["Subject: x\n", 'Content-Type: multipart/mixed;\n\tboundary="BB"\n']

BODY = """preamble
--BB
Content-Type: text/plain
X-Part: one

hello
--BB
Content-Type: message/rfc822

Subject: inner
From: a@b

inner body
--BB--
epilogue
"""


def make_walker(**options) -> MimeWalker:
    """make_walker - a MimeWalker with the table's limits unless OPTIONS say otherwise."""
    cfg = default_config()
    limits = {"nesting_limit": cfg.int("mime_nesting_limit"),
              "boundary_limit": cfg.int("mime_boundary_length_limit")}
    return MimeWalker(**{**limits, **options})


def kinds(parts):
    return [(p.kind, p.context, p.text) for p in parts]


def test_every_byte_comes_back_in_order():
    parts = list(make_walker().walk(TOP, BODY))
    assert "".join(p.text for p in parts) == BODY


def test_part_headers_attached_message_headers_and_text_are_told_apart():
    got = kinds(make_walker().walk(TOP, BODY))
    assert got == [
        ("body", "", "preamble\n"),
        ("body", "", "--BB\n"),
        ("header", "multipart", "Content-Type: text/plain\n"),
        ("header", "multipart", "X-Part: one\n"),
        ("separator", "multipart", "\n"),
        ("body", "", "hello\n"),
        ("body", "", "--BB\n"),
        ("header", "multipart", "Content-Type: message/rfc822\n"),
        ("separator", "multipart", "\n"),
        ("header", "nested", "Subject: inner\n"),
        ("header", "nested", "From: a@b\n"),
        ("separator", "nested", "\n"),
        ("body", "", "inner body\n"),
        ("body", "", "--BB--\n"),
        ("body", "", "epilogue\n"),
    ]


def test_a_plain_message_is_all_body_text():
    got = kinds(make_walker().walk(["Subject: x\n"], "Content-Type: text/plain\n\nhi\n"))
    assert [k for k, _, _ in got] == ["body", "body", "body"]


def test_folded_part_headers_are_one_logical_header():
    body = "--BB\nContent-Type: text/plain;\n\tcharset=us-ascii\n\nx\n--BB--\n"
    headers = [p.text for p in make_walker().walk(TOP, body) if p.kind == "header"]
    assert headers == ["Content-Type: text/plain;\n\tcharset=us-ascii\n"]


def test_digest_parts_default_to_attached_messages():
    top = ['Content-Type: multipart/digest; boundary="D"\n']
    body = "--D\n\nSubject: one\n\nbody one\n--D--\n"
    got = kinds(make_walker().walk(top, body))
    assert ("header", "nested", "Subject: one\n") in got


def test_nested_multipart_inside_a_part():
    body = ('--BB\nContent-Type: multipart/alternative; boundary="CC"\n\n'
            "--CC\nContent-Type: text/html\n\n<p>x</p>\n--CC--\n--BB--\n")
    got = kinds(make_walker().walk(TOP, body))
    assert ("header", "multipart", "Content-Type: text/html\n") in got
    assert got[-1] == ("body", "", "--BB--\n")


def test_nesting_beyond_the_limit_is_an_error_and_plain_text():
    body = ('--BB\nContent-Type: multipart/mixed; boundary="CC"\n\n'
            "--CC\nContent-Type: text/plain\n\nx\n--CC--\n--BB--\n")
    walker = make_walker(nesting_limit=1)
    got = kinds(walker.walk(TOP, body))
    assert walker.errors == [NESTING_ERROR]
    assert ("header", "multipart", "Content-Type: text/plain\n") not in got


def test_boundaries_compare_on_their_first_characters_only():
    top = ['Content-Type: multipart/mixed; boundary="ABCDEFGH"\n']
    body = "--ABCDxyz\nX-H: 1\n\nt\n"
    got = kinds(make_walker(boundary_limit=4).walk(top, body))
    assert ("header", "multipart", "X-H: 1\n") in got


def test_content_type_and_mime_header_names():
    assert content_type(['Content-Type: Multipart/Mixed; boundary="a b"; x=y\n']) == \
        ("multipart/mixed", {"boundary": "a b", "x": "y"})
    assert content_type(["Subject: x\n"]) == ("", {})
    assert is_mime_header("Content-Disposition") and is_mime_header("MIME-Version")
    assert not is_mime_header("Subject")


# -- what the strict MIME options ask of the walk ---------------------------------

def _encodings(walker, top, body):
    return [(p.text, walker.encoding) for p in walker.walk(top, body) if p.kind == "body"]


def test_encoding_follows_each_part_and_resets_at_boundaries():
    top = ['Content-Type: multipart/mixed; boundary="BB"\n',
           "Content-Transfer-Encoding: 8bit\n"]
    body = ("pre\n--BB\nContent-Transfer-Encoding: BASE64\n\naGk=\n"
            "--BB\n\nplain\n--BB--\nepilogue\n")
    got = _encodings(make_walker(track_encoding=True), top, body)
    assert got == [("pre\n", "7bit"), ("--BB\n", "7bit"), ("aGk=\n", "base64"),
                   ("--BB\n", "base64"), ("plain\n", "7bit"), ("--BB--\n", "7bit"),
                   ("epilogue\n", "7bit")]


def test_an_unknown_encoding_counts_as_7bit():
    walker = make_walker(track_encoding=True)
    got = _encodings(walker, ["Content-Transfer-Encoding: x-uuencode\n"], "x\n")
    assert got == [("x\n", "7bit")]


@pytest.mark.parametrize("kind,encoding,bad", [
    ("multipart/mixed; boundary=B", "base64", True),
    ("multipart/mixed; boundary=B", "8bit", False),
    ("message/rfc822", "quoted-printable", True),
    ("message/rfc822", "binary", False),
    ("message/partial", "8bit", True),
    ("message/partial", "base64", False),
    ("message/global", "base64", False),
    ("text/plain", "base64", False),
])
def test_encoding_domains_of_composite_types(kind, encoding, bad):
    walker = make_walker(check_domain=True)
    top = [f"Content-Type: {kind}\n", f"Content-Transfer-Encoding: {encoding}\n"]
    list(walker.walk(top, "x\n"))
    assert walker.errors == ([DOMAIN_ERROR] if bad else [])
    assert walker.details.get(DOMAIN_ERROR) == (encoding if bad else None)


def test_domains_are_not_checked_unless_asked():
    walker = make_walker()
    list(walker.walk(["Content-Type: multipart/mixed; boundary=B\n",
                      "Content-Transfer-Encoding: base64\n"], "x\n"))
    assert walker.errors == []


def test_errors_are_noted_once_and_the_worst_named():
    walker = make_walker()
    walker.note(BODY_8BIT_ERROR, "first line")
    walker.note(BODY_8BIT_ERROR, "second line")
    walker.note(HEADER_8BIT_ERROR, "Subject: x")
    assert walker.errors == [BODY_8BIT_ERROR, HEADER_8BIT_ERROR]
    assert walker.details[BODY_8BIT_ERROR] == "first line"
    assert worst_error(walker.errors) == HEADER_8BIT_ERROR
    assert worst_error([DOMAIN_ERROR, NESTING_ERROR]) == NESTING_ERROR


def test_lines_end_at_newlines_only():
    body = "a\x0cb\u2028c\nd"
    assert split_lines(body) == ["a\x0cb\u2028c\n", "d"]
    assert [p.text for p in make_walker().walk([], body)] == ["a\x0cb\u2028c\n", "d"]
    assert content_encoding(["Content-Transfer-Encoding:  Quoted-Printable \n"]) == \
        "quoted-printable"
