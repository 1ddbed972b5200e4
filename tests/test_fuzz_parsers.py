"""Property-based fuzzing of every parser that reads untrusted or hand-written input.

Each parser has one contract for input it cannot take: its own clear error
(a CommandError with the SMTP reply, AddressError, CorruptQueueFile,
ConfigError naming file and line, a warning or TableError for a table), never
another exception. Inputs come from hypothesis, built from the characters
and fragments that matter to each grammar so that the parser's branches are
reached, not only its first "syntax error". Settings: tests/fuzzing.py
(PYMASTER_SOAK=1 runs many more examples).

The regression tests at the end name the inputs the fuzzers found.
"""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pymaster.mail import addr, records
from pymaster.mail.config import Config, ConfigError, parse_main_cf
from pymaster.master.mastercf import parse_master_cf
from pymaster.util import tables
from pymaster.util.tables import create_table
from services.smtpd import command
from tests.fuzzing import fuzz_settings


def pieces(fragments: list[str], alphabet: str, max_size: int = 12) -> st.SearchStrategy[str]:
    """pieces - text joined from grammar FRAGMENTS and runs of ALPHABET characters."""
    run = st.text(alphabet=alphabet, max_size=6)
    return st.lists(st.one_of(st.sampled_from(fragments), run),
                    max_size=max_size).map("".join)


ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)
SMTP_CHARS = "<>@:;,.\"\\()[] =+-_!#%\t\x00\x7fAaZz09\u00e9\udcff"
PATH_FRAGMENTS = ["<", ">", "@", "<>", "a@b.example", "@relay:", "@a,@b:", "\"q w\"", "\\",
                  "[1.2.3.4]", "[IPv6:::1]", " SIZE=", "SIZE=99", " BODY=8BITMIME",
                  " BODY=", " RET=HDRS", " RET=", " ENVID=x+2B", " ENVID=", " SMTPUTF8",
                  " AUTH=<>", " NOTIFY=", "NEVER", "SUCCESS,FAILURE", ",DELAY", " ORCPT=",
                  "rfc822;", "a+2Bb", "+ZZ", "=", " ", "  ", "\t", "FROM:", "TO:", "\u00e9"]
path_text = st.one_of(ANY_TEXT, pieces(PATH_FRAGMENTS, SMTP_CHARS))


# -- the SMTP command parser (services/smtpd/command.py) -----------------------

@fuzz_settings(400)
@given(path_text, st.booleans(), st.booleans())
def test_mail_argument_parses_or_gives_a_reply(text, strict, smtputf8):
    for arg in (text, "FROM:" + text):
        try:
            mail = command.parse_mail(arg, strict=strict, smtputf8=smtputf8)
        except command.CommandError as e:
            assert re.match(r"[45]\d\d[ -]", e.reply), e.reply
        else:
            assert isinstance(mail.sender, str)
            assert mail.size is None or mail.size >= 0


@fuzz_settings(400)
@given(path_text, st.booleans())
def test_rcpt_argument_parses_or_gives_a_reply(text, strict):
    for arg in (text, "TO:" + text):
        try:
            rcpt = command.parse_rcpt(arg, strict=strict)
        except command.CommandError as e:
            assert re.match(r"[45]\d\d[ -]", e.reply), e.reply
        else:
            assert rcpt.address


@fuzz_settings(200)
@given(st.text(max_size=80))
def test_split_command_never_fails(line):
    verb, arg = command.split_command(line)
    assert verb == verb.upper()
    assert arg == arg.strip(" \t")


# -- the address parser (pymaster/mail/addr.py) --------------------------------

ADDRESS_FRAGMENTS = ["<", ">", "@", ",", ";", ":", "\"", "\\", "(", ")", "[", "]",
                     "Joe <joe@example.com>", "group: a@b, c@d;", "(comment)", "\"q\"",
                     "a@b", "@", "..", "\r\n ", "=?utf-8?q?x?=", "\u00e9", "\udcff"]
address_text = st.one_of(ANY_TEXT, pieces(ADDRESS_FRAGMENTS, "ab@.<>\"\\(); ,:"))


@fuzz_settings(400)
@given(address_text, st.booleans())
def test_parse_path_gives_a_path_or_address_error(text, strict):
    try:
        path = addr.parse_path(text, strict=strict)
    except addr.AddressError:
        return
    assert isinstance(path.address, str)
    assert all(isinstance(word, str) and word for word in path.words)


@fuzz_settings(300)
@given(address_text)
@example("]")
@example("joe) <a@b>, x]y@z")
def test_header_address_lists_never_fail(text):
    for box in addr.parse_address_list(text):
        assert isinstance(addr.format_mailbox(box), str)


@fuzz_settings(300)
@given(address_text)
def test_address_forms_never_fail(text):
    local, domain = addr.split_address(text)
    assert addr.join_address(local, domain) == text or "@" not in text or not domain
    addr.lower_domain(text)
    addr.unquote_local_part(addr.quote_local_part(local))
    internal = addr.internal(text)
    addr.external(internal)
    addr.is_valid_hostname(domain)
    addr.is_domain_literal(domain)
    addr.domain_literal_address(domain)


# -- the queue file reader (pymaster/mail/records.py) --------------------------

def _valid_queue_file() -> bytes:
    rcpts = [records.Recipient("bob@example.com", orig="b@example.com", notify="SUCCESS",
                               orcpt="rfc822;b@example.com")]
    return records.encode_message(1700000000.5, "alice@example.com", rcpts,
                                  {"client_address": "127.0.0.1"}, b"Subject: x\n\nbody\n")


@st.composite
def damaged_queue_files(draw) -> bytes:
    """damaged_queue_files - a valid queue file cut, overwritten or extended, or random bytes."""
    data = bytearray(_valid_queue_file())
    kind = draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "truncate":
        return bytes(data[:draw(st.integers(0, len(data)))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    at = draw(st.integers(0, len(data)))
    return bytes(data[:at]) + draw(st.binary(max_size=40)) + bytes(data[at:])


@fuzz_settings(400)
@given(damaged_queue_files())
def test_queue_file_bytes_give_a_message_or_corrupt_queue_file(data):
    try:
        message = records.parse_message(data, "fuzz")
    except records.CorruptQueueFile:
        return
    assert isinstance(message.sender, str)
    for r in message.recipients:
        assert isinstance(r.address, str)


@fuzz_settings(100)
@given(damaged_queue_files())
def test_queue_file_on_disk_gives_a_message_or_corrupt_queue_file(tmp_path, data):
    path = tmp_path / "QF"
    path.write_bytes(data)
    try:
        message = records.read_message(str(path))
        list(message.iter_content()) if hasattr(message, "iter_content") else None
    except records.CorruptQueueFile:
        pass
    try:
        list(records.iter_records(str(path)))
    except records.CorruptQueueFile:
        pass


# -- main.cf and master.cf ----------------------------------------------------

MAIN_FRAGMENTS = ["\n", "\n ", "\n\t", "#", "=", " = ", "myhostname", "mydomain", "$",
                  "${", "}", "$(", ")", "${x?y}", "${x:y}", "${x?{a}:{b}}", "$myhostname",
                  "a = $a\n", "b = $c\nc = $b\n", "{", "\u00e9", "\udcff", "\r\n", "\x00",
                  "smtpd_timeout", "300s", "5x", "yes", "-"]
main_cf_text = st.one_of(ANY_TEXT, pieces(MAIN_FRAGMENTS, "ab_ =$#\n\t{}", max_size=20))


@fuzz_settings(300)
@given(main_cf_text)
def test_main_cf_errors_name_file_and_line(text):
    entries, errors = parse_main_cf(text, "/etc/postfix/main.cf")
    for error in errors:
        assert re.match(r"/etc/postfix/main\.cf, line \d+: ", error), error
    cfg = Config("/nonexistent", {e.name: e.value for e in entries}, entries=entries)
    for entry in entries:
        try:
            assert isinstance(cfg.get(entry.name), str)
        except ConfigError as e:
            assert str(e)


MASTER_FRAGMENTS = ["\n", "\n ", "#", "smtp", "inet", "unix", "fifo", "pass", "unix-dgram",
                    "127.0.0.1:", "2525", " n ", " y ", " - ", " 0 ", "60?", "1x", " -o ",
                    "name=value", "{", "}", "{ a b }", "smtpd", "\"", "\u00e9", "-o", " "]
master_cf_text = st.one_of(ANY_TEXT, pieces(MASTER_FRAGMENTS, "ab -ny0{}\n", max_size=24))


@fuzz_settings(300)
@given(master_cf_text)
def test_master_cf_errors_name_file_and_line(text):
    entries, errors = parse_master_cf(text, "/etc/postfix/master.cf")
    for error in errors:
        assert re.match(r"/etc/postfix/master\.cf: line \d+: ", error), error
    for entry in entries:
        assert entry.service and entry.command and entry.maxproc >= 0


# -- lookup tables ---------------------------------------------------------------

REGEXP_FRAGMENTS = ["/", "!", "if ", "endif", "IF ", "ENDIF", "/i", "/m", "/x", "/s", "/A",
                    "/z", "$1", "${1}", "$(1)", "$$", "$", "(", ")", "[", "]", "[[:alpha:]]",
                    "\\<", "\\>", "(?<n>a)", "\\z", "\\", "*", "+", "?", "{2}", "|", "^",
                    "$", ".", "\n", "\n ", "#", " OK", " REJECT $1", "%", "\u00e9", "\udcff"]
CIDR_FRAGMENTS = ["1.2.3.4", "1.2.3.0/24", "/33", "/", "::1", "[::1]", "2001:db8::/32",
                  "!", "if ", "endif", " OK", " ", "\n", "\n ", "#", ".", ":", "0", "256",
                  "-1", "/-1", "1.2.3.4/0", "\u00e9"]
TEXTHASH_FRAGMENTS = ["key", " value", ":", "\n", "\n ", "#", "@example.com", "a@", "\\",
                      "\"", " ", "\t", "\u00e9", "\udcff", "="]
INLINE_FRAGMENTS = ["{", "}", "{ ", " }", "a=b", "=", ",", " ", "{a b}", "x", "\u00e9"]


def _lookup_all(table: tables.Table, keys: list[str]) -> None:
    for key in keys:
        try:
            value = table.lookup(key)
        except tables.TableError:
            return
        assert value is None or isinstance(value, str)


table_keys = st.lists(st.one_of(st.sampled_from(["a", "1.2.3.4", "::1", "x@example.com", ""]),
                                st.text(max_size=12)), min_size=1, max_size=4)


@pytest.mark.parametrize("kind, fragments, alphabet", [
    ("regexp", REGEXP_FRAGMENTS, "/ab!()$1 \n"),
    ("pcre", REGEXP_FRAGMENTS, "/ab!()$1 \n"),
    ("cidr", CIDR_FRAGMENTS, "0123456789./:a \n"),
    ("texthash", TEXTHASH_FRAGMENTS, "ab: \n"),
])
def test_file_table_warns_or_raises_table_error(tmp_path, kind, fragments, alphabet):
    path = tmp_path / "table"

    @fuzz_settings(150)
    @given(pieces(fragments, alphabet, max_size=16), table_keys)
    def check(text, keys):
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        stamp = os.stat(path).st_mtime_ns
        os.utime(path, ns=(stamp, stamp + 1))       # a new table each time
        try:
            table = create_table(f"{kind}:{path}")
        except tables.TableError:
            return
        _lookup_all(table, keys)
    check()


@pytest.mark.parametrize("kind", ["inline", "static", "unionmap", "pipemap"])
def test_inline_tables_warn_or_raise_table_error(kind):
    @fuzz_settings(150)
    @given(pieces(INLINE_FRAGMENTS, "ab{}=, ", max_size=10), table_keys)
    def check(name, keys):
        try:
            table = create_table(f"{kind}:{name}")
        except tables.TableError:
            return
        _lookup_all(table, keys)
    check()


# Types whose name is not a file, a database or a server: safe with any name.
SPEC_TYPES = ["static", "inline", "fail", "environ", "unix", "unionmap", "pipemap", "nosuch", ""]


@fuzz_settings(150)
@given(st.sampled_from(SPEC_TYPES), st.booleans(), pieces(INLINE_FRAGMENTS, "ab{}=,:", 8))
def test_any_table_spec_opens_or_raises_table_error(kind, colon, name):
    try:
        create_table(f"{kind}{':' if colon else ''}{name}")
    except tables.TableError:
        pass


# -- regressions the fuzzers found ----------------------------------------------------

@pytest.mark.parametrize("value, addresses", [
    ("]", ["]"]),
    (")", [")"]),
    ("Joe) <joe@example.com>, x]y@example.com", ["joe@example.com", "x]y@example.com"]),
])
def test_a_stray_closing_bracket_is_a_token(value, addresses):
    """Found by test_header_address_lists_never_fail: a header `To: ]` failed
    tokenize's assertion (an AssertionError out of cleanup's header parsing)."""
    assert [box.address for box in addr.parse_address_list(value)] == addresses
