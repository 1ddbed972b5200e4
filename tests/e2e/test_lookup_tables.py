"""End to end: tables built with postmap steer real deliveries, and a rebuilt
table is used without `postfix reload` (as Postfix daemons notice a changed
table), and again after one."""

import smtplib
import time

import pytest

from tests.support.instance import Instance


def send(inst, recipient, subject):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as client:
        client.sendmail("sender@example.org", [recipient],
                        f"Subject: {subject}\n\nbody\n")


@pytest.fixture
def inst(tmp_path):
    config = tmp_path / "etc"
    config.mkdir()
    (config / "virtual").write_text("alias@localhost  first@localhost\n")
    with Instance(tmp_path, main_cf={
            "virtual_alias_maps": "hash:$config_directory/virtual"}, start=False) as inst:
        done = inst.command("postmap", "-c", str(inst.config_dir),
                            f"hash:{inst.config_dir}/virtual")
        assert done.returncode == 0, done.stderr
        inst.start()
        yield inst


def test_postmap_table_routes_and_rebuild_takes_effect(inst):
    send(inst, "alias@localhost", "one")
    first = inst.mailbox_dir / "localhost" / "first"
    assert b"Subject: one" in inst.maildir_messages(first, count=1)[0]

    (inst.config_dir / "virtual").write_text("alias@localhost  second@localhost\n")
    done = inst.command("postmap", f"hash:{inst.config_dir}/virtual")
    assert done.returncode == 0, done.stderr
    time.sleep(1.1)   # services look for a replaced table file at most once a second
    send(inst, "alias@localhost", "two")
    second = inst.mailbox_dir / "localhost" / "second"
    assert b"Subject: two" in inst.maildir_messages(second, count=1)[0]

    (inst.config_dir / "virtual").write_text("alias@localhost  third@localhost\n")
    inst.command("postmap", f"hash:{inst.config_dir}/virtual")
    assert inst.postfix("reload").returncode == 0
    # `postfix reload` only signals the master: the new table is in use once
    # the master has replaced its workers (it logs that first).
    inst.wait_for_log(r"postfix/master\[\d+\]: reload -- version ")
    send(inst, "alias@localhost", "three")
    third = inst.mailbox_dir / "localhost" / "third"
    assert b"Subject: three" in inst.maildir_messages(third, count=1)[0]
