"""virtual(8) through the real instance: Maildir and mbox mailboxes, unknown users, ownership."""

import os
import smtplib

import pytest

from tests.support.instance import Instance, is_root, submit_to_cleanup
from tests.support.wait import wait_until

NOBODY = 65534


def send(inst, rcpts, body=b"Subject: virtual test\n\nhello\n", sender="a@example.org"):
    """send - queue a message through the instance's real cleanup service."""
    return submit_to_cleanup(inst, rcpts, body, sender)


def send_smtp(inst, rcpts, body=b"Subject: virtual test\n\nhello\n", sender="a@example.org"):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


def open_base(inst) -> None:
    """open_base - as root, give virtual_mailbox_base to the mapped owner (nobody)."""
    inst.mailbox_dir.mkdir(parents=True, exist_ok=True)
    if is_root():
        os.chown(inst.mailbox_dir, NOBODY, NOBODY)


def wait_for_file(path, timeout=20):
    wait_until(path.exists, timeout, f"{path} to appear")
    return path


@pytest.fixture
def example_com(tmp_path):
    """example_com - an instance with virtual mailboxes for example.com (one Maildir, one mbox)."""
    inst = Instance(tmp_path, start=False, main_cf={
        "virtual_mailbox_domains": "localhost, example.com",
        "virtual_mailbox_maps": "texthash:$config_directory/vmailbox.example, "
                                "regexp:$config_directory/vmailbox",
        "virtual_uid_maps": f"static:{NOBODY}", "virtual_gid_maps": f"static:{NOBODY}",
    })
    (inst.config_dir / "vmailbox.example").write_text(
        "info@example.com   example.com/info/\n"
        "sales@example.com  example.com/sales\n")
    with inst:
        open_base(inst)
        inst.start()
        yield inst


class TestVirtualMailboxes:
    def test_maildir_delivery_with_postfix_log_line(self, example_com):
        inst = example_com
        send(inst, ["info@example.com"])
        [msg] = inst.maildir_messages(inst.mailbox_dir / "example.com" / "info")
        assert msg.startswith(b"Return-Path: <a@example.org>\nX-Original-To: info@example.com\n"
                              b"Delivered-To: info@example.com\n")
        assert b"\nhello\n" in msg
        inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<info@example\.com>, relay=virtual, "
                          r"delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(delivered to maildir\)")

    def test_mbox_delivery(self, example_com):
        inst = example_com
        send(inst, ["sales@example.com"], b"Subject: x\n\nFrom the desk of sales\n")
        inst.wait_for_log(r"to=<sales@example\.com>, relay=virtual, .*status=sent \(delivered to mailbox\)")
        text = (inst.mailbox_dir / "example.com" / "sales").read_bytes()
        assert text.startswith(b"From a@example.org  ")
        assert b"\n>From the desk of sales\n" in text

    @pytest.mark.skipif(not is_root(), reason="virtual_uid_maps apply only when run as root")
    def test_mailboxes_belong_to_the_mapped_uid(self, example_com):
        inst = example_com
        send(inst, ["info@example.com", "sales@example.com"])
        inst.maildir_messages(inst.mailbox_dir / "example.com" / "info")
        inst.wait_for_log(r"to=<sales@example\.com>, relay=virtual, .*status=sent")
        new = inst.mailbox_dir / "example.com" / "info" / "new"
        for path in [*new.iterdir(), inst.mailbox_dir / "example.com" / "sales"]:
            st = path.stat()
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)


def test_in_tree_localhost_maildir(tmp_path):
    """The shipped configuration: any user@localhost gets a Maildir under spool/mailboxes."""
    with Instance(tmp_path) as inst:
        open_base(inst)
        send_smtp(inst, ["joe@localhost"])
        [msg] = inst.maildir_messages(inst.mailbox_dir / "localhost" / "joe")
        assert b"Delivered-To: joe@localhost\n" in msg
        inst.wait_for_log(r"to=<joe@localhost>, relay=virtual, .*status=sent \(delivered to maildir\)")
