"""postfix start warns when the mail system's logs would go nowhere: no
maillog_file and no syslog socket. The socket's absence is the command's
SYSLOG_SOCKET seam pointing at a path that does not exist."""

from __future__ import annotations

import pytest

from pymaster.commands import postfix
from tests.support.instance import Instance


def test_start_warns_without_maillog_file_or_syslog_socket(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(postfix, "SYSLOG_SOCKET", str(tmp_path / "no-such-socket"))
    inst = Instance(tmp_path, main_cf={"maillog_file": ""}, start=False)
    monkeypatch.setenv("MAIL_CONFIG", str(inst.config_dir))
    try:
        with pytest.raises(SystemExit) as done:
            postfix.main(["-c", str(inst.config_dir), "start"])
        assert done.value.code == 0
    finally:
        inst.postfix("stop")
    err = capsys.readouterr().err
    assert (f"postfix/postfix-script: warning: logging is not configured: maillog_file is "
            f"empty and there is no {tmp_path}/no-such-socket socket") in err
    assert "postfix/postfix-script: starting the Postfix mail system" in err


def test_no_warning_with_maillog_file(tmp_path):
    inst = Instance(tmp_path, start=False)
    try:
        started = inst.postfix("start")
    finally:
        inst.stop()
    assert started.returncode == 0
    assert b"logging is not configured" not in started.stderr
