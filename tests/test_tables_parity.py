"""regexp:, pcre: and cidr: tables as `postmap -q` shows them: same output,
warnings and exit status as Postfix's postmap.

Each row is (type, table text, key, stdout, warnings): STDOUT is the line
printed (None when the key is not found: exit 1, else exit 0), WARNINGS the
stderr lines without their "postmap: warning: " prefix, with {path} standing
for the table file. Every row runs against pymaster's postmap, and against
Debian's /usr/sbin/postmap when it is installed (pcre: needs postfix-pcre),
so the expectations are checked to be Postfix's own.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PYMASTER = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "postmap")
DEBIAN = "/usr/sbin/postmap"

IF_EXTRA = ['{map}, line 1: ignoring extra text after IF statement: "{extra}"',
            "{map}, line 1: do not prepend whitespace to statements between IF and ENDIF"]
EMPTY = ["table {type}:{path}: key {key}: empty string result is not allowed",
         "table {type}:{path} should return NO RESULT in case of NOT FOUND"]


def if_extra(extra):
    return [line.replace("{extra}", extra) for line in IF_EXTRA]


REGEXP_ROWS = [
    # Text after `if /re/` is warned about and ignored; the IF still counts.
    ("if /a/ junk\n/a/ A\nendif\n/b/ B\n", "a", "A", if_extra("junk")),
    ("if /a/ junk\n/a/ A\nendif\n/b/ B\n", "b", "B", if_extra("junk")),
    ("if /a/ junk\n/./ A\nendif\n/b/ B\n", "b", "B", if_extra("junk")),
    ("if !/a/ junk\n/b/ B\nendif\n", "b", "B", if_extra("junk")),
    ("if /a/i junk\n/./ X\nendif\n", "A", None, if_extra("junk")),
    # An indented rule is joined to its IF line: it is that extra text.
    ("if /a/\n /a/ A\nendif\n", "a", None, if_extra("/a/ A")),
    ("if /a/\nif /b/\n/./ X\n", "a", None, ["{map}, line 2: IF has no matching ENDIF",
                                            "{map}, line 1: IF has no matching ENDIF"]),
    ("if /a/\n/./ X\nendif junk\n", "a", "X", ["{map}, line 3: ignoring extra text after ENDIF"]),
    ("if /a/\n/./ X\nendif!\n", "a", "X", ["{map}, line 3: ignoring extra text after ENDIF"]),
    ("endif junk\n/./ X\n", "a", "X", ["{map}, line 1: ignoring ENDIF without matching IF"]),
    ("if /a/\n/./ X\nendifx\n", "a", "X", ["{map}, line 3: ignoring unrecognized request",
                                          "{map}, line 1: IF has no matching ENDIF"]),
    ("if/a/\n/./ X\nendif\n", "b", None, []),
    ("IF !/a/\n/./ X\nENDIF\n", "b", "X", []),
    ("if\n/./ X\nendif\n", "a", "X", ["{map}, line 1: no regexp: skipping this rule",
                                      "{map}, line 3: ignoring ENDIF without matching IF"]),
    ("ifx /a/ X\n", "a", None, ["{map}, line 1: ignoring unrecognized request"]),
    ("abc X\n", "a", None, ["{map}, line 1: ignoring unrecognized request"]),
    ("if /a/z junk\n/./ X\nendif\n", "a", "X",
     ['{map}, line 1: unknown regexp option "z": skipping this rule',
      "{map}, line 3: ignoring ENDIF without matching IF"]),
    # A pattern without result text is found, with an empty result.
    ("/a/\n", "a", "", ["{map}, line 1: no replacement text: using empty string"] + EMPTY),
    ("/a/i   \n", "a", "", ["{map}, line 1: no replacement text: using empty string"] + EMPTY),
    ("!/(a)/\n", "b", "", ["{map}, line 1: no replacement text: using empty string"] + EMPTY),
    # $number beyond the groups, and in a negative rule.
    ("/(a)/ $2\n", "a", None,
     ['{map}, line 1: out of range replacement index "2": skipping this rule']),
    ("/(a)/ $3 $2\n/a/ Y\n", "a", "Y",
     ['{map}, line 1: out of range replacement index "3": skipping this rule']),
    ("!/(a)/ $1\n", "b", None,
     ["{map}, line 1: $number found in negative match replacement text: skipping this rule"]),
    ("!/(a)/ $2\n", "b", None,
     ["{map}, line 1: $number found in negative match replacement text: skipping this rule"]),
    # $number inside other text expands in place.
    ("/(a)(b)?/ ($1)($2)\n", "a", "(a)()", []),
    ("/(a)(b)?/ x${1}y$(2)z$$\n", "ab", "xaybz$", []),
    ("/(a)/ $$$1\n", "a", "$a", []),
    ("/(a)/ ${1}}\n", "a", "a}", []),
    ("/(a)/ ${01}\n", "a", "a", []),
    ("/(a)(b)?(c)?(d)?(e)?(f)?(g)?(h)?(i)?(j)?(k)?(l)?/ $12\n", "abc", "", EMPTY),
    ("/a/  X  Y  \n", "a", "X  Y", []),
    # Replacement syntax errors.
    ("/a/ $x\n", "a", None, ['{map}, line 1: non-numeric replacement index "x"',
                             "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/a/ $1a\n", "a", None, ['{map}, line 1: non-numeric replacement index "1a"',
                              "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/a/ ${ 1 }\n", "a", None, ['{map}, line 1: non-numeric replacement index " 1 "',
                                 "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/(a)/ ${1\n/a/ Y\n", "a", "Y", ['truncated macro reference: "${1"',
                                      "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/(a)/ $x ${1\n", "a", None, ['{map}, line 1: non-numeric replacement index "x"',
                                   'truncated macro reference: "$x ${1"',
                                   "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/(a)/ $(1}\n", "a", None, ['truncated macro reference: "$(1}"',
                                 "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/a/ x$\n", "a", None, ['empty macro name: "x$"',
                             "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/(a)/ ${} $x\n", "a", None, ['empty macro name: "${} $x"',
                                   "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/(a)/ $ 1\n", "a", None, ['empty macro name: "$ 1"',
                                "{map}, line 1: bad replacement syntax: skipping this rule"]),
    # Negations and other rule errors.
    ("! /a/ X\n", "c", "X", []),
    ("!!/a/ X\n", "c", None, []),
    ("!\n", "c", None, ["{map}, line 1: no regexp: skipping this rule"]),
    ("/a/z x\n", "a", None, ['{map}, line 1: unknown regexp option "z": skipping this rule']),
    ("/a/ !/b/ X\n", "a", "!/b/ X", []),
    ("/a\\/b/ X\n", "a/b", "X", []),
]

REGEXP_ONLY_ROWS = [
    # /re1/!/re2/: the first matches and the second does not.
    ("/a/!/b/ X\n", "a", "X", []),
    ("/a/!/b/ X\n", "ab", None, []),
    ("/a/!/b/ X\n", "c", None, []),
    ("/a/i!/b/i X\n", "A", None, []),
    ("/(a)/!/b/ $1\n", "a", "a", []),
    ("!/a/!/b/ X\n", "c", "X", []),
    ("/a/!/b/!/c/ X\n", "a", "!/c/ X", []),
    ("/a/!/(b)/ $1\n", "a", None,
     ['{map}, line 1: out of range replacement index "1": skipping this rule']),
    ("!/(a)/!/b/ $1\n", "c", None,
     ["{map}, line 1: $number found in negative match replacement text: skipping this rule"]),
    ("/a/!b X\n", "a", None,
     ['{map}, line 1: no closing regexp delimiter "b": skipping this rule']),
    ("/a/! X\n", "a", None,
     ['{map}, line 1: no closing regexp delimiter "X": skipping this rule']),
    ("/a/i!/b/z X\n", "a", None,
     ['{map}, line 1: unknown regexp option "z": skipping this rule']),
    ("if /a/!/b/\n/./ X\nendif\n", "a", "X", if_extra("!/b/")),
    ("/unclosed x\n", "a", None,
     ['{map}, line 1: no closing regexp delimiter "/": skipping this rule']),
    ("!abc/ X\n", "c", None,
     ['{map}, line 1: no closing regexp delimiter "a": skipping this rule']),
    ("/(a)/ $0 $x\n", "a", None, ['{map}, line 1: out-of-range replacement index "0"',
                                  '{map}, line 1: non-numeric replacement index "x"',
                                  "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/a/U x\n", "a", None, ['{map}, line 1: unknown regexp option "U": skipping this rule']),
]

PCRE_ONLY_ROWS = [
    ("/a/!/b/ X\n", "a", None, ['{map}, line 1: unknown regexp option "!": skipping this rule']),
    ("/unclosed x\n", "a", None,
     ['{map}, line 1: no closing regexp delimiter "/": ignoring this rule']),
    ("!abc/ X\n", "c", None,
     ['{map}, line 1: no closing regexp delimiter "a": ignoring this rule']),
    ("/(a)/ $0 $x\n", "a", None, ['{map}, line 1: out of range replacement index "0"',
                                  '{map}, line 1: non-numeric replacement index "x"',
                                  "{map}, line 1: bad replacement syntax: skipping this rule"]),
    ("/a/U x\n", "a", "x", []),
]

CIDR_ROWS = [
    # Repeated negations: each `!` flips the sense.
    ("! ! 0.0.0.0/0 X\n", "1.2.3.4", "X", []),
    ("!!0.0.0.0/0 X\n", "1.2.3.4", "X", []),
    ("! ! ! 0.0.0.0/0 X\n", "1.2.3.4", None, []),
    ("!  10.0.0.0/8 X\n", "1.2.3.4", "X", []),
    ("if ! ! 10.0.0.0/8\n0.0.0.0/0 X\nendif\n", "10.2.3.4", "X", []),
    ("if!10.0.0.0/8\n0.0.0.0/0 X\nendif\n", "1.2.3.4", "X", []),
    ("if\t!10.0.0.0/8\n0.0.0.0/0 X\nENDIF\n", "10.2.3.4", None, []),
    # IF and ENDIF lines: an IF's pattern is all the rest of its line.
    ("if 10.0.0.0/8 junk\n0.0.0.0/0 X\nendif junk\n", "10.2.3.4", "X",
     ['{map}, line 1: bad mask value in "10.0.0.0/8 junk": skipping this rule',
      "{map}, line 3: garbage after ENDIF: skipping this rule"]),
    ("if 10.0.0.0 junk\n0.0.0.0/0 X\nendif\n", "10.2.3.4", "X",
     ['{map}, line 1: bad address pattern: "10.0.0.0 junk": skipping this rule',
      "{map}, line 3: ENDIF without IF: skipping this rule"]),
    ("if [10.0.0.0] junk\n", "1.2.3.4", None,
     ['{map}, line 1: garbage after "[10.0.0.0]": skipping this rule']),
    ("if10.0.0.0/8\n0.0.0.0/0 X\nendif\n", "10.2.3.4", "X",
     ['{map}, line 1: bad network value in "if10.0.0.0/8": skipping this rule',
      "{map}, line 3: ENDIF without IF: skipping this rule"]),
    ("if\n0.0.0.0/0 X\nendif\n", "10.2.3.4", "X",
     ["{map}, line 1: no address pattern: skipping this rule",
      "{map}, line 3: ENDIF without IF: skipping this rule"]),
    ("if 10.0.0.0/8\n0.0.0.0/0 X\n", "10.2.3.4", "X",
     ["{map}, line 1: IF has no matching ENDIF"]),
    ("if 10.0.0.0/8\n0.0.0.0/0 X\nendif!\n", "10.2.3.4", "X",
     ["{map}, line 3: garbage after ENDIF: skipping this rule",
      "{map}, line 1: IF has no matching ENDIF"]),
    ("if 1.0.0.0/8\nif 1.2.0.0/16\n0.0.0.0/0 X\n", "1.2.3.4", "X",
     ["{map}, line 2: IF has no matching ENDIF", "{map}, line 1: IF has no matching ENDIF"]),
    ("if 10.0.0.0/8\n0.0.0.0/0 X\nendif\nendif\n", "10.2.3.4", "X",
     ["{map}, line 4: ENDIF without IF: skipping this rule"]),
    ("endif junk\n", "1.2.3.4", None, ["{map}, line 1: garbage after ENDIF: skipping this rule"]),
    ("endifx\n", "1.2.3.4", None,
     ['{map}, line 1: bad address pattern: "endifx": skipping this rule']),
    ("!if 10.0.0.0/8\n", "1.2.3.4", None,
     ['{map}, line 1: bad address pattern: "if": skipping this rule']),
    ("!\n", "1.2.3.4", None, ["{map}, line 1: no address pattern: skipping this rule"]),
    ("if !\n", "1.2.3.4", None, ["{map}, line 1: no address pattern: skipping this rule"]),
    ("! X\n", "1.2.3.4", None, ['{map}, line 1: bad address pattern: "X": skipping this rule']),
    # Address patterns.
    ("1.2.3.4/24 X\n", "1.2.3.4", None,
     ['{map}, line 1: non-null host address bits in "1.2.3.4/24", perhaps you should use '
      '"1.2.3.0/24" instead: skipping this rule']),
    ("2001:db8::1/64 X\n", "2001:db8::1", None,
     ['{map}, line 1: non-null host address bits in "2001:db8::1/64", perhaps you should use '
      '"2001:db8::/64" instead: skipping this rule']),
    ("1.2.3.0/33 X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask length in "1.2.3.0/33": skipping this rule']),
    ("2001:db8::/129 X\n", "2001:db8::1", None,
     ['{map}, line 1: bad mask length in "2001:db8::/129": skipping this rule']),
    ("x/33 X\n", "1.2.3.4", None, ['{map}, line 1: bad mask length in "x/33": skipping this rule']),
    ("1.2.3.0/x X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask value in "1.2.3.0/x": skipping this rule']),
    ("1.2.3.0/ X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask value in "1.2.3.0/": skipping this rule']),
    ("1.2.3.0/+24 X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask value in "1.2.3.0/+24": skipping this rule']),
    ("1.2.3.0/24/8 X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask value in "1.2.3.0/24/8": skipping this rule']),
    ("x/y X\n", "1.2.3.4", None, ['{map}, line 1: bad mask value in "x/y": skipping this rule']),
    ("x/24 X\n", "1.2.3.4", None,
     ['{map}, line 1: bad network value in "x/24": skipping this rule']),
    ("010.0.0.0/8 X\n", "8.1.2.3", None,
     ['{map}, line 1: bad network value in "010.0.0.0/8": skipping this rule']),
    ("1.2.3 X\n", "1.2.3.4", None,
     ['{map}, line 1: bad address pattern: "1.2.3": skipping this rule']),
    ("1.2.3.0/24\n", "1.2.3.4", None, ["{map}, line 1: no lookup result: skipping this rule"]),
    ("1.2.3.0/024 X\n", "1.2.3.4", "X", []),
    ("[1.2.3.0]/24 X\n", "1.2.3.4", "X", []),
    ("[1.2.3.0/24] X\n", "1.2.3.4", "X", []),
    ("[2001:db8::]/32 X\n", "2001:db8::1", "X", []),
    ("[1.2.3.0 X\n", "1.2.3.4", None,
     ['{map}, line 1: missing \']\' character after "[1.2.3.0": skipping this rule']),
    ("[1.2.3.0]x X\n", "1.2.3.4", None,
     ['{map}, line 1: garbage after "[1.2.3.0]": skipping this rule']),
    ("[1.2.3.4]]/32 X\n", "1.2.3.4", None,
     ['{map}, line 1: garbage after "[1.2.3.4]": skipping this rule']),
    ("[1.2.3.4/]24 X\n", "1.2.3.4", None,
     ['{map}, line 1: garbage after "[1.2.3.4/]": skipping this rule']),
    ("[1.2.3.0]/24x X\n", "1.2.3.4", None,
     ['{map}, line 1: bad mask value in "1.2.3.0/24x": skipping this rule']),
    ("[] X\n", "1.2.3.4", None, ['{map}, line 1: bad address pattern: "": skipping this rule']),
    ("[x] X\n", "1.2.3.4", None, ['{map}, line 1: bad address pattern: "x": skipping this rule']),
    ("0.0.0.0/0\tX  Y \n", "10.2.3.4", "X  Y", []),
    # Keys are taken as they are.
    ("1.2.3.4 X\n", "[1.2.3.4]", None, []),
    ("::1 X\n", "ipv6:::1", None, []),
    ("::1 X\n", "[::1]", None, []),
    ("::1 X\n", " ::1", None, []),
    ("::/0 X\n", "fe80::1%eth0", None, []),
    ("0.0.0.0/0 X\n", "010.1.2.3", None, []),
    ("::ffff:1.2.3.4 X\n", "1.2.3.4", None, []),
    ("1.2.3.4 X\n", "::ffff:1.2.3.4", None, []),
    ("0.0.0.0/0 v4\n", "::1", None, []),
]

ROWS = ([("regexp", *row) for row in REGEXP_ROWS + REGEXP_ONLY_ROWS]
        + [("pcre", *row) for row in REGEXP_ROWS + PCRE_ONLY_ROWS]
        + [("cidr", *row) for row in CIDR_ROWS])


def _supports(program, type_, config):
    """_supports - whether PROGRAM is there and knows TYPE, or why not."""
    if not os.path.exists(program):
        return f"{program} is not installed"
    if type_ == "pcre" and program == DEBIAN:
        probe = subprocess.run([program, "-c", config, "-q", "x", "pcre:/dev/null"],
                               capture_output=True, text=True, timeout=30)
        if "unsupported dictionary type" in probe.stderr:
            return "Debian's postmap has no pcre: table (install postfix-pcre)"
    return None


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config")
    (path / "main.cf").write_text("")
    return str(path)


@pytest.mark.parametrize("program", [PYMASTER, DEBIAN], ids=["pymaster", "debian"])
@pytest.mark.parametrize("type_, text, key, stdout, warnings", ROWS)
def test_postmap_query(program, config, tmp_path, type_, text, key, stdout, warnings):
    reason = _supports(program, type_, config)
    if reason:
        pytest.skip(reason)
    path = tmp_path / "table"
    path.write_text(text)
    result = subprocess.run([program, "-c", config, "-q", key, f"{type_}:{path}"],
                            capture_output=True, text=True, timeout=30)
    fill = {"{map}": f"{type_} map {path}", "{type}": type_, "{path}": str(path), "{key}": key}
    expected = []
    for line in warnings:
        for name, value in fill.items():
            line = line.replace(name, value)
        expected.append(f"postmap: warning: {line}")
    assert result.stderr.splitlines() == expected
    assert result.stdout == ("" if stdout is None else stdout + "\n")
    assert result.returncode == (1 if stdout is None else 0)
