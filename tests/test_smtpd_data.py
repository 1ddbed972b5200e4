"""The DATA scanner and BDAT converter: where a message ends, and what is kept."""

import pytest

from services.smtpd.data import ChunkConverter, DataScanner, PARTIAL_LINE_FLUSH


def scan(data: bytes, size_limit: int = 0, step: int = 0) -> tuple[DataScanner, int]:
    """Feed DATA bytes as a session would: whole, or STEP bytes at a time."""
    s = DataScanner(size_limit)
    if not step:
        return s, s.feed(data)
    used = 0
    for i in range(0, len(data), step):
        if s.done:
            break
        used += s.feed(data[i:i + step])
    return s, used


class TestEndOfData:
    def test_crlf_dot_crlf_ends_the_message(self):
        s, used = scan(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert s.done and used == len(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert bytes(s.content) == b"Subject: x\n\nbody\n"

    def test_dot_right_after_data_command_is_an_empty_message(self):
        s, _ = scan(b".\r\n")
        assert s.done and bytes(s.content) == b""

    def test_bytes_after_the_end_are_left_for_the_next_commands(self):
        data = b"a\r\n.\r\nQUIT\r\n"
        s, used = scan(data)
        assert s.done and data[used:] == b"QUIT\r\n"

    # Smuggling: none of these ends the message, so a second message hidden
    # after them stays part of the first one.
    @pytest.mark.parametrize("fake_end", [
        b"\n.\n", b"\r.\r", b"\r\n.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\r.\n",
        b"\n.\r", b"\r\n.\r\r\n", b"\r\n .\r\n", b"\r\n\x00.\r\n",
    ])
    def test_smuggling_variants_never_end_the_message(self, fake_end):
        data = b"first" + fake_end + b"MAIL FROM:<evil@example>\r\nsecond\r\n.\r\n"
        for step in (0, 1, 3):
            s, used = scan(data, step=step)
            assert s.done and used == len(data), (fake_end, step)
            assert b"MAIL FROM:<evil@example>\n" in bytes(s.content)
            assert bytes(s.content).endswith(b"second\n")

    def test_split_at_every_byte_gives_the_same_result(self):
        data = b"..dot\r\nline\r\n.\r\n.more\r\n.\r\n"
        whole, _ = scan(data)
        parts, _ = scan(data, step=1)
        assert bytes(whole.content) == bytes(parts.content) == b".dot\nline\n"


class TestLocalPipe:
    """sendmail -bs: a script's LF-only lines; a lone dot ends DATA."""

    @pytest.mark.parametrize("step", [0, 1, 3])
    def test_lf_dot_lf_ends_the_message(self, step):
        data = b"Subject: x\n\n..dot\nbody\n.\nQUIT\n"
        s = DataScanner(0, dot_lf_ends=True)
        used = 0
        for i in range(0, len(data), step or len(data)):
            if s.done:
                break
            used += s.feed(data[i:i + (step or len(data))])
        assert s.done and data[used:] == b"QUIT\n"
        assert bytes(s.content) == b"Subject: x\n\n.dot\nbody\n"

    def test_network_default_still_needs_crlf(self):
        s, _ = scan(b"body\n.\nQUIT\n")
        assert not s.done


class TestContent:
    def test_dot_unstuffing(self):
        s, _ = scan(b"..\r\n..x\r\n.y\r\n.\r\n")
        assert bytes(s.content) == b".\n.x\ny\n"

    @pytest.mark.parametrize("data, content, bare_lf", [
        # The lines before the first leading dot are taken at once, the rest
        # line by line: the result is the same as line by line throughout.
        (b"a\r\nb\r\n..c\r\nd\r\n.\r\n", b"a\nb\n.c\nd\n", False),
        (b"a\nb\r\n..c\r\n.\r\n", b"a\nb\n.c\n", True),
        (b"a\r\nb\r\n..c\nd\r\n.\r\n", b"a\nb\n.c\nd\n", True),
        (b"a\r\n.\nb\r\n.\r\n", b"a\n\nb\n", True),
    ])
    def test_lines_before_and_after_a_leading_dot(self, data, content, bare_lf):
        for step in (0, 1, 4):
            s, used = scan(data, step=step)
            assert (s.done, used, bytes(s.content), s.bare_lf) == \
                (True, len(data), content, bare_lf), step

    def test_bare_lf_is_a_line_end_and_is_noted(self):
        s, _ = scan(b"a\nb\r\n.\r\n")
        assert bytes(s.content) == b"a\nb\n" and s.bare_lf

    def test_crlf_only_content_has_no_bare_lf(self):
        s, _ = scan(b"a\r\nb\r\n.\r\n")
        assert not s.bare_lf

    def test_bare_cr_is_kept_as_content(self):
        s, _ = scan(b"a\rb\r\n.\r\n")
        assert bytes(s.content) == b"a\rb\n"

    def test_long_lines_are_passed_on_in_pieces(self):
        line = b"x" * (PARTIAL_LINE_FLUSH * 3)
        s, _ = scan(b".lead" + line + b"\r\n.\r\n", step=1000)
        assert bytes(s.content) == b"lead" + line + b"\n"

    def test_size_limit_counts_but_drops(self):
        s, used = scan(b"x" * 100 + b"\r\n.\r\n", size_limit=50)
        assert s.done and s.too_big and bytes(s.content) == b""
        assert used == 105

    def test_size_exactly_at_the_limit_passes(self):
        s, _ = scan(b"1234\r\n.\r\n", size_limit=5)
        assert not s.too_big and bytes(s.content) == b"1234\n"


class TestChunks:
    def test_crlf_becomes_lf_across_chunk_boundaries(self):
        c = ChunkConverter()
        for chunk in (b"a\r", b"\nb\r\n", b".\r\n"):
            c.feed(chunk)
        c.finish()
        assert bytes(c.content) == b"a\nb\n.\n"

    def test_no_dot_unstuffing_in_bdat(self):
        c = ChunkConverter()
        c.feed(b"..x\r\n")
        c.finish()
        assert bytes(c.content) == b"..x\n"

    def test_last_line_gets_a_newline(self):
        c = ChunkConverter()
        c.feed(b"a\r\nb")
        c.finish()
        assert bytes(c.content) == b"a\nb\n"

    def test_size_limit(self):
        c = ChunkConverter(10)
        c.feed(b"x" * 11)
        assert c.too_big
