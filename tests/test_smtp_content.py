"""services.smtp.content and mime7bit: the content on the wire, 8bit -> quoted-printable."""

from services.smtp.content import is_8bit, to_wire
from services.smtp.mime7bit import downgrade


def test_wire_form_has_crlf_dot_stuffing_and_the_final_dot():
    assert to_wire(b"Subject: x\n\n.one\n..two\nthree") == \
        b"Subject: x\r\n\r\n..one\r\n...two\r\nthree\r\n.\r\n"


def test_long_lines_are_broken_with_crlf_space():
    wire = to_wire(b"x" * 10 + b"\n", line_limit=4)
    assert wire == b"xxxx\r\n xxx\r\n xxx\r\n.\r\n"


def test_a_lone_dot_line_is_stuffed():
    assert to_wire(b"a\n.\nb\n") == b"a\r\n..\r\nb\r\n.\r\n"


def test_8bit_detection():
    assert is_8bit("grüß".encode()) and not is_8bit(b"plain")


def test_a_plain_8bit_message_becomes_quoted_printable():
    out = downgrade("Subject: x\n\nHällo\n".encode())
    assert out == b"Subject: x\nContent-Transfer-Encoding: quoted-printable\n\nH=C3=A4llo\n"


def test_7bit_content_is_left_alone():
    content = b"Subject: x\n\nplain = text\n"
    assert downgrade(content) is content


def test_only_the_8bit_parts_of_a_multipart_change():
    message = (b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="B"\n\n'
               b"preamble\n--B\nContent-Type: text/plain; charset=utf-8\n"
               b"Content-Transfer-Encoding: 8bit\n\n" + "grüß\n".encode() +
               b"--B\nContent-Type: text/plain\n\nascii = same\n--B--\n")
    out = downgrade(message)
    assert b"Content-Transfer-Encoding: 8bit" not in out
    assert b"Content-Transfer-Encoding: quoted-printable\n\ngr=C3=BC=C3=9F\n--B\n" in out
    assert b"\n\nascii = same\n--B--\n" in out
    assert not is_8bit(out)


def test_base64_parts_are_not_touched():
    message = b"Content-Transfer-Encoding: base64\n\n" + "ü".encode() + b"\n"
    assert downgrade(message) == message
