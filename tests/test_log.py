"""Logging (pymaster.util.log) and the postlog command: Postfix's line shapes."""

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pymaster.util import log
from pymaster.commands import postlog
from pymaster.mail.config import Config

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d (\S+) (\S+)\[(\d+)\]: (.*)$")


@pytest.fixture
def maillog(tmp_path):
    path = tmp_path / "maillog"
    cfg = Config(str(tmp_path), {"maillog_file": str(path), "myhostname": "mx.example.com"})
    log.setup("smtpd", cfg)
    yield path
    log.set_tag(None)
    log.close()
    log.setup("pytest")


def lines(path: Path) -> list[re.Match]:
    return [LINE.match(line) for line in path.read_text().splitlines()]


def test_line_shape(maillog):
    log.info("4XSgKk1Bwz: client=localhost[127.0.0.1]")
    (m,) = lines(maillog)
    assert m, maillog.read_text()
    assert m.group(1) == "mx"
    assert m.group(2) == "postfix/smtpd"
    assert m.group(4) == "4XSgKk1Bwz: client=localhost[127.0.0.1]"


def test_severity_prefixes(maillog):
    log.warning("w")
    log.error("e")
    with pytest.raises(SystemExit) as exit_:
        log.fatal("f")
    assert exit_.value.code == 1
    assert [m.group(4) for m in lines(maillog)] == ["warning: w", "error: e", "fatal: f"]


def test_debug_needs_verbose(maillog, tmp_path):
    log.debug("hidden")
    log.setup("smtpd", Config(str(tmp_path), {"maillog_file": str(maillog)}), verbose=1)
    log.debug("shown")
    assert [m.group(4) for m in lines(maillog)] == ["shown"]


def test_syslog_name_from_main_cf(tmp_path):
    path = tmp_path / "maillog"
    log.setup("smtpd", Config(str(tmp_path), {"maillog_file": str(path)},
                              {"syslog_name": "postfix/submission"}))
    try:
        log.info("x")
    finally:
        log.close()
    assert lines(path)[0].group(2) == "postfix/submission/smtpd"


def test_a_line_never_contains_a_newline(maillog):
    log.info("one\ntwo")
    assert [m.group(4) for m in lines(maillog)] == ["one two"]


def test_lines_append_to_an_existing_file(maillog):
    maillog.write_text("earlier\n")
    log.open_destination(str(maillog))
    log.info("later")
    assert maillog.read_text().startswith("earlier\n")


def test_set_tag_replaces_the_whole_tag(maillog):
    log.set_tag("myscript")
    log.info("x")
    assert lines(maillog)[0].group(2) == "myscript"


def test_dev_stdout_is_the_inherited_descriptor(capfd):
    """maillog_file = /dev/stdout writes to descriptor 1 as it was inherited,
    even where reopening it through /proc would fail (a pipe, a socket)."""
    log.open_destination("/dev/stdout")
    try:
        log.info("to standard output")
    finally:
        log.close()
    assert re.search(r"\]: to standard output\n$", capfd.readouterr().out)


class TestPostlog:
    @pytest.fixture
    def confdir(self, tmp_path):
        (tmp_path / "main.cf").write_text(f"maillog_file = {tmp_path}/maillog\n"
                                          "myhostname = mx.example.com\n")
        yield tmp_path
        log.set_tag(None)
        log.close()

    def test_text_is_one_record(self, confdir):
        assert postlog.main(["-c", str(confdir), "hello", "world"]) == 0
        (m,) = lines(confdir / "maillog")
        assert (m.group(2), m.group(4)) == ("postfix/postlog", "hello world")

    def test_priority_and_tag(self, confdir):
        assert postlog.main(["-c", str(confdir), "-i", "-p", "warn", "-t", "backup", "x"]) == 0
        assert postlog.main(["-c", str(confdir), "-p", "fatal", "y"]) == 0
        got = [(m.group(2), m.group(4)) for m in lines(confdir / "maillog")]
        assert got == [("backup", "warning: x"), ("postfix/postlog", "fatal: y")]

    def test_stdin_lines_without_text(self, confdir, monkeypatch):
        monkeypatch.setattr(sys, "stdin", io.StringIO("first\nsecond\n"))
        assert postlog.main(["-c", str(confdir), "-p", "error"]) == 0
        assert [m.group(4) for m in lines(confdir / "maillog")] == ["error: first",
                                                                    "error: second"]

    def test_bad_priority(self, confdir, capsys):
        assert postlog.main(["-c", str(confdir), "-p", "loud", "x"]) == 1
        assert capsys.readouterr().err == "postlog: fatal: unknown priority value: loud\n"

    def test_installed_command_reads_mail_config(self, confdir):
        env = {"MAIL_CONFIG": str(confdir), "PATH": "/usr/bin:/bin"}
        done = subprocess.run([str(ROOT / ".venv" / "bin" / "postlog"), "from the shell"],
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert lines(confdir / "maillog")[0].group(4) == "from the shell"
