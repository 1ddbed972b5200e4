"""regexp: and pcre: tables: patterns tried in order, first match wins.

The file syntax of regexp_table(5) and pcre_table(5):

    /pattern/flags result        result when the key matches
    !/pattern/flags result       result when the key does not match
    /pat1/!/pat2/ result         (regexp only) pat1 matches and pat2 does not
    if /pattern/flags            the rules up to the matching `endif` are
    if !/pattern/flags           tried only when the key (does not) match
    endif

Any non-alphanumeric character may delimit the pattern. Blank lines and `#`
comments are skipped; a line starting with white space continues the
previous one. Each leading `!` flips the sense (`! !/re/` is `/re/`). In a
result, `$1`, `${1}` and `$(1)` stand for what a group matched (empty when
it matched nothing), wherever they stand, `$$` for a dollar sign; any other
`$` reference makes the rule bad. A rule without result text is found with
an empty result (warned about). Text after `if /re/` or `endif` is warned
about and ignored: the statement still counts.

Flags: `i` toggles case-insensitive matching (on by default), `m` toggles
multi-line mode; regexp also knows `x` (POSIX extended syntax, always on
here), pcre knows `s` (dot matches newline), `x` (white space in the pattern
is ignored), `A` (anchored), `E`, `U` and `X`. Both are run by Python's re,
after translating the POSIX and PCRE spellings Python lacks ([:alpha:],
\\< \\>, (?<name>...), \\z ...).

A bad rule is warned about with file and line and skipped, with Postfix's
wording (regexp_table(5) and pcre_table(5) differ in a few of them). Errors
in a pattern are worded by Python's re, in Postfix's shape.
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
from pymaster.util.tables.ifblocks import Endif, first_match, parse_blocks

POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z",
    "lower": "a-z", "space": r" \t\n\r\f\v", "blank": r" \t", "punct": r"!-/:-@\[-`{-~",
    "print": r" -~", "graph": r"!-~", "cntrl": r"\x00-\x1f\x7f", "xdigit": "0-9A-Fa-f",
    "word": r"\w",
}


@dataclass
class Rule:
    regex: re.Pattern
    negate: bool
    result: list = field(default_factory=list)   # str pieces and group numbers
    is_if: bool = False
    skip_to: int = 0                             # for IF: the index after its ENDIF
    anchored: bool = False
    unless: re.Pattern | None = None             # regexp's /re1/!/re2/: re2 must not match

    def test(self, key: str) -> tuple[bool, re.Match | None]:
        """test - whether the rule applies to KEY, and the match for its result."""
        m = self.regex.match(key) if self.anchored else self.regex.search(key)
        if (m is None) != self.negate:
            return False, m
        return (self.unless is None or self.unless.search(key) is None), m


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


def _strip_bangs(text: str) -> tuple[bool, str]:
    """_strip_bangs - (negated, rest) of text after leading `!`s and white space;
    each `!` flips the sense, so `! ! pattern` is the same as `pattern`."""
    negate = False
    i = 0
    while i < len(text) and (text[i] == "!" or text[i].isspace()):
        negate ^= text[i] == "!"
        i += 1
    return negate, text[i:]


def _split_pattern(text: str, dialect: str) -> tuple[str, str, str] | str:
    """_split_pattern - (pattern, flags, rest) of "/pattern/flags rest", or an error.

    Regexp flags end at white space or at the `!` of a /re1/!/re2/ rule;
    pcre has no such rule, and a `!` there is an unknown flag."""
    if not text:
        return "no regexp"
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
        return f'no closing regexp delimiter "{delim}"'
    pattern = text[1:i]
    rest = text[i + 1:]
    m = re.match(r"[^\s!]*" if dialect == "regexp" else r"\S*", rest)
    assert m is not None  # matches the empty string
    return pattern, m.group(0), rest[m.end():]


def _compile_pattern(text: str, dialect: str,
                     note: Callable[[str], None]) -> tuple[re.Pattern, bool, str] | str | None:
    """_compile_pattern - (regex, anchored, rest of line) of the pattern that opens
    TEXT; an error to skip the rule with, or None when NOTE has said why."""
    split = _split_pattern(text, dialect)
    if isinstance(split, str):
        if split.startswith("no closing") and dialect == "pcre":
            note(f"{split}: ignoring this rule")
            return None
        return split
    pattern, flag_text, rest = split
    flags = _flags(flag_text, dialect)
    if isinstance(flags, str):
        return flags
    try:
        regex = re.compile(translate(pattern, dialect), flags[0])
    except re.error as e:
        # The wording is Python's; the line's shape is Postfix's: regexp
        # gives the library's text alone, pcre an offset and the text.
        if dialect == "pcre":
            note(f"error in regex at offset {e.pos or 0}: {e.msg}")
        else:
            note(e.msg)
        return None
    return regex, flags[1], rest


def _reference(text: str, i: int) -> tuple[str | None, int]:
    """_reference - (name, end) of the `$` reference at TEXT[i]; name None when
    the reference is truncated (`${1`), "" when it names nothing (`$`, `${}`)."""
    if i + 1 < len(text) and text[i + 1] in "{(":
        close = text.find("}" if text[i + 1] == "{" else ")", i + 2)
        if close < 0:
            return None, len(text)
        return text[i + 2:close], close + 1
    m = re.compile(r"[A-Za-z0-9_]*").match(text, i + 1)
    assert m is not None  # matches the empty string
    return m.group(0), m.end()


def _compile_result(text: str, dialect: str, note: Callable[[str], None],
                    warn: Callable[[str], None]) -> list | None:
    """_compile_result - the result as literal pieces and group numbers; None
    (warned about) when its `$` references are not all `$$` or `$number`."""
    parts: list = []
    bad = False
    pos = i = 0
    while True:
        i = text.find("$", pos)
        if i < 0:
            break
        parts.append(text[pos:i])
        if text.startswith("$$", i):
            parts.append("$")
            pos = i + 2
            continue
        name, pos = _reference(text, i)
        if name is None:
            warn(f'truncated macro reference: "{text}"')
            bad = True
            break
        if name == "":
            warn(f'empty macro name: "{text}"')
            bad = True
            break
        if not re.fullmatch(r"[0-9]+", name):
            note(f'non-numeric replacement index "{name}"')
            bad = True
        elif int(name) == 0:
            # (sic: regexp's wording has hyphens here, pcre's has none)
            dash = "-" if dialect == "regexp" else " "
            note(f'out{dash}of{dash}range replacement index "{name}"')
            bad = True
        else:
            parts.append(int(name))
    if bad:
        note("bad replacement syntax: skipping this rule")
        return None
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


def _parse_rule(text: str, dialect: str, note: Callable[[str], None],
                warn: Callable[[str], None]) -> Rule | Endif | str | None:
    """_parse_rule - one line: "/re/flags result", "/re1/!/re2/ result" (regexp),
    "if /re/flags" or "endif"; or why it is skipped (see ifblocks)."""
    leading = re.match(r"[A-Za-z0-9]*", text)
    assert leading is not None  # matches the empty string
    word = leading.group(0)
    if word.lower() == "endif":
        return Endif("ignoring extra text after ENDIF" if text[len(word):].strip() else None)
    is_if = word.lower() == "if"
    if is_if:
        text = text[len(word):]
    elif word:
        note("ignoring unrecognized request")
        return None
    negate, text = _strip_bangs(text)
    first = _compile_pattern(text, dialect, note)
    if not isinstance(first, tuple):
        return first
    regex, anchored, rest = first
    rule = Rule(regex, negate, is_if=is_if, anchored=anchored)
    if is_if:
        # The IF still counts; what follows it is most likely a rule that
        # was indented and so joined to the IF line.
        if rest.strip():
            note(f'ignoring extra text after IF statement: "{rest.strip()}"')
            note("do not prepend whitespace to statements between IF and ENDIF")
        return rule
    if rest.startswith("!"):
        second = _compile_pattern(rest[1:].lstrip(), dialect, note)
        if not isinstance(second, tuple):
            return second
        rule.unless, _, rest = second
    return _with_result(rule, rest.strip(), dialect, note, warn)


def _with_result(rule: Rule, text: str, dialect: str, note: Callable[[str], None],
                 warn: Callable[[str], None]) -> Rule | str | None:
    """_with_result - RULE with its result TEXT compiled, or why it is skipped."""
    if not text:
        note("no replacement text: using empty string")
        return rule
    compiled = _compile_result(text, dialect, note, warn)
    if compiled is None:
        return None
    numbers = [p for p in compiled if isinstance(p, int)]
    if numbers and rule.negate:
        return "$number found in negative match replacement text"
    if numbers and max(numbers) > rule.regex.groups:
        return f"out of range replacement index \"{max(numbers)}\""
    rule.result = compiled
    return rule


def parse_rules(lines: Iterable[str], path: str, dialect: str,
                warn: Callable[[str], None]) -> list[Rule]:
    """parse_rules - the rules of a regexp/pcre file; bad lines warned and skipped."""
    return parse_blocks(lines, f"{dialect} map {path}",
                        lambda text, note: _parse_rule(text, dialect, note, warn), warn)


def _expand(parts: list, m: re.Match | None) -> str:
    # No m only for a negative match, whose parts parse_rules keeps free of $number.
    return "".join(p if isinstance(p, str) else ((m.group(p) if m else None) or "") for p in parts)


def match_rules(rules: list[Rule], key: str) -> str | None:
    """match_rules - the result of the first rule that applies to KEY."""
    found = first_match(rules, lambda rule: rule.test(key))
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
