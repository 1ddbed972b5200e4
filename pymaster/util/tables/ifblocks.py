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
    parse_blocks(lines, where, parse_rule, warn, stray_endif) -> list of rules
        WHERE names the map in warnings ("cidr map /etc/postfix/x");
        PARSE_RULE(text, note) returns a rule, an Endif, None (the line is
        skipped and NOTE has said why), or a reason (str): the line is then
        skipped with "REASON: skipping this rule". NOTE(text) warns with
        WHERE and the line number. STRAY_ENDIF is the table's warning for
        an ENDIF without IF (which is then ignored)
    Endif(extra)    an ENDIF line; EXTRA, when set, is warned about when the
                    ENDIF closes a block (regexp's "ignoring extra text")
    first_match(rules, test) -> (rule, detail) | None
        TEST(rule) returns (hit, detail); DETAIL is what the caller needs
        to build the result (a regex match object, or None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from pymaster.util.tables.source import logical_lines


@dataclass
class Endif:
    """An ENDIF line, with the warning its extra text earns, if any."""

    extra: str | None = None


def parse_blocks(lines: Iterable[str], where: str,
                 parse_rule: Callable[[str, Callable[[str], None]], Any],
                 warn: Callable[[str], None],
                 stray_endif: str = "ignoring ENDIF without matching IF") -> list:
    """parse_blocks - the rules of a pattern table file; bad lines warned and skipped."""
    rules: list = []
    open_ifs: list[tuple[int, int]] = []       # (index of the IF rule, its line)
    for lineno, text in logical_lines(lines):
        def note(message: str, lineno: int = lineno) -> None:
            warn(f"{where}, line {lineno}: {message}")

        rule = parse_rule(text.strip(), note)
        if rule is None:
            continue
        if isinstance(rule, str):
            note(f"{rule}: skipping this rule")
        elif isinstance(rule, Endif):
            if not open_ifs:
                note(stray_endif)
                continue
            if rule.extra:
                note(rule.extra)
            rules[open_ifs.pop()[0]].skip_to = len(rules)
        else:
            if rule.is_if:
                open_ifs.append((len(rules), lineno))
            rules.append(rule)
    for index, lineno in reversed(open_ifs):     # innermost first, as Postfix
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
