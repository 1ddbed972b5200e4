"""Test helpers for the local and virtual agents: a tmp spool, a real queue file,
a delivery request for it, and a recording stand-in for cleanup's client
(a unit-test seam; the end-to-end tests use the real cleanup)."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.mail.config import Config

CONTENT = b"From: a@example.com\nTo: user@example.com\nSubject: test\n\nFrom me to you\nbody\n"


def make_cfg(config_dir: Path, **values: str) -> Config:
    """make_cfg - a Config with main.cf VALUES and defaults suited to a tmp tree."""
    me = pwd.getpwuid(os.getuid()).pw_name
    base = {"myhostname": "mx.example.com", "mydomain": "example.com",
            "alias_maps": "", "default_privs": me,
            "deliver_lock_attempts": "2", "deliver_lock_delay": "0"}
    base.update(values)
    return Config(str(config_dir), base)


def make_spool(tmp_path: Path, monkeypatch) -> Path:
    """make_spool - a queue directory under TMP_PATH, made the working directory."""
    qdir = tmp_path / "spool"
    queue.create_layout(str(qdir))
    monkeypatch.chdir(qdir)
    return qdir


def queue_request(sender: str, rcpts: list[tuple[str, str]], content: bytes = CONTENT,
                  transport: str = "local") -> delivery.DeliveryRequest:
    """queue_request - write a queue file for RCPTS [(address, orig)] and a request for it."""
    w = queue.create("incoming")
    w.write_envelope(time.time(), sender,
                     [records.Recipient(a, orig=o) for a, o in rcpts], {})
    w.write_content([content])
    qid = w.commit()
    path = queue.path_of("incoming", qid)
    msg = records.read_message(path)
    return delivery.DeliveryRequest.from_header({
        "op": "deliver", "queue_id": qid, "queue_name": "incoming", "path": path,
        "transport": transport, "nexthop": "mx.example.com", "sender": sender,
        "arrival_time": msg.arrival_time, "active_time": msg.arrival_time, "attrs": {},
        "recipients": [{"address": r.address, "orig": r.orig, "offset": r.offset}
                       for r in msg.recipients]})


def fake_user(name: str, home: Path) -> pwd.struct_passwd:
    """fake_user - a passwd entry for NAME with this process's ids and HOME."""
    return pwd.struct_passwd((name, "x", os.getuid(), os.getgid(), name, str(home), "/bin/sh"))


class RecordingCleanup:
    """Answers cleanup `message` requests with a queue id, remembering each."""

    def __init__(self, reply: dict | None = None) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.reply = reply

    def call(self, header: dict, payload=(), timeout=None):
        self.requests.append((header, b"".join(payload)))
        return (self.reply or {"status": "ok", "queue_id": f"FWD{len(self.requests)}"}), []


@pytest.fixture
def spool(tmp_path, monkeypatch):
    return make_spool(tmp_path, monkeypatch)


@pytest.fixture
def users(tmp_path, monkeypatch):
    """users - alice and bob exist, with homes under tmp_path; nobody else does."""
    from services.local import recipient
    table = {}
    for name in ("alice", "bob"):
        home = tmp_path / "home" / name
        home.mkdir(parents=True)
        table[name] = fake_user(name, home)
    monkeypatch.setattr(recipient, "lookup_user", table.get)
    return table
