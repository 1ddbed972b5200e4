"""local(8) alias expansion: addresses, owner- aliases, |command, /file, :include:, restrictions."""

import os

import pytest

from pymaster.mail import delivery
from services.local import LocalAgent, recipient
from services.local.items import split_items
from tests.support.local_helpers import (CONTENT, RecordingCleanup, fake_user, make_cfg,
                                         make_spool, queue_request)


@pytest.fixture
def spool(tmp_path, monkeypatch):
    return make_spool(tmp_path, monkeypatch)


@pytest.fixture
def users(tmp_path, monkeypatch):
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    table = {"alice": fake_user("alice", home)}
    monkeypatch.setattr(recipient, "lookup_user", table.get)
    return table


def alias_cfg(tmp_path, text, **values):
    """alias_cfg - a Config whose alias_maps is a texthash table holding TEXT."""
    path = tmp_path / "aliases"
    path.write_text(text)
    return make_cfg(tmp_path, alias_maps=f"texthash:{path}", home_mailbox="Maildir/", **values)


def deliver(cfg, address, cleanup=None, content=CONTENT):
    req = queue_request("sender@example.com", [(address, "")], content)
    agent = LocalAgent(cfg)
    agent.cleanup = cleanup or RecordingCleanup()
    status = delivery.Status(req, cfg)
    agent.deliver(req, status)
    return status.results


class TestSplitItems:
    @pytest.mark.parametrize("text,expected", [
        ("a, b@example.com", ["a", "b@example.com"]),
        ('"|/usr/bin/vacation -a me", /var/log/x', ["|/usr/bin/vacation -a me", "/var/log/x"]),
        ("|/bin/cat, :include:/etc/list", ["|/bin/cat", ":include:/etc/list"]),
        ("# comment\nx@y\n\n  z@w , \\alice\n", ["x@y", "z@w", "\\alice"]),
        ("one two", ["one", "two"]),
    ])
    def test_destinations(self, text, expected):
        assert split_items(text) == expected


class TestAliases:
    def test_list_forwards_once_with_delivered_to_and_orig(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, "staff bob@example.org, carol@example.net\n")
        cleanup = RecordingCleanup()
        results = deliver(cfg, "staff@mx.example.com", cleanup)
        assert len(cleanup.requests) == 1
        header, content = cleanup.requests[0]
        assert [(r["address"], r["orig"]) for r in header["recipients"]] == \
            [("bob@example.org", "staff@mx.example.com"), ("carol@example.net", "staff@mx.example.com")]
        assert header["sender"] == "sender@example.com"
        assert content.startswith(b"Delivered-To: staff@mx.example.com\n")
        assert [(r["status"], r["reason"]) for r in results] == [("sent", "forwarded as FWD1")]

    def test_owner_alias_becomes_the_sender(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, "staff bob@example.org\nowner-staff alice\n")
        cleanup = RecordingCleanup()
        deliver(cfg, "staff@mx.example.com", cleanup)
        assert cleanup.requests[0][0]["sender"] == "owner-staff"

    def test_alias_to_itself_is_the_mailbox(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, "alice alice, copy@example.org\n")
        cleanup = RecordingCleanup()
        results = deliver(cfg, "alice@mx.example.com", cleanup)
        assert len(os.listdir(tmp_path / "home" / "alice" / "Maildir" / "new")) == 1
        assert cleanup.requests[0][0]["recipients"][0]["address"] == "copy@example.org"
        assert all(r["status"] == "sent" for r in results)

    def test_extension_falls_back_to_the_base_name(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, "staff bob@example.org\n", recipient_delimiter="+")
        cleanup = RecordingCleanup()
        deliver(cfg, "staff+urgent@mx.example.com", cleanup)
        assert cleanup.requests[0][0]["recipients"][0]["address"] == "bob@example.org"

    def test_command_gets_from_line_headers_and_environment(self, tmp_path, spool, users):
        out = tmp_path / "out"
        cfg = alias_cfg(tmp_path, f'pipe "|cat > {out}; env > {out}.env"\n')
        results = deliver(cfg, "pipe@mx.example.com")
        assert results[0]["status"] == "sent"
        assert results[0]["reason"] == f"delivered to command: cat > {out}; env > {out}.env"
        text = out.read_bytes()
        assert text.startswith(b"From sender@example.com  ")
        assert b"\nReturn-Path: <sender@example.com>\nX-Original-To: pipe@mx.example.com\n" \
               b"Delivered-To: pipe@mx.example.com\n" in text
        assert text.endswith(CONTENT)
        env = dict(line.split("=", 1) for line in (tmp_path / "out.env").read_text().splitlines()
                   if "=" in line)
        assert env["RECIPIENT"] == "pipe@mx.example.com"
        assert env["SENDER"] == "sender@example.com"
        assert (env["LOCAL"], env["DOMAIN"], env["EXTENSION"]) == ("pipe", "mx.example.com", "")
        assert env["PATH"] == "/usr/bin:/bin"

    def test_file_destination(self, tmp_path, spool, users):
        out = tmp_path / "archive"
        cfg = alias_cfg(tmp_path, f"archive {out}\n")
        results = deliver(cfg, "archive@mx.example.com")
        assert results[0]["reason"] == f"delivered to file: {out}"
        assert out.read_bytes().startswith(b"From sender@example.com  ")

    def test_maildir_file_destination(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, f"archive {tmp_path}/arch/\n")
        results = deliver(cfg, "archive@mx.example.com")
        assert results[0]["reason"] == "delivered to maildir"
        assert len(os.listdir(tmp_path / "arch" / "new")) == 1

    def test_include_file(self, tmp_path, spool, users):
        members = tmp_path / "members"
        members.write_text("# the list\nbob@example.org\ncarol@example.net, alice\n")
        cfg = alias_cfg(tmp_path, f"list :include:{members}\n")
        cleanup = RecordingCleanup()
        deliver(cfg, "list@mx.example.com", cleanup)
        assert [r["address"] for r in cleanup.requests[0][0]["recipients"]] == \
            ["bob@example.org", "carol@example.net", "alice"]

    def test_commands_in_include_files_are_restricted_by_default(self, tmp_path, spool, users):
        members = tmp_path / "members"
        members.write_text("|/bin/cat\n")
        cfg = alias_cfg(tmp_path, f"list :include:{members}\n")
        results = deliver(cfg, "list@mx.example.com")
        assert (results[0]["status"], results[0]["dsn"], results[0]["reason"]) == \
            ("bounced", "5.7.1", "mail to command is restricted")

    def test_allow_mail_to_files_restricts_aliases(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, f"archive {tmp_path}/x\n", allow_mail_to_files="forward")
        results = deliver(cfg, "archive@mx.example.com")
        assert results[0]["reason"] == "mail to file is restricted"
        assert not (tmp_path / "x").exists()

    def test_missing_include_file_bounces(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, f"list :include:{tmp_path}/nope\n")
        results = deliver(cfg, "list@mx.example.com")
        assert results[0]["status"] == "bounced"
        assert results[0]["reason"].startswith(f"cannot open include file {tmp_path}/nope")

    def test_relative_include_bounces(self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, "list :include:members\n")
        assert deliver(cfg, "list@mx.example.com")[0]["reason"] == ":include:members uses a relative path"

    def test_unavailable_alias_table_defers(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, alias_maps="fail:aliases", home_mailbox="Maildir/")
        results = deliver(cfg, "alice@mx.example.com")
        assert results[0]["status"] == "deferred"
        assert not (tmp_path / "home" / "alice" / "Maildir").exists()

    def test_one_deferred_destination_defers_the_recipient_and_forwards_nothing(
            self, tmp_path, spool, users):
        cfg = alias_cfg(tmp_path, 'list bob@example.org, "|exit 75;"\n')
        cleanup = RecordingCleanup()
        results = deliver(cfg, "list@mx.example.com", cleanup)
        assert [r["status"] for r in results] == ["deferred"]
        assert results[0]["reason"] == "temporary failure"
        assert cleanup.requests == []


class TestUnprivileged:
    """The in-tree instance runs local as an ordinary user: no switching, same results."""

    @pytest.fixture(autouse=True)
    def not_root(self, monkeypatch):
        if os.geteuid() == 0:
            monkeypatch.setattr(os, "geteuid", lambda: 1000)

    def test_alias_command_and_file_run_as_the_agent_itself(self, tmp_path, spool, users):
        out = tmp_path / "out"
        cfg = alias_cfg(tmp_path, f'pipe "|cat > {out}", {tmp_path}/file\n')
        results = deliver(cfg, "pipe@mx.example.com")
        assert [r["status"] for r in results] == ["sent"]
        assert out.read_bytes().endswith(CONTENT)
        assert (tmp_path / "file").read_bytes().startswith(b"From sender@example.com  ")
