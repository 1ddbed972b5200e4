"""services.smtp.content and mime7bit: the content on the wire, 8bit -> quoted-printable."""

import pytest

from services.smtp.content import WireEncoder, any_8bit, is_8bit, to_wire, wire_chunks
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


# -- streaming: the wire form of content that arrives in chunks -----------------

def whole_message_wire(content: bytes, limit: int = 998) -> bytes:
    """whole_message_wire - the reference: the conversion done on the whole
    message at once (CRLF -> LF, a final newline, fold, dot-stuff, CRLF)."""
    content = content.replace(b"\r\n", b"\n")
    if content and not content.endswith(b"\n"):
        content += b"\n"
    lines = []
    for line in content.split(b"\n"):
        while limit > 0 and len(line) > limit:
            lines.append(line[:limit])
            line = b" " + line[limit:]
        lines.append(line)
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b".\r\n"


def split_every(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[pos:pos + size])
        pos += size
        i += 1
    return chunks


TRICKY = (b"Subject: t\r\n\r\n.dot\n..two\n.\n" + b"x" * 998 + b"\n" + b"y" * 999 + b"\n"
          + b"." + b"z" * 2500 + b"\nlone\rcr\r\r\nend\r")


@pytest.mark.parametrize("sizes", [[1], [2, 3], [7], [64], [997, 1, 2], [100000]])
@pytest.mark.parametrize("limit", [998, 10, 0])
def test_any_chunking_gives_the_whole_message_form(sizes, limit):
    chunks = split_every(TRICKY, sizes)
    assert b"".join(wire_chunks(chunks, limit)) == whole_message_wire(TRICKY, limit)


@pytest.mark.parametrize("content", [b"", b"\n", b".", b"no newline", b"a\r", b"\r\n.\r\n"])
def test_edge_contents(content):
    assert to_wire(content) == whole_message_wire(content)
    assert b"".join(wire_chunks([bytes([b]) for b in content])) == whole_message_wire(content)


def test_a_line_of_exactly_the_limit_is_not_folded():
    assert to_wire(b"x" * 998 + b"\n") == b"x" * 998 + b"\r\n.\r\n"
    assert to_wire(b"." + b"x" * 997 + b"\n") == b".." + b"x" * 997 + b"\r\n.\r\n"


def test_output_stays_in_step_with_the_input():
    # Nothing is held back beyond a CR that may start a CRLF: memory is one chunk.
    encoder = WireEncoder()
    assert encoder.feed(b"one\ntwo") == b"one\r\ntwo"
    assert encoder.feed(b" more\r") == b" more"
    assert encoder.feed(b"\nthree\n") == b"\r\nthree\r\n"
    assert encoder.finish() == b".\r\n"


def test_8bit_detection_over_chunks():
    assert any_8bit([b"plain", "ü".encode()]) and not any_8bit([b"plain", b"text"])


# -- hostile content (security review) ------------------------------------------------
@pytest.mark.parametrize("sizes", [[1], [2, 3], [100000]])
def test_a_dot_after_a_bare_cr_is_doubled_so_cr_dot_cr_never_ends_the_data(sizes):
    # Some servers take CR.CR as the end of DATA; what follows would be read
    # as SMTP commands (smuggling).
    content = b"a\r.\r\nMAIL FROM:<x@y>\r\n\r.\rend\n"
    wire = b"".join(wire_chunks(split_every(content, sizes)))
    assert wire == b"a\r..\r\nMAIL FROM:<x@y>\r\n\r..\rend\r\n.\r\n"
    assert b"\r.\r" not in wire


@pytest.mark.parametrize("sizes", [[1], [5], [100000]])
def test_bare_lf_dot_lines_are_stuffed_however_the_content_is_cut(sizes):
    content = b"x\n.\n.\r\n\n.\nQUIT\n"
    wire = b"".join(wire_chunks(split_every(content, sizes)))
    assert wire == b"x\r\n..\r\n..\r\n\r\n..\r\nQUIT\r\n.\r\n"
    assert wire.index(b"\r\n.\r\n") == len(wire) - 5


def test_nul_bytes_and_8bit_go_through_unchanged():
    assert to_wire(b"a\x00b\n\x00.\n\xff\n") == b"a\x00b\r\n\x00.\r\n\xff\r\n.\r\n"


def test_many_lines_just_under_the_limit_and_one_huge_line_convert_correctly():
    # These once took time quadratic in the line length (a regular expression
    # search per chunk, a copy per fold); the result is what counts here.
    near = (b"x" * 997 + b"\n") * 2000
    assert to_wire(near) == whole_message_wire(near)
    huge = b"." + b"y" * 3_000_000 + b"\n"
    assert b"".join(wire_chunks(split_every(huge, [65536]))) == whole_message_wire(huge)
