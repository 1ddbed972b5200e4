"""Every command's output piped into `head -1` ends quietly: no traceback,
no BrokenPipeError, as Postfix's commands end (SIGPIPE)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pymaster.commands import postqueue
from tests.support.queue_fixtures import add_message, make_spool, reset_logging

BIN = Path(sys.executable).parent
MESSAGES = 300          # enough output to overflow a pipe's buffer


@pytest.fixture
def spool(tmp_path, monkeypatch):
    cfg = make_spool(tmp_path, monkeypatch)
    for n in range(MESSAGES):
        add_message("deferred", rcpts=(f"rcpt{n}@example.org",))
    yield cfg
    reset_logging()


@pytest.mark.parametrize("argv", [["postqueue", "-j"], ["postqueue", "-p"], ["mailq"],
                                  ["postconf", "-d"], ["sendmail", "-bp"]])
def test_piped_into_head_ends_quietly(spool, argv):
    done = subprocess.run(f"{BIN / argv[0]} {' '.join(argv[1:])} | head -1",
                          shell=True, capture_output=True, timeout=60)
    assert done.stdout.count(b"\n") == 1
    assert done.stderr == b"", done.stderr.decode()


def test_queue_total_counts_message_sizes(spool, capsys):
    postqueue.main(["-p"])
    tail = capsys.readouterr().out.splitlines()[-1]
    # The message sizes (as Postfix's mailq, rounded down), not the files' sizes.
    sizes = subprocess.run([str(BIN / "postqueue"), "-j"], capture_output=True).stdout
    total = sum(json.loads(line)["message_size"] for line in sizes.splitlines())
    assert tail == f"-- {total // 1024} Kbytes in {MESSAGES} Requests."
