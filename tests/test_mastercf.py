"""master.cf: the eight columns, defaults, -o overrides (pymaster.master.mastercf)."""

from pathlib import Path

import pytest

from pymaster.mail.config import ConfigError
from pymaster.master.mastercf import load_master_cf, parse_master_cf, split_args

DATA = Path(__file__).parent / "data" / "debian"
ROOT = Path(__file__).resolve().parents[1]


def parse(text: str, maxproc: int = 100):
    entries, errors = parse_master_cf(text, "/etc/postfix/master.cf", maxproc)
    assert errors == []
    return entries


def test_columns_and_defaults():
    (e,) = parse("cleanup   unix  n       -       -       -       0       cleanup\n", 77)
    assert (e.service, e.type, e.key) == ("cleanup", "unix", "cleanup/unix")
    assert (e.private, e.unpriv, e.chroot) == (False, True, False)
    assert (e.wakeup, e.wakeup_if_used, e.maxproc) == (0, False, 0)
    assert (e.command, e.args, e.overrides, e.lineno) == ("cleanup", [], {}, 1)


def test_dash_means_default():
    (e,) = parse("smtp unix - - - - - smtp\n", 42)
    assert (e.private, e.unpriv, e.chroot, e.wakeup, e.maxproc) == (True, True, False, 0, 42)


def test_wakeup_with_and_without_question_mark():
    a, b = parse("pickup unix n - n 60 1 pickup\ntlsmgr unix - - n 1000? 1 tlsmgr\n")
    assert (a.wakeup, a.wakeup_if_used) == (60, False)
    assert (b.wakeup, b.wakeup_if_used) == (1000, True)


def test_continuation_lines_comments_and_overrides():
    (e,) = parse("submission inet n - n - - smtpd\n"
                 "  -o syslog_name=postfix/submission\n"
                 "#  -o smtpd_tls_security_level=encrypt\n"
                 "  -o smtpd_client_restrictions=$mua_client_restrictions\n"
                 "  -osmtpd_sasl_auth_enable=yes -v\n")
    assert e.service == "submission" and e.lineno == 1 and e.last_lineno == 5
    assert e.args == ["-o", "syslog_name=postfix/submission",
                      "-o", "smtpd_client_restrictions=$mua_client_restrictions",
                      "-osmtpd_sasl_auth_enable=yes", "-v"]
    assert e.overrides == {"syslog_name": "postfix/submission",
                           "smtpd_client_restrictions": "$mua_client_restrictions",
                           "smtpd_sasl_auth_enable": "yes"}


def test_braced_arguments_keep_white_space():
    (e,) = parse("x unix - - n - - smtp -o { smtp_helo_name = a b }\n")
    assert e.overrides == {"smtp_helo_name": "a b"}
    assert split_args("a { b c } d") == ["a", "b c", "d"]


def test_inet_service_with_host_and_port():
    (e,) = parse("127.0.0.1:2525 inet n - n - - smtpd\n")
    assert (e.service, e.type) == ("127.0.0.1:2525", "inet")


@pytest.mark.parametrize("line, message", [
    ("smtp inet n - n - smtpd", "line 1: bad field count"),
    ("smtp tcp n - n - - smtpd", "line 1: bad transport type: tcp"),
    ("smtp inet x - n - - smtpd", "line 1: field \"private\": bad value: \"x\""),
    ("smtp inet n - n soon - smtpd", "line 1: field \"wakeup\": bad value"),
    ("smtp inet n - n - many smtpd", "line 1: field \"process_limit\": bad value"),
    ("smtp inet n - n - - smtpd -o", "line 1: option -o requires"),
    ("smtp inet n - n - - smtpd -o nothing", "line 1: -o: missing '='"),
    ("  -o x=y", "line 1: text starts with white space"),
])
def test_bad_lines_name_file_and_line(line, message):
    _, errors = parse_master_cf(line + "\n", "/etc/postfix/master.cf")
    assert errors == [errors[0]] and errors[0].startswith("/etc/postfix/master.cf: " + message)


def test_load_master_cf_keeps_the_last_definition(tmp_path):
    (tmp_path / "main.cf").write_text("default_process_limit = 9\n")
    (tmp_path / "master.cf").write_text("smtp inet n - n - - smtpd\n"
                                        "qmgr unix n - n 300 1 qmgr\n"
                                        "smtp inet n - n - 3 smtpd -v\n")
    entries = load_master_cf(str(tmp_path))
    assert [(e.key, e.maxproc, e.args) for e in entries] == [
        ("qmgr/unix", 1, []), ("smtp/inet", 3, ["-v"])]


def test_load_master_cf_raises_config_error(tmp_path):
    (tmp_path / "main.cf").write_text("")
    (tmp_path / "master.cf").write_text("smtp inet n\n")
    with pytest.raises(ConfigError, match=r"master.cf: line 1: bad field count"):
        load_master_cf(str(tmp_path))


def test_debians_master_cf_reads_without_error():
    entries = load_master_cf(str(DATA))
    keys = [e.key for e in entries]
    assert keys[:4] == ["smtp/inet", "pickup/unix", "cleanup/unix", "qmgr/unix"]
    assert "postlog/unix-dgram" in keys
    relay = next(e for e in entries if e.key == "relay/unix")
    assert relay.overrides == {"syslog_name": "postfix/$service_name"}


def test_the_shipped_master_cf():
    entries = {e.key: e for e in load_master_cf(str(ROOT / "etc"))}
    assert "127.0.0.1:2525/inet" in entries
    assert entries["pickup/unix"].wakeup == 60 and entries["pickup/unix"].maxproc == 1
    assert entries["qmgr/unix"].wakeup == 300 and not entries["qmgr/unix"].private
    assert entries["tlsmgr/unix"].wakeup_if_used
    assert entries["cleanup/unix"].maxproc == 0
    assert not any(e.chroot for e in entries.values())
