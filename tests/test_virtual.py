"""virtual(8): mailbox lookups, Maildir and mbox, unknown users, loops, uid/gid maps."""

import os
import re
import shutil
import tempfile

import pytest
from pathlib import Path

from pymaster.mail import delivery, records
from services.virtual import VirtualAgent
from tests.support.local_helpers import CONTENT, make_cfg, make_spool, queue_request


@pytest.fixture
def base(tmp_path, monkeypatch):
    """base - virtual_mailbox_base; as root one that the mapped uid 5000 can write."""
    make_spool(tmp_path, monkeypatch)
    (tmp_path / "vmailbox").write_text(
        "info@example.com   example.com/info/\n"
        "sales@example.com  example.com/sales\n"
        "@example.net       example.net/catchall/\n")
    vbase = tempfile.mkdtemp(prefix="pymaster-vmail-")
    os.chmod(vbase, 0o777)
    (tmp_path / "base").write_text(vbase)
    yield Path(vbase)
    shutil.rmtree(vbase)


def vcfg(tmp_path, **values):
    settings = {"virtual_mailbox_domains": "example.com, example.net",
                "virtual_mailbox_base": (tmp_path / "base").read_text(),
                "virtual_mailbox_maps": f"texthash:{tmp_path}/vmailbox",
                "virtual_uid_maps": "static:5000", "virtual_gid_maps": "static:5000"}
    settings.update(values)
    return make_cfg(tmp_path, **settings)


def deliver(cfg, rcpts, content=CONTENT):
    req = queue_request("sender@example.org", rcpts, content, transport="virtual")
    status = delivery.Status(req, cfg)
    VirtualAgent(cfg).deliver(req, status)
    return status.results, req


def only_file(maildir):
    files = os.listdir(maildir / "new")
    assert len(files) == 1
    return (maildir / "new" / files[0]).read_bytes()


class TestUnprivileged:
    @pytest.fixture(autouse=True)
    def not_root(self, monkeypatch):
        """not_root - the agent as the in-tree instance runs it, whoever runs the tests."""
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def test_uid_maps_are_ignored_and_said_once(self, tmp_path, base, capfd):
        cfg = vcfg(tmp_path, virtual_uid_maps="static:1", virtual_gid_maps="")
        results, _ = deliver(cfg, [("info@example.com", ""), ("sales@example.com", "")])
        assert [r["status"] for r in results] == ["sent", "sent"]
        assert capfd.readouterr().err.count("not running as root") == 1

    def test_maildir_delivery(self, tmp_path, base, capfd):
        results, req = deliver(vcfg(tmp_path), [("info@example.com", "alias@example.org")])
        assert only_file(base / "example.com" / "info") == (
            b"Return-Path: <sender@example.org>\nX-Original-To: alias@example.org\n"
            b"Delivered-To: info@example.com\n" + CONTENT)
        assert re.search(r"to=<info@example.com>, orig_to=<alias@example.org>, relay=virtual, "
                         r".*dsn=2\.0\.0, status=sent \(delivered to maildir\)", capfd.readouterr().err)
        assert records.read_message(req.path).recipients[0].done


def test_mbox_and_catchall_in_one_request(tmp_path, base):
    results, _ = deliver(vcfg(tmp_path), [("sales@example.com", ""), ("anyone@example.net", "")])
    assert [r["reason"] for r in results] == ["delivered to mailbox", "delivered to maildir"]
    assert (base / "example.com" / "sales").read_bytes().startswith(b"From sender@example.org  ")
    only_file(base / "example.net" / "catchall")


def test_unknown_user_bounces(tmp_path, base):
    results, _ = deliver(vcfg(tmp_path), [("nobody@example.com", "")])
    assert (results[0]["status"], results[0]["dsn"], results[0]["reason"]) == \
        ("bounced", "5.1.1", 'unknown user: "nobody@example.com"')


def test_loop_bounces(tmp_path, base):
    looped = b"Delivered-To: info@example.com\n" + CONTENT
    results, _ = deliver(vcfg(tmp_path), [("info@example.com", "")], looped)
    assert results[0]["reason"] == "mail forwarding loop for info@example.com"
    assert not (base / "example.com" / "info").exists()


def test_unreadable_table_defers(tmp_path, base):
    results, req = deliver(vcfg(tmp_path, virtual_mailbox_maps="fail:vmailbox"),
                           [("info@example.com", "")])
    assert results[0]["status"] == "deferred"
    assert not records.read_message(req.path).recipients[0].done


def test_mailbox_limit_bounces(tmp_path, base):
    results, _ = deliver(vcfg(tmp_path, virtual_mailbox_limit="20"), [("info@example.com", "")])
    assert (results[0]["status"], results[0]["dsn"]) == ("bounced", "5.2.2")
    assert results[0]["reason"].startswith("maildir delivery failed: create maildir file")


@pytest.mark.skipif(os.geteuid() != 0, reason="uid/gid maps apply only as root")
class TestAsRoot:
    def test_files_belong_to_the_mapped_uid_and_gid(self, tmp_path, base):
        # uid 5000 cannot traverse pytest's root-only directories: a base of its own.
        vbase = tempfile.mkdtemp(prefix="pymaster-vmail-")
        try:
            os.chmod(vbase, 0o755)
            os.chown(vbase, 5000, 5001)
            cfg = vcfg(tmp_path, virtual_mailbox_base=vbase, virtual_uid_maps="static:5000",
                       virtual_gid_maps="static:5001")
            results, _ = deliver(cfg, [("info@example.com", ""), ("sales@example.com", "")])
            assert [r["status"] for r in results] == ["sent", "sent"]
            new = os.path.join(vbase, "example.com", "info", "new")
            st = os.stat(os.path.join(new, os.listdir(new)[0]))
            assert (st.st_uid, st.st_gid) == (5000, 5001)
            st = os.stat(os.path.join(vbase, "example.com", "sales"))
            assert (st.st_uid, st.st_gid) == (5000, 5001)
            assert os.geteuid() == 0
        finally:
            shutil.rmtree(vbase)

    def test_uid_below_minimum_defers_as_configuration_error(self, tmp_path, base):
        results, _ = deliver(vcfg(tmp_path, virtual_uid_maps="static:10"), [("info@example.com", "")])
        assert (results[0]["status"], results[0]["dsn"], results[0]["reason"]) == \
            ("deferred", "4.3.5", "mail system configuration error")

    def test_missing_uid_defers(self, tmp_path, base):
        results, _ = deliver(vcfg(tmp_path, virtual_uid_maps=f"texthash:{tmp_path}/vmailbox"),
                             [("info@example.com", "")])
        assert results[0]["status"] == "deferred"
