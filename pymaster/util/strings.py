"""Splitting configuration text: Postfix's list syntax, with no knowledge of mail.

Interface:
    split_list(value) -> list[str]   "a, b c {d, e}" -> ["a", "b", "c", "{d, e}"]
"""

from __future__ import annotations


def split_list(value: str) -> list[str]:
    """split_list - a comma and/or white space separated list.

    Braced groups such as `inline:{ a=b, c=d }` stay one element."""
    items: list[str] = []
    buf: list[str] = []
    depth = 0
    for c in value:
        if c == "{":
            depth += 1
        elif c == "}":
            depth = max(0, depth - 1)
        if depth == 0 and (c == "," or c.isspace()):
            if buf:
                items.append("".join(buf))
                buf = []
            continue
        buf.append(c)
    if buf:
        items.append("".join(buf))
    return items
