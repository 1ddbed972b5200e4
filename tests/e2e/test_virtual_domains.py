"""Virtual domains end to end, after Postfix's VIRTUAL_README: a shared domain with
system accounts, separate domains whose virtual aliases lead to system accounts,
a virtual mailbox domain with mapped owners, relocated users and unknown users.

Deliveries to system accounts need root (local switches to the account), so the
module creates a temporary account with useradd and skips elsewhere. One
instance serves the module; a second smtpd (-o local_recipient_maps=) shows
what an empty local_recipient_maps does.
"""

from __future__ import annotations

import os
import smtplib

import pytest

from tests.support.accounts import can_add_accounts, temporary_account
from tests.support.instance import ROOT, Instance, free_port
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.skipif(not (ROOT / "libexec" / "smtpd").exists(), reason="needs smtpd"),
    pytest.mark.skipif(not can_add_accounts(),
                       reason="deliveries to system accounts need root and useradd"),
]

VMAIL_UID, VMAIL_GID = 5011, 5012


@pytest.fixture(scope="module")
def account(tmp_path_factory):
    home_base = tmp_path_factory.mktemp("homes")
    os.chmod(home_base, 0o755)
    with temporary_account(home_base, "pv") as user:
        yield user


@pytest.fixture(scope="module")
def inst(tmp_path_factory, account):
    tmp = tmp_path_factory.mktemp("vdomains")
    user = account.pw_name
    open_port = free_port()
    inst = Instance(tmp, start=False, main_cf={
        "myhostname": "mx.example.com", "mydomain": "example.com",
        "mydestination": "mx.example.com, example.com",
        "home_mailbox": "Maildir/",
        "alias_maps": "hash:$config_directory/aliases",
        "alias_database": "hash:$config_directory/aliases",
        "virtual_alias_maps": "hash:$config_directory/virtual",
        "virtual_mailbox_domains": "vmail.example",
        "virtual_mailbox_base": str(tmp / "spool" / "mailboxes"),
        "virtual_mailbox_maps": "hash:$config_directory/vmailbox",
        "virtual_uid_maps": "texthash:$config_directory/vuids",
        "virtual_gid_maps": f"static:{VMAIL_GID}",
        "virtual_minimum_uid": "100",
        "relocated_maps": "texthash:$config_directory/relocated",
        "luser_relay": f"{user}",
    }, master_cf_extra=f"127.0.0.1:{open_port} inet n - n - - smtpd\n"
                       "  -o local_recipient_maps=\n")
    files = {
        # VIRTUAL_README: a shared domain (example.com is in mydestination) and
        # separate domains (listed as keys: virtual_alias_domains = $virtual_alias_maps).
        "virtual": (f"info@example.com       {user}\n"
                    "hosted.example         anything\n"
                    "postmaster@hosted.example postmaster\n"
                    f"sales@hosted.example   {user}\n"
                    "catchall.example       anything\n"
                    f"@catchall.example      {user}\n"),
        "vmailbox": "alice@vmail.example    vmail.example/alice/\n",
        "vuids": f"alice@vmail.example    {VMAIL_UID}\n",
        "relocated": ("kdent@ora.com          xx@moxii.com\n"
                      "@oldco.example         newco.example\n"),
        "aliases": f"postmaster: {user}\nroot: {user}\n",
    }
    for name, text in files.items():
        (inst.config_dir / name).write_text(text)
    for name in ("virtual", "vmailbox"):
        done = inst.command("postmap", f"hash:{inst.config_dir / name}")
        assert done.returncode == 0, done.stderr
    inst.open_port = open_port
    with inst:
        inst.start()
        inst.wait_for_port(open_port)
        yield inst


def send(port: int, rcpt: str, subject: str, sender: str = "a@mx.example.com") -> None:
    msg = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail(sender, [rcpt], msg)


def rcpt_reply(port: int, rcpt: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("a@mx.example.com")
        code, text = s.rcpt(rcpt)
        return code, text.decode()


def in_maildir(maildir, token: str, inst, timeout: float = 20):
    new = maildir / "new"

    def holding_token():
        for f in sorted(new.iterdir()) if new.is_dir() else []:
            if token in f.read_text(errors="replace"):
                return f
        return None
    return wait_until(holding_token, timeout, lambda: f"a message with {token} in {maildir}; "
                                                      f"log:\n{inst.log_text()[-4000:]}")


def home_maildir(account):
    from pathlib import Path
    return Path(account.pw_dir) / "Maildir"


@pytest.mark.parametrize("rcpt", ["info@example.com", "sales@hosted.example",
                                  "anyone@catchall.example"])
def test_virtual_aliases_reach_a_system_account(inst, account, rcpt):
    token = f"alias-{rcpt}"
    send(inst.smtp_port, rcpt, token)
    f = in_maildir(home_maildir(account), token, inst)
    assert f.stat().st_uid == account.pw_uid
    assert f"X-Original-To: {rcpt}" in f.read_text()


def test_unknown_user_in_a_separate_alias_domain_is_rejected(inst):
    assert rcpt_reply(inst.smtp_port, "nobody@hosted.example") == (
        550, "5.1.1 <nobody@hosted.example>: Recipient address rejected: "
             "User unknown in virtual alias table")


def test_virtual_mailbox_user_gets_the_mapped_maildir_and_owner(inst):
    send(inst.smtp_port, "alice@vmail.example", "vmail-1")
    f = in_maildir(inst.mailbox_dir / "vmail.example" / "alice", "vmail-1", inst)
    assert (f.stat().st_uid, f.stat().st_gid) == (VMAIL_UID, VMAIL_GID)


def test_unknown_virtual_mailbox_user_is_rejected(inst):
    assert rcpt_reply(inst.smtp_port, "bob@vmail.example") == (
        550, "5.1.1 <bob@vmail.example>: Recipient address rejected: "
             "User unknown in virtual mailbox table")


def test_relocated_users_are_told_where_they_went(inst):
    assert rcpt_reply(inst.smtp_port, "kdent@ora.com") == (
        550, "5.1.6 <kdent@ora.com>: Recipient address rejected: User has moved to xx@moxii.com")
    assert rcpt_reply(inst.smtp_port, "anyone@oldco.example") == (
        550, "5.1.6 <anyone@oldco.example>: Recipient address rejected: "
             "User has moved to newco.example")


def test_relocated_mail_that_got_queued_bounces(inst):
    done = inst.command("sendmail", "-f", "alice@vmail.example", "kdent@ora.com",
                        input=b"Subject: relocated-late\n\nhello\n")
    assert done.returncode == 0, done.stderr
    inst.wait_for_log(r"to=<kdent@ora\.com>, relay=none, .*dsn=5\.1\.6, "
                      r"status=bounced \(User has moved to xx@moxii\.com\)")


def test_unknown_local_users_are_rejected_by_default(inst):
    assert rcpt_reply(inst.smtp_port, "nosuch@example.com") == (
        550, "5.1.1 <nosuch@example.com>: Recipient address rejected: "
             "User unknown in local recipient table")


def test_empty_local_recipient_maps_accepts_and_luser_relay_collects(inst, account):
    send(inst.open_port, "nosuch@example.com", "luser-1")
    f = in_maildir(home_maildir(account), "luser-1", inst)
    assert "X-Original-To: nosuch@example.com" in f.read_text()
