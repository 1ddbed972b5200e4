"""local(8) through the real instance: aliases, .forward, :include:, |command, /file,
Maildir and mbox deliveries to a real system account.

Deliveries to system accounts need root (local switches to the recipient's
uid); these tests create a temporary user with useradd and remove it after,
and skip elsewhere. As any user, the in-tree virtual Maildir delivery runs.
"""

import os
import pwd
import smtplib

import pytest

from tests.support.accounts import account_under, can_add_accounts
from tests.support.instance import Instance, is_root, submit_to_cleanup
from tests.support.wait import wait_until

DOMAIN = "mx.example.com"
needs_root = pytest.mark.skipif(not can_add_accounts(),
                                reason="local delivery to system accounts needs root and useradd")


def submit(inst, rcpts, body=b"Subject: local test\n\nFrom me\nhello\n", sender="a@example.org"):
    """submit - queue a message through the instance's real cleanup service."""
    return submit_to_cleanup(inst, rcpts, body, sender)


def wait_for(path, timeout=20):
    wait_until(lambda: path.exists() and path.stat().st_size, timeout, f"{path} to appear")
    return path


@pytest.fixture
def account(tmp_path):
    """account - a temporary system user whose home is under tmp_path."""
    with account_under(tmp_path, "pm") as user:
        yield user


def local_instance(tmp_path, aliases: str, **main_cf) -> Instance:
    settings = {"myhostname": DOMAIN, "mydestination": DOMAIN,
                "alias_maps": "hash:$config_directory/aliases",
                "alias_database": "hash:$config_directory/aliases"}
    settings.update(main_cf)
    inst = Instance(tmp_path, main_cf=settings, start=False)
    (inst.config_dir / "aliases").write_text(aliases)
    return inst


@needs_root
class TestLocalAsRoot:
    def test_maildir_alias_forward_include_command_and_file(self, tmp_path, account):
        user, home = account.pw_name, account.pw_dir
        drop = tmp_path / "drop"
        drop.mkdir()
        os.chmod(drop, 0o1777)
        members = tmp_path / "members"
        members.write_text(f"# list members\n{user}\n")
        aliases = (f"postmaster: root\n"
                   f"team: {user}, {drop}/archive, \"|/bin/sh -c 'cat > {drop}/piped'\"\n"
                   f"list: :include:{members}\n"
                   f"owner-list: {user}\n")
        inst = local_instance(tmp_path, aliases, home_mailbox="Maildir/")
        with inst:
            inst.start()
            maildir = tmp_path / "home" / user / "Maildir"

            # A plain account: Maildir in its home, written as the user.
            qid = submit(inst, [f"{user}@{DOMAIN}"])
            [msg] = inst.maildir_messages(maildir)
            assert msg.startswith(f"Return-Path: <a@example.org>\nX-Original-To: {user}@{DOMAIN}\n"
                                  f"Delivered-To: {user}@{DOMAIN}\n".encode())
            inst.wait_for_log(rf"postfix/local\[\d+\]: {qid}: to=<{user}@{DOMAIN}>, relay=local, "
                              r"delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(delivered to maildir\)")
            new = maildir / "new"
            assert all(f.stat().st_uid == account.pw_uid for f in new.iterdir())

            # An alias with an address, a file and a command.
            qid = submit(inst, [f"team@{DOMAIN}"])
            inst.wait_for_log(rf"{qid}: to=<team@{DOMAIN}>, relay=local, .*status=sent \(forwarded as \w+\)")
            inst.wait_for_log(rf"{qid}: to=<team@{DOMAIN}>, relay=local, .*"
                              rf"status=sent \(delivered to file: {drop}/archive\)")
            inst.wait_for_log(rf"{qid}: to=<team@{DOMAIN}>, relay=local, .*status=sent \(delivered to command: ")
            assert wait_for(drop / "piped").read_bytes().startswith(b"From a@example.org  ")
            archive = wait_for(drop / "archive").read_bytes()
            assert archive.startswith(b"From a@example.org  ") and b"\n>From me\n" in archive
            # Root-owned aliases run commands and files as default_privs (nobody).
            assert (drop / "archive").stat().st_uid == pwd.getpwnam("nobody").pw_uid
            forwarded = inst.maildir_messages(maildir, count=2)
            assert any(f"Delivered-To: team@{DOMAIN}".encode() in m for m in forwarded)
            inst.wait_for_log(rf"to=<{user}@{DOMAIN}>, orig_to=<team@{DOMAIN}>, relay=local, "
                              r".*status=sent \(delivered to maildir\)")

            # :include: with an owner- alias: the forwarded copy's sender is the owner.
            submit(inst, [f"list@{DOMAIN}"])
            messages = inst.maildir_messages(maildir, count=3)
            assert any(m.startswith(b"Return-Path: <owner-list@") for m in messages)

    def test_dotforward_with_copy_and_command(self, tmp_path, account):
        user, home = account.pw_name, account.pw_dir
        forward = f"\\{user}, \"|/bin/sh -c 'cat > $HOME/fwd.out'\"\n"
        with open(os.path.join(home, ".forward"), "w") as f:
            f.write(forward)
        os.chown(os.path.join(home, ".forward"), account.pw_uid, account.pw_gid)
        inst = local_instance(tmp_path, "postmaster: root\n", home_mailbox="Maildir/")
        with inst:
            inst.start()
            qid = submit(inst, [f"{user}@{DOMAIN}"])
            inst.maildir_messages(tmp_path / "home" / user / "Maildir")
            out = wait_for(tmp_path / "home" / user / "fwd.out")
            assert out.stat().st_uid == account.pw_uid
            inst.wait_for_log(rf"{qid}: to=<{user}@{DOMAIN}>, relay=local, .*status=sent \(delivered to command: ")

    def test_spool_mbox_unknown_user_and_loop(self, tmp_path, account):
        user = account.pw_name
        spool = tmp_path / "mail"
        spool.mkdir()
        os.chmod(spool, 0o1777)
        inst = local_instance(tmp_path, "postmaster: root\n", mail_spool_directory=str(spool))
        with inst:
            inst.start()
            qid = submit(inst, [f"{user}@{DOMAIN}"])
            inst.wait_for_log(rf"{qid}: to=<{user}@{DOMAIN}>, relay=local, .*status=sent \(delivered to mailbox\)")
            mbox = spool / user
            text = mbox.read_bytes()
            assert text.startswith(b"From a@example.org  ") and b"\n>From me\n" in text
            assert mbox.stat().st_uid == account.pw_uid
            assert not (spool / f"{user}.lock").exists()

            qid = submit(inst, [f"nosuchuser@{DOMAIN}"])
            inst.wait_for_log(rf"{qid}: to=<nosuchuser@{DOMAIN}>, relay=local, .*dsn=5\.1\.1, "
                              r'status=bounced \(unknown user: "nosuchuser"\)')

            qid = submit(inst, [f"{user}@{DOMAIN}"],
                         body=f"Delivered-To: {user}@{DOMAIN}\nSubject: loop\n\nx\n".encode())
            inst.wait_for_log(rf"{qid}: to=<{user}@{DOMAIN}>, relay=local, .*dsn=5\.4\.6, "
                              rf"status=bounced \(mail forwarding loop for {user}@{DOMAIN}\)")


def test_in_tree_virtual_maildir_as_any_user(tmp_path):
    """As whatever user runs the tests: SMTP to user@localhost lands in spool/mailboxes."""
    with Instance(tmp_path) as inst:
        inst.mailbox_dir.mkdir(parents=True, exist_ok=True)
        if is_root():
            os.chown(inst.mailbox_dir, 65534, 65534)   # etc/main.cf: virtual_uid_maps = static:65534
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.sendmail("a@example.org", ["someone@localhost"], b"Subject: in-tree\n\nhi\n")
        [msg] = inst.maildir_messages(inst.mailbox_dir / "localhost" / "someone")
        assert b"Subject: in-tree" in msg
