"""Shared by the queue tool tests: a config directory and spool in tmp_path,
and a helper that queues a message with pymaster's own writer."""

from __future__ import annotations

import os

from pymaster.mail import queue, records
from pymaster.util import log
from pymaster.mail.config import load_config


def make_spool(tmp_path, monkeypatch, extra: str = ""):
    """make_spool - TMP/etc/main.cf and TMP/spool; cwd = the spool. The Config."""
    etc, spool = tmp_path / "etc", tmp_path / "spool"
    etc.mkdir()
    (etc / "main.cf").write_text(f"queue_directory = {spool}\n"
                                 f"maillog_file = {tmp_path / 'maillog'}\n{extra}")
    queue.create_layout(str(spool))
    monkeypatch.chdir(spool)            # restored after the test
    monkeypatch.setenv("MAIL_CONFIG", str(etc))
    cfg = load_config(str(etc))
    queue.enter_spool(cfg)
    return cfg


def add_message(queue_name="deferred", sender="alice@example.com",
                rcpts=("bob@example.org",), when=1795900000.0,
                content=b"Subject: hello\nFrom: alice@example.com\n\nHi Bob\n",
                attrs=None) -> str:
    """add_message - a complete queue file in QUEUE_NAME; its queue ID."""
    w = queue.create("incoming")
    w.write_envelope(when, sender, [records.Recipient(r) for r in rcpts], attrs or {})
    w.write_content([content])
    queue_id = w.commit()
    if queue_name != "incoming":
        queue.move(queue_id, "incoming", queue_name)
    return queue_id


def reset_logging() -> None:
    log.close()
