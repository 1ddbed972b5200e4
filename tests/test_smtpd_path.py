"""services/smtpd/command.py parse_path: its shortcut for the simple paths
nearly every client sends gives addr.parse_path's answer, error or not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pymaster.mail import addr
from services.smtpd import command
from tests.fuzzing import fuzz_settings


SIMPLE_FRAGMENTS = ["<", ">", "<>", "@", ".", "a", "Z9", "x.y", "-", "_", "+tag", "=",
                    "!#$%&'*/?^`{|}~", "example.com", "1.2.3.4", "a-", "-b", "..", " ", "\t",
                    " SIZE=10", " BODY=8BITMIME", "[1.2.3.4]", "\"q\"", "\\", "(c)", ",", ":",
                    ";", "\u00e9", "\r", "x" * 64]


def _both(text: str, strict: bool):
    """_both - what command.parse_path and addr.parse_path say about TEXT."""
    answers = []
    for parse in (command.parse_path, lambda t, strict: (lambda p: (p.address, p.words))(
            addr.parse_path(t, strict=strict))):
        try:
            answers.append(parse(text, strict))
        except addr.AddressError:
            answers.append("error")
    return answers


@fuzz_settings(2000)
@given(st.lists(st.sampled_from(SIMPLE_FRAGMENTS), max_size=8).map("".join), st.booleans())
def test_parse_path_agrees_with_the_library(text, strict):
    ours, library = _both(text, strict)
    assert ours == library, text


@pytest.mark.parametrize("text", [
    "<bench@example.com>", "<>", "<a.b+c@mx-1.example> SIZE=10  BODY=8BITMIME",
    "<a@1.2.3.4>", "<a@-x.example>", "<a@x_y.example>", "<a@" + "l" * 64 + ".example>",
    "<a@b>x", "<a@b> ", " <a@b>\tRET=HDRS",
])
def test_parse_path_simple_cases(text):
    for strict in (False, True):
        ours, library = _both(text, strict)
        assert ours == library, text
