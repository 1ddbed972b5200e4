"""cleanup end to end: through the real master, smtpd or sendmail/pickup, to a Maildir.

Every message here is delivered by the virtual agent into a Maildir under
the instance's mailbox directory, so the tests read what cleanup wrote as
the recipient sees it, and the log lines cleanup wrote for it.
"""

from __future__ import annotations

import os
import re
import smtplib

import pytest

from tests.support.instance import ROOT, Instance

pytestmark = pytest.mark.skipif(
    not (ROOT / "etc" / "master.cf").exists() or not (ROOT / "libexec" / "smtpd").exists(),
    reason="needs the shipped master.cf and the smtpd service")


def virtual_settings(inst_tmp) -> dict[str, str]:
    base = inst_tmp / "spool" / "mailboxes"
    return {"myhostname": "mx.example.com", "mydomain": "example.com",
            "virtual_mailbox_domains": "v.example",
            "virtual_mailbox_base": str(base),
            "virtual_mailbox_maps": "inline:{ user@v.example=user/, other@v.example=other/ }",
            "virtual_uid_maps": f"static:{os.getuid() or 5000}",
            "virtual_gid_maps": f"static:{os.getgid() or 5000}",
            "virtual_minimum_uid": "0"}


@pytest.fixture
def inst(tmp_path):
    with Instance(tmp_path, main_cf=virtual_settings(tmp_path)) as instance:
        yield instance


def split_message(raw: bytes) -> tuple[str, str]:
    head, _, body = raw.decode(errors="replace").replace("\r\n", "\n").partition("\n\n")
    return head, body


def test_smtp_message_id_is_logged_with_the_smtpd_queue_id(inst):
    msg = ("From: a@example.org\r\nTo: user@v.example\r\nSubject: e2e\r\n"
           "Message-ID: <e2e-1@example.org>\r\n\r\nhello\r\n")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("a@example.org", ["user@v.example"], msg)
    m = inst.wait_for_log(r"postfix/cleanup\[\d+\]: (\w+): message-id=<e2e-1@example\.org>$")
    queue_id = m.group(1)
    inst.wait_for_log(rf"postfix/smtpd\[\d+\]: {queue_id}: client=")
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    head, body = split_message(raw)
    assert "Subject: e2e" in head and body.strip() == "hello"


def test_return_path_from_the_client_is_replaced(inst):
    msg = ("Return-Path: <forged@example.com>\r\nSubject: rp\r\n\r\nx\r\n")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("real@example.org", ["user@v.example"], msg)
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    head, _ = split_message(raw)
    assert "forged@example.com" not in head
    assert "Return-Path: <real@example.org>" in head


def test_duplicate_recipients_are_delivered_once(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("a@example.org", ["user@v.example", "user@v.example", "other@v.example"],
                   "Subject: dup\r\n\r\nx\r\n")
    inst.maildir_messages(inst.mailbox_dir / "other")
    inst.wait_for_log(r"to=<user@v\.example>.*status=sent")
    assert len(list((inst.mailbox_dir / "user" / "new").iterdir())) == 1


def test_too_many_hops_is_refused_at_end_of_data(tmp_path):
    settings = virtual_settings(tmp_path)
    settings["hopcount_limit"] = "3"
    with Instance(tmp_path, main_cf=settings) as inst:
        msg = "Received: by a\r\nReceived: by b\r\nReceived: by c\r\nSubject: loop\r\n\r\nx\r\n"
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            with pytest.raises(smtplib.SMTPDataError) as exc:
                s.sendmail("a@example.org", ["user@v.example"], msg)
        assert exc.value.smtp_code == 554
        assert b"5.4.6" in exc.value.smtp_error and b"too many hops" in exc.value.smtp_error
        inst.wait_for_log(r"warning: \w+: message rejected: hopcount exceeded")


@pytest.mark.skipif(not (ROOT / "libexec" / "pickup").exists(), reason="needs pickup")
def test_sendmail_submission_gets_missing_headers(inst):
    done = inst.command("sendmail", "-t", "-f", "joe@example.com",
                        input="To: user@v.example\nBcc: other@v.example\nSubject: local\n\nbody\n")
    assert done.returncode == 0, done.stderr
    m = inst.wait_for_log(r"postfix/cleanup\[\d+\]: (\w+): message-id=<(\w+@mx\.example\.com)>")
    queue_id, message_id = m.group(1), m.group(2)
    assert queue_id in message_id
    [raw] = inst.maildir_messages(inst.mailbox_dir / "user")
    head, body = split_message(raw)
    assert f"Message-Id: <{message_id}>" in head
    assert re.search(r"^Date: \w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", head, re.M)
    assert re.search(r"^From: .*joe@example\.com", head, re.M)
    assert "Bcc:" not in head and body == "body\n"
    [blind] = inst.maildir_messages(inst.mailbox_dir / "other")
    assert b"Bcc:" not in blind
