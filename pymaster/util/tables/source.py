"""Reading the text form of a lookup table: what postmap and texthash read.

The format (postmap(1)): one `key whitespace value` entry per logical line;
a line that starts with white space continues the previous one; blank lines
and lines whose first non-blank character is `#` are skipped (also inside a
continued entry). Problems are reported the way postmap words them, with the
file name and line number, and the line is skipped.

Interface:
    logical_lines(lines) -> iterator of (first_lineno, text)
    parse_entries(lines, path, warn) -> iterator of (lineno, key, value)
    read_entries(path, warn, fold=True) -> dict key -> value (first wins,
        duplicates warned about)
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator


def logical_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """logical_lines - join continuation lines; skip blank and comment lines."""
    buf: str | None = None
    start = 0
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace() and buf is not None:
            buf += line
            continue
        if buf is not None:
            yield start, buf
        buf, start = line, lineno
    if buf is not None:
        yield start, buf


def parse_entries(lines: Iterable[str], path: str,
                  warn: Callable[[str], None]) -> Iterator[tuple[int, str, str]]:
    """parse_entries - (lineno, key, value) per well-formed entry of a table source."""
    for lineno, text in logical_lines(lines):
        parts = text.strip().split(None, 1)
        if len(parts) < 2:
            warn(f"{path}, line {lineno}: expected format: key whitespace value"
                 " -- ignoring this line")
            continue
        yield lineno, parts[0], parts[1].strip()


def read_entries(path: str, warn: Callable[[str], None],
                 fold: bool = True) -> dict[str, str]:
    """read_entries - the table in PATH as a dict; the first of duplicates wins."""
    table: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, key, value in parse_entries(f, path, warn):
            if fold:
                key = key.lower()
            if key in table:
                warn(f"{path}, line {lineno}: duplicate entry: \"{key}\"")
                continue
            table[key] = value
    return table
