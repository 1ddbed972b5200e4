"""regexp: and pcre: tables: patterns tried in order, first match wins.

The file syntax of regexp_table(5) and pcre_table(5):

    /pattern/flags result        result when the key matches
    !/pattern/flags result       result when the key does not match
    if /pattern/flags            the rules up to the matching `endif` are
    if !/pattern/flags           tried only when the key (does not) match
    endif

Any non-alphanumeric character may delimit the pattern. Blank lines and `#`
comments are skipped; a line starting with white space continues the
previous one. In a result, `$1`, `${1}` and `$(1)` stand for what a group
matched (empty when it matched nothing), `$$` for a dollar sign.

Flags: `i` toggles case-insensitive matching (on by default), `m` toggles
multi-line mode; regexp also knows `x` (POSIX extended syntax, always on
here), pcre knows `s` (dot matches newline), `x` (white space in the pattern
is ignored), `A` (anchored), `E`, `U` and `X`. Both are run by Python's re,
after translating the POSIX and PCRE spellings Python lacks ([:alpha:],
\\< \\>, (?<name>...), \\z ...).

A bad rule is warned about with file and line and skipped, as Postfix does.
Keys are not case-folded: the `i` flag does that job.

Interface:
    RegexpTable / PcreTable(type, name, cfg=None) .lookup(key)
    parse_rules(lines, path, dialect, warn) -> list[Rule]
    match_rules(rules, key) -> str | None
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pymaster.util import log
from pymaster.util.tables import FileTable, TableError
from pymaster.util.tables.ifblocks import first_match, parse_blocks

POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
    "lower": "a-z", "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~",
    "print": r" -~", "graph": r"!-~", "cntrl": r"\x00-\x1f\x7f", "xdigit": "0-9A-Fa-f",
    "word": r"\w",
}
_REF = re.compile(r"\$(?:(\d)|\{(\d+)\}|\((\d+)\)|(\$))")


@dataclass
class Rule:
    regex: re.Pattern
    negate: bool
    result: list = field(default_factory=list)   # str pieces and group numbers
    is_if: bool = False
    skip_to: int = 0                             # for IF: the index after its ENDIF
    anchored: bool = False


def translate(pattern: str, dialect: str) -> str:
    """translate - a POSIX ERE or PCRE pattern in Python re spelling."""
    out = re.sub(r"\[:(\w+):\]", lambda m: POSIX_CLASSES.get(m.group(1), m.group(0)), pattern)
    out = out.replace(r"\<", r"\b").replace(r"\>", r"\b")
    if dialect == "pcre":
        out = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", out)
        out = re.sub(r"\(\?'(\w+)'", r"(?P<\1>", out)
        out = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", out)
        out = re.sub(r"(?<!\\)((?:\\\\)*)\\h", r"\1[ \\t]", out)
    return out


def _split_pattern(text: str) -> tuple[str, str, str] | None:
    """_split_pattern - (pattern, flags, rest) of "/pattern/flags rest", or None."""
    delim = text[0]
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            i += 2
            continue
        if c == delim:
            break
        i += 1
    else:
        return None
    pattern = text[1:i]
    rest = text[i + 1:]
    m = re.match(r"\S*", rest)
    assert m is not None  # \S* matches the empty string
    return pattern, m.group(0), rest[m.end():].strip()


def _compile_result(text: str, ngroups: int) -> list | str:
    """_compile_result - the result as literal pieces and group numbers, or an error."""
    parts: list = []
    pos = 0
    for m in _REF.finditer(text):
        parts.append(text[pos:m.start()])
        if m.group(4):
            parts.append("$")
        else:
            n = int(m.group(1) or m.group(2) or m.group(3))
            if n > ngroups:
                return f"out of range replacement index \"{n}\""
            parts.append(n)
        pos = m.end()
    parts.append(text[pos:])
    return [p for p in parts if p != ""]


def _flags(flags: str, dialect: str) -> tuple[int, bool] | str:
    """_flags - (re flags, anchored) for the FLAGS letters, or an error text."""
    ignore_case, multiline, dotall, verbose, anchored = \
        True, False, dialect == "regexp", False, False
    for c in flags:
        if c == "i":
            ignore_case = not ignore_case
        elif c == "m":
            multiline = not multiline
            if dialect == "regexp":
                dotall = not multiline
        elif c == "x" and dialect == "regexp":
            pass
        elif dialect == "pcre" and c == "s":
            dotall = not dotall
        elif dialect == "pcre" and c == "x":
            verbose = not verbose
        elif dialect == "pcre" and c == "A":
            anchored = True
        elif dialect == "pcre" and c in "EUX":
            pass
        else:
            return f"unknown regexp option \"{c}\""
    value = (re.I if ignore_case else 0) | (re.M if multiline else 0) | \
        (re.S if dotall else 0) | (re.X if verbose else 0)
    return value, anchored


def _parse_rule(text: str, dialect: str) -> Rule | str:
    """_parse_rule - one rule line ("/re/flags result" or "if /re/"), or an error."""
    is_if = False
    if re.match(r"if\s", text, re.I):
        is_if, text = True, text[2:].strip()
    negate = text.startswith("!")
    if negate:
        text = text[1:].lstrip()
    if not text or text[0].isalnum() or text[0].isspace():
        return "ignoring unrecognized request"
    split = _split_pattern(text)
    if split is None:
        return "missing closing delimiter"
    pattern, flag_text, result = split
    flags = _flags(flag_text, dialect)
    if isinstance(flags, str):
        return flags
    try:
        regex = re.compile(translate(pattern, dialect), flags[0])
    except re.error as e:
        return f"error in regular expression \"{pattern}\": {e}"
    rule = Rule(regex, negate, is_if=is_if, anchored=flags[1])
    if is_if:
        return rule if not result else "garbage after IF pattern"
    if not result:
        return "no replacement text"
    compiled = _compile_result(result, regex.groups)
    if isinstance(compiled, str):
        return compiled
    if negate and any(isinstance(p, int) for p in compiled):
        return "$number found in negative match replacement text"
    rule.result = compiled
    return rule


def parse_rules(lines: Iterable[str], path: str, dialect: str,
                warn: Callable[[str], None]) -> list[Rule]:
    """parse_rules - the rules of a regexp/pcre file; bad lines warned and skipped."""
    return parse_blocks(lines, f"{dialect} map {path}", lambda text: _parse_rule(text, dialect),
                        warn)


def _expand(parts: list, m: re.Match | None) -> str:
    # No m only for a negative match, whose parts parse_rules keeps free of $number.
    return "".join(p if isinstance(p, str) else ((m.group(p) if m else None) or "") for p in parts)


def match_rules(rules: list[Rule], key: str) -> str | None:
    """match_rules - the result of the first rule that applies to KEY."""
    def test(rule: Rule) -> tuple[bool, re.Match | None]:
        m = rule.regex.match(key) if rule.anchored else rule.regex.search(key)
        return (m is None) == rule.negate, m

    found = first_match(rules, test)
    return _expand(found[0].result, found[1]) if found else None


class RegexpTable(FileTable):
    """regexp:/path - POSIX regular expressions."""

    fixed = False
    dialect = "regexp"

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.path = name

    def load(self) -> list[Rule]:
        try:
            with open(self.path, encoding="utf-8", errors="surrogateescape") as f:
                return parse_rules(f, self.path, self.dialect, log.warning)
        except OSError as e:
            raise TableError(f"open {self.path}: {e.strerror}") from None

    def lookup(self, key: str) -> str | None:
        return match_rules(self.current(), key)


class PcreTable(RegexpTable):
    """pcre:/path - Perl-compatible regular expressions."""

    dialect = "pcre"
