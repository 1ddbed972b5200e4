"""regexp: and pcre: tables (pymaster.util.tables.regexp), per regexp_table(5) and pcre_table(5)."""

import pytest

from pymaster.util import tables
from pymaster.util.tables import create_table
from pymaster.util.tables.regexp import match_rules, parse_rules, translate


def rules_of(text, dialect="regexp"):
    warnings = []
    rules = parse_rules(text.splitlines(True), "/etc/postfix/t", dialect, warnings.append)
    return rules, warnings


def lookup(text, key, dialect="regexp"):
    rules, warnings = rules_of(text, dialect)
    assert warnings == []
    return match_rules(rules, key)


@pytest.mark.parametrize("dialect", ["regexp", "pcre"])
class TestBothDialects:
    def test_first_match_wins(self, dialect):
        text = "/^a/ first\n/^ab/ second\n"
        assert lookup(text, "abc", dialect) == "first"
        assert lookup(text, "xyz", dialect) is None

    def test_case_insensitive_by_default_and_i_toggles(self, dialect):
        assert lookup("/^abc$/ yes\n", "ABC", dialect) == "yes"
        assert lookup("/^abc$/i yes\n", "ABC", dialect) is None

    def test_substitution(self, dialect):
        text = "/^(.*)@(.*)$/ $2 ${1} $(1) $$5\n"
        assert lookup(text, "user@example.com", dialect) == "example.com user user $5"

    def test_unmatched_group_is_empty(self, dialect):
        assert lookup("/^(a)|(b)$/ [$1][$2]\n", "b", dialect) == "[][b]"

    def test_negation(self, dialect):
        text = "!/^abc/ not abc\n"
        assert lookup(text, "xyz", dialect) == "not abc"
        assert lookup(text, "abcd", dialect) is None

    def test_if_endif_nesting(self, dialect):
        text = ("if /@example\\.com$/\n"
                "if !/^postmaster@/\n"
                "/^admin@/ ADMIN\n"
                "endif\n"
                "/./ EXAMPLE\n"
                "endif\n"
                "/./ OTHER\n")
        assert lookup(text, "admin@example.com", dialect) == "ADMIN"
        assert lookup(text, "postmaster@example.com", dialect) == "EXAMPLE"
        assert lookup(text, "admin@other.org", dialect) == "OTHER"

    def test_other_delimiters_and_escaped_delimiter(self, dialect):
        assert lookup("%^a/b% slash\n", "a/b", dialect) == "slash"
        assert lookup("/^a\\/b/ escaped\n", "a/b", dialect) == "escaped"

    def test_comments_blank_lines_and_continuations(self, dialect):
        text = "# comment\n\n/^x/ one\n  two\n"
        assert lookup(text, "x", dialect) == "one  two"

    def test_posix_classes(self, dialect):
        assert lookup("/^[[:digit:]]+$/ digits\n", "12345", dialect) == "digits"

    def test_bad_rules_are_skipped_with_file_and_line(self, dialect):
        rules, warnings = rules_of("/abc/ ok\n/(a/ bad\n/a/z x\n/a/\n"
                                   "/(b)/ $2\n!/(c)/ $1\nendif\nif /d/\n", dialect)
        assert len(rules) == 3
        where = f"{dialect} map /etc/postfix/t"
        assert warnings[0].startswith(f"{where}, line 2: ")
        assert warnings[1] == f"{where}, line 3: unknown regexp option \"z\": skipping this rule"
        assert warnings[2] == f"{where}, line 4: no replacement text: using empty string"
        assert "out of range replacement index \"2\"" in warnings[3]
        assert "$number found in negative match replacement text" in warnings[4]
        assert warnings[5] == f"{where}, line 7: ignoring ENDIF without matching IF"
        assert warnings[6] == f"{where}, line 8: IF has no matching ENDIF"

    def test_if_with_extra_text_still_counts(self, dialect):
        rules, warnings = rules_of("if /a/ junk\n/./ A\nendif junk\n/./ B\n", dialect)
        assert match_rules(rules, "a") == "A"
        assert match_rules(rules, "b") == "B"
        assert len(warnings) == 3

    def test_result_with_two_digit_group(self, dialect):
        text = "/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)/ $12-$1\n"
        assert lookup(text, "abcdefghijkl", dialect) == "l-a"


class TestRegexp:
    def test_unless_pattern(self):
        text = "/@example\\.com$/!/^postmaster@/ OTHER\n"
        assert lookup(text, "joe@example.com") == "OTHER"
        assert lookup(text, "postmaster@example.com") is None

    def test_dot_matches_newline_unless_m(self):
        assert lookup("/^Subject:.*world/ yes\n", "Subject: hello\n world") == "yes"
        assert lookup("/^ world/m yes\n", "Subject: hello\n world") == "yes"


class TestPcre:
    def test_named_groups_and_pcre_escapes(self):
        assert translate("(?<user>\\w+)\\z", "pcre") == "(?P<user>\\w+)\\Z"
        assert lookup("/^(?<u>[^@]+)@/ $1\n", "joe@x", "pcre") == "joe"

    def test_lookbehind_is_not_a_named_group(self):
        assert lookup("/(?<=a)b/ yes\n", "ab", "pcre") == "yes"

    def test_flags_s_x_and_A(self):
        assert lookup("/a.b/s yes\n", "a\nb", "pcre") == "yes"
        assert lookup("/a.b/ yes\n", "a\nb", "pcre") is None
        assert lookup("/a b c/x yes\n", "abc", "pcre") == "yes"
        assert lookup("/bc/A yes\n", "abc", "pcre") is None
        assert lookup("/ab/A yes\n", "abc", "pcre") == "yes"

    def test_header_checks_style_rules(self):
        text = "/^Subject:.*viagra/ REJECT spam\n/^X-Spam-Flag: YES/ DISCARD\n"
        assert lookup(text, "Subject: buy VIAGRA now", "pcre") == "REJECT spam"


class TestTableFile:
    def test_file_is_reread_when_it_changes(self, tmp_path, monkeypatch):
        monkeypatch.setattr(tables, "CHECK_INTERVAL", 0)
        path = tmp_path / "checks"
        path.write_text("/a/ one\n")
        table = create_table(f"pcre:{path}")
        assert table.lookup("a") == "one"
        assert not table.fixed
        path.write_text("/a/ two, and longer\n")
        assert table.lookup("a") == "two, and longer"

    def test_unreadable_file_is_a_temporary_failure(self, tmp_path):
        with pytest.raises(tables.TableError):
            create_table(f"regexp:{tmp_path}/missing").lookup("x")
