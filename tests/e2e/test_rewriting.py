"""Address rewriting end to end: canonical maps, masquerading and automatic copies,
as the queue file (postcat -q) and the delivered messages show them.

One instance serves the module. smtpd on the shipped port is a local client
(127.0.0.1 is an interface address: local_header_rewrite_clients =
permit_inet_interfaces), so headers are rewritten; a second smtpd with an
empty local_header_rewrite_clients shows what a remote client gets.
"""

from __future__ import annotations

import os
import smtplib

import pytest

from tests.support.instance import ROOT, Instance, free_port

pytestmark = pytest.mark.skipif(not (ROOT / "libexec" / "smtpd").exists(),
                                reason="needs the smtpd service")

HEADER_CHECKS = "/^Subject: hold-me/ HOLD kept for postcat\n"


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rewriting")
    remote_port = free_port()
    base = tmp / "spool" / "mailboxes"
    inst = Instance(tmp, start=False, main_cf={
        "myhostname": "mx.example.com", "mydomain": "example.com", "myorigin": "example.com",
        "virtual_mailbox_domains": "v.example",
        "virtual_mailbox_base": str(base),
        "virtual_mailbox_maps": "regexp:$config_directory/vmailbox.v",
        "virtual_uid_maps": f"static:{os.getuid() or 5000}",
        "virtual_gid_maps": f"static:{os.getgid() or 5000}",
        "virtual_minimum_uid": "0",
        "canonical_maps": "hash:$config_directory/canonical",
        "masquerade_domains": "!keep.example.com, example.com",
        "masquerade_exceptions": "root",
        "always_bcc": "archive@v.example",
        "sender_bcc_maps": "inline:{ boss@example.com=boss-copy@v.example }",
        "recipient_bcc_maps": "inline:{ sales@v.example=sales-copy@v.example }",
        "header_checks": "regexp:$config_directory/header_checks",
    }, master_cf_extra=f"127.0.0.1:{remote_port} inet n - n - - smtpd\n"
                       "  -o local_header_rewrite_clients=\n")
    (inst.config_dir / "vmailbox.v").write_text("/^(.+)@v\\.example$/ v.example/$1/\n")
    (inst.config_dir / "canonical").write_text("fwx@example.com kdent@example.com\n")
    (inst.config_dir / "header_checks").write_text(HEADER_CHECKS)
    done = inst.command("postmap", f"hash:{inst.config_dir / 'canonical'}")
    assert done.returncode == 0, done.stderr
    inst.remote_port = remote_port
    with inst:
        inst.start()
        inst.wait_for_port(remote_port)
        yield inst


def send(port: int, sender: str, rcpts: list[str], headers: str, body: str = "hello\n") -> None:
    msg = headers.replace("\n", "\r\n") + "\r\n" + body.replace("\n", "\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, rcpts, msg)


def delivered(inst, user: str, token: str, timeout: float = 20) -> str:
    """delivered - the message holding TOKEN in user@v.example's Maildir."""
    return inst.maildir_message_with(inst.mailbox_dir / "v.example" / user, token, timeout)


def head(text: str) -> str:
    return text.partition("\n\n")[0]


def test_canonical_maps_rewrite_the_envelope_and_header_senders(inst):
    send(inst.smtp_port, "fwx@example.com", ["user@v.example"],
         "From: Fred <fwx@example.com>\nReply-To: fwx@example.com\n"
         "To: user@v.example\nSubject: canonical-1\n")
    text = delivered(inst, "user", "canonical-1")
    assert "Return-Path: <kdent@example.com>" in text
    assert "From: Fred <kdent@example.com>" in head(text)
    assert "Reply-To: kdent@example.com" in head(text)


def test_a_remote_client_keeps_its_headers_but_not_its_envelope(inst):
    send(inst.remote_port, "fwx@example.com", ["user@v.example"],
         "From: fwx@example.com\nTo: user@v.example\nSubject: canonical-2\n")
    text = delivered(inst, "user", "canonical-2")
    assert "Return-Path: <kdent@example.com>" in text
    assert "From: fwx@example.com" in head(text)


def test_postcat_shows_the_rewritten_envelope(inst):
    send(inst.smtp_port, "fwx@example.com", ["user@v.example"],
         "From: fwx@example.com\nTo: user@v.example\nSubject: hold-me\n")
    m = inst.wait_for_log(r"(\w+): hold: header Subject: hold-me from localhost\[127\.0\.0\.1\]")
    out = inst.command("postcat", "-q", m.group(1))
    text = out.stdout.decode(errors="replace")
    assert out.returncode == 0, out.stderr
    assert "sender: kdent@example.com" in text
    assert "From: kdent@example.com" in text


def test_masquerading_hides_host_names_except_for_listed_users_and_domains(inst):
    send(inst.smtp_port, "joe@host.example.com", ["user@v.example"],
         "From: joe@host.example.com\nCc: root@host.example.com, ann@x.keep.example.com\n"
         "To: user@v.example\nSubject: masq-1\n")
    text = delivered(inst, "user", "masq-1")
    assert "Return-Path: <joe@example.com>" in text
    assert "From: joe@example.com" in head(text)
    assert "Cc: root@host.example.com, ann@x.keep.example.com" in head(text)


def test_bcc_maps_and_always_bcc_deliver_copies(inst):
    send(inst.smtp_port, "boss@example.com", ["sales@v.example"],
         "From: boss@example.com\nTo: sales@v.example\nSubject: bcc-1\n")
    for user in ("sales", "sales-copy", "boss-copy", "archive"):
        text = delivered(inst, user, "bcc-1")
        visible = [ln for ln in head(text).splitlines() if ln.startswith(("To:", "Cc:", "Bcc:"))]
        assert visible == ["To: sales@v.example"]      # the copies stay blind
