"""aliases(5): the alias file format, shared by postalias and local delivery.

An alias file holds `name: value, value, ...` entries. A line that starts
with white space continues the previous entry; blank lines and `#` comment
lines are skipped. A name may be quoted (`"my name": ...`). Each value is
one of:

    user, user@domain     an address (delivered again)
    "|command args"       a command run by the local delivery agent
    /file/name            a file appended to
    :include:/file/name   more values read from a file

Values in double quotes may hold commas and white space. postalias stores a
value normalised to `item, item` form; the local delivery agent splits it
again with `split_values()` and classifies each item with `classify()`.
`owner-NAME` aliases name the owner of the list NAME (errors go there); this
module only names them (`owner_alias`).

Interface:
    parse_aliases(lines, path, warn) -> iterator of (lineno, name, value)
    raw_items(value) -> list[str]             comma-separated items, quotes kept
    split_values(value) -> list[str]          items with their quotes removed
    normalise_value(value) -> str              "a, b" form as postalias stores it
    classify(item) -> (kind, text)             kind: address|command|file|include
    read_include(path) -> list[str]            the items of an :include: file
    owner_alias(name) -> str
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from pymaster.util.tables.source import logical_lines


def _split_name(text: str) -> tuple[str, str] | None:
    """_split_name - (name, value) of "name: value", honouring a quoted name."""
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1:].lstrip()
        if not rest.startswith(":"):
            return None
        return name, rest[1:].strip()
    name, colon, value = text.partition(":")
    if not colon:
        return None
    return name.strip(), value.strip()


def parse_aliases(lines: Iterable[str], path: str,
                  warn: Callable[[str], None]) -> Iterator[tuple[int, str, str]]:
    """parse_aliases - (lineno, name, value) per entry; bad lines warned and skipped."""
    for lineno, text in logical_lines(lines):
        pair = _split_name(text.strip())
        if pair is None or not pair[0] or not pair[1]:
            warn(f"{path}, line {lineno}: need name:value pair")
            continue
        yield lineno, pair[0], normalise_value(pair[1])


def raw_items(value: str) -> list[str]:
    """raw_items - the comma-separated items of VALUE, quotes kept."""
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    escaped = False
    for c in value:
        if escaped:
            buf.append(c)
            escaped = False
            continue
        if c == "\\" and quoted:
            escaped = True
            buf.append(c)
            continue
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            items.append("".join(buf).strip())
            buf = []
            continue
        buf.append(c)
    items.append("".join(buf).strip())
    return [" ".join(item.split()) if not item.startswith('"') else item
            for item in items if item]


def normalise_value(value: str) -> str:
    """normalise_value - VALUE as "item, item", the form postalias stores."""
    return ", ".join(raw_items(value))


def _unquote(item: str) -> str:
    if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
        return item[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return item


def split_values(value: str) -> list[str]:
    """split_values - the items of an alias value, with surrounding quotes removed."""
    return [_unquote(item) for item in raw_items(value)]


def classify(item: str) -> tuple[str, str]:
    """classify - ("command"|"file"|"include"|"address", text) for one alias item."""
    if item.startswith("|"):
        return "command", item[1:].strip()
    if item[:9].lower() == ":include:":
        return "include", item[9:].strip()
    if item.startswith("/"):
        return "file", item
    return "address", item


def read_include(path: str) -> list[str]:
    """read_include - the items of an :include: file (comma or line separated)."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        items: list[str] = []
        for _, text in logical_lines(f):
            items.extend(split_values(text))
        return items


def owner_alias(name: str) -> str:
    """owner_alias - the alias that owns the list NAME (owner-NAME)."""
    return "owner-" + name
