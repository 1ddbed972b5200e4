"""sendmail end to end: maildrop -> pickup -> cleanup -> qmgr -> virtual Maildir.

Everything is the real thing: .venv/bin/sendmail, the master, pickup,
cleanup, qmgr and the virtual agent; the tests read the delivered Maildir,
the log and the queue.
"""

from __future__ import annotations

import os
import pwd
import re

import pytest

from pymaster.mail import queue as queue_mod
from pymaster.mail import records
from tests.support.instance import ROOT, Instance

pytestmark = pytest.mark.skipif(
    not (ROOT / "etc" / "master.cf").exists() or not (ROOT / "libexec" / "pickup").exists()
    or not (ROOT / "libexec" / "virtual").exists(),
    reason="needs the shipped master.cf and the pickup and virtual services")


VIRTUAL_UID = os.getuid() or 5000
VIRTUAL_GID = os.getgid() or 5000


def virtual_settings(tmp) -> dict[str, str]:
    # As virtual(8) requires, the mailbox base belongs to the mailbox owner.
    base = tmp / "spool" / "mailboxes"
    base.mkdir(parents=True, exist_ok=True)
    os.chown(base, VIRTUAL_UID, VIRTUAL_GID)
    return {"myhostname": "mx.example.com", "mydomain": "example.com",
            "virtual_mailbox_domains": "v.example",
            "virtual_mailbox_base": str(base),
            "virtual_mailbox_maps": "inline:{ user@v.example=user/, other@v.example=other/ }",
            "virtual_uid_maps": f"static:{VIRTUAL_UID}",
            "virtual_gid_maps": f"static:{VIRTUAL_GID}",
            "virtual_minimum_uid": "0"}


@pytest.fixture
def inst(tmp_path):
    with Instance(tmp_path, main_cf=virtual_settings(tmp_path)) as instance:
        yield instance


def head_and_body(raw: bytes) -> tuple[str, str]:
    head, _, body = raw.decode(errors="replace").partition("\n\n")
    return head, body


def test_recipients_as_arguments(inst):
    done = inst.command("sendmail", "-f", "sender@example.com", "user@v.example",
                        input=b"Subject: args\n\nhello from sendmail\n")
    assert done.returncode == 0, done.stderr
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    head, body = head_and_body(raw)
    assert "Subject: args" in head
    assert body.strip() == "hello from sendmail"
    assert re.search(r"(?m)^Return-Path: <sender@example\.com>", head)
    inst.wait_for_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<sender@example\.com>")


def test_t_takes_recipients_from_headers_and_drops_bcc(inst):
    msg = (b"From: me@example.com\nTo: user@v.example\nBcc: other@v.example\n"
           b"Subject: dash t\n\nbody\n.\nnot part of the message\n")
    done = inst.command("sendmail", "-t", "-f", "me@example.com", input=msg)
    assert done.returncode == 0, done.stderr
    [to_user] = inst.maildir_messages(inst.mailbox_dir / "user")
    [to_other] = inst.maildir_messages(inst.mailbox_dir / "other")
    for raw in (to_user, to_other):
        head, body = head_and_body(raw)
        assert "Bcc:" not in head
        assert body == "body\n"


def test_t_without_recipients_fails_with_75(inst):
    done = inst.command("sendmail", "-t", input=b"Subject: nobody\n\nbody\n")
    assert done.returncode == 75
    assert b"): No recipient addresses found in message header" in done.stderr


def test_mail_submitted_while_down_waits_and_is_delivered_after_start(tmp_path):
    inst = Instance(tmp_path, main_cf=virtual_settings(tmp_path), start=False)
    queue_mod.create_layout(str(inst.queue_dir))
    done = inst.command("sendmail", "-f", "early@example.com", "user@v.example",
                        input=b"Subject: while down\n\nwaited\n")
    assert done.returncode == 0, done.stderr
    assert len(os.listdir(inst.queue_dir / "maildrop")) == 1
    listing = inst.command("mailq")
    assert b"early@example.com" in listing.stdout
    with inst:
        inst.start()
        [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
        assert "Subject: while down" in head_and_body(raw)[0]
        inst.wait_for_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<early@example\.com>")
    assert os.listdir(inst.queue_dir / "maildrop") == []


def test_postsuper_requeue_goes_through_pickup_again(inst, monkeypatch):
    # A message on hold, as cleanup would have left it (owned by mail_owner).
    monkeypatch.chdir(inst.queue_dir)
    w = queue_mod.create("hold")
    w.write_envelope(1795900000.0, "held@example.com",
                     [records.Recipient("user@v.example")], {"origin": "smtpd"})
    w.write_content([b"Subject: held\n\nrequeued\n"])
    held = w.commit()
    if os.geteuid() == 0:
        os.chown(w.path, pwd.getpwnam("postfix").pw_uid, -1)
    assert held.encode() in inst.command("postqueue", "-p").stdout
    done = inst.command("postsuper", "-r", "ALL")
    assert b"postsuper: Requeued: 1 message" in done.stderr
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    assert "Subject: held" in head_and_body(raw)[0]
    inst.wait_for_log(rf"postfix/postsuper\[\d+\]: {held}: requeued")
    inst.wait_for_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<held@example\.com>")


def test_bs_speaks_smtp_on_stdin_and_stdout(inst):
    dialogue = (b"HELO local.example\r\nMAIL FROM:<bs@example.com>\r\n"
                b"RCPT TO:<user@v.example>\r\nDATA\r\nSubject: bs\r\n\r\nvia -bs\r\n.\r\n"
                b"QUIT\r\n")
    done = inst.command("sendmail", "-bs", input=dialogue)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.decode().splitlines()
    assert replies[0].startswith("220 ")
    assert any(r.startswith("250 2.0.0 Ok: queued as ") for r in replies)
    assert replies[-1].startswith("221 ")
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    head, body = head_and_body(raw)
    assert "Subject: bs" in head and body.strip() == "via -bs"


def test_bp_and_mailq_list_the_queue(inst):
    for args in (("mailq",), ("sendmail", "-bp")):
        done = inst.command(*args)
        assert done.returncode == 0
        assert done.stdout == b"Mail queue is empty\n"


def test_postqueue_flush_while_up_and_site_flush(inst):
    assert inst.command("postqueue", "-f").returncode == 0
    # relay_domains (so fast_flush_domains) is empty: the flush service says no.
    done = inst.command("postqueue", "-s", "example.com")
    assert done.returncode == 69
    assert b'Flush service is not configured for destination "example.com"' in done.stderr
    assert inst.command("sendmail", "-q").returncode == 0
