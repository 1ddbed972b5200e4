"""The `if … endif` blocks of ordered pattern tables (cidr, regexp, pcre).

regexp_table(5), pcre_table(5) and cidr_table(5) share one shape: rules
tried in order, first match wins, and `if PATTERN` … `endif` lines that
make the rules between them count only when the key matches PATTERN. Blocks
nest. A stray ENDIF and an IF left open are warned about with file and line;
the open IF then reaches to the end of the file, as Postfix treats it.

A rule is any object with `is_if: bool` and `skip_to: int`; parsing sets
skip_to of an IF rule to the index just after its block, so lookups jump
over a block whose IF does not match without scanning it.

Interface:
    parse_blocks(lines, where, parse_rule, warn) -> list of rules
        WHERE names the map in warnings ("cidr map /etc/postfix/x");
        PARSE_RULE(text) returns a rule, or a reason (str) to skip the line
    first_match(rules, test) -> (rule, detail) | None
        TEST(rule) returns (hit, detail); DETAIL is what the caller needs
        to build the result (a regex match object, or None)
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable

from pymaster.util.tables.source import logical_lines

_ENDIF = re.compile(r"endif", re.I)


def parse_blocks(lines: Iterable[str], where: str, parse_rule: Callable[[str], Any],
                 warn: Callable[[str], None]) -> list:
    """parse_blocks - the rules of a pattern table file; bad lines warned and skipped."""
    rules: list = []
    open_ifs: list[tuple[int, int]] = []       # (index of the IF rule, its line)
    for lineno, text in logical_lines(lines):
        text = text.strip()
        if _ENDIF.fullmatch(text):
            if open_ifs:
                rules[open_ifs.pop()[0]].skip_to = len(rules)
            else:
                warn(f"{where}, line {lineno}: ignoring ENDIF without matching IF")
            continue
        rule = parse_rule(text)
        if isinstance(rule, str):
            warn(f"{where}, line {lineno}: {rule}: skipping this rule")
            continue
        if rule.is_if:
            open_ifs.append((len(rules), lineno))
        rules.append(rule)
    for index, lineno in open_ifs:
        warn(f"{where}, line {lineno}: IF has no matching ENDIF")
        rules[index].skip_to = len(rules)
    return rules


def first_match(rules: list, test: Callable[[Any], tuple[bool, Any]]) -> tuple[Any, Any] | None:
    """first_match - the first rule outside failed IF blocks that TEST accepts."""
    i, n = 0, len(rules)
    while i < n:
        rule = rules[i]
        hit, detail = test(rule)
        if hit:
            if not rule.is_if:
                return rule, detail
            i += 1
        else:
            i = rule.skip_to if rule.is_if else i + 1
    return None
