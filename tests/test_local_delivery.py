"""local(8) delivery order and mailboxes: the agent driven with real queue files."""

import os
import re

import pytest

from pymaster.mail import delivery, records
from services.local import LocalAgent
from services.local.context import split_extension
from tests.support.local_helpers import spool, users  # noqa: F401  (fixtures)
from tests.support.local_helpers import (CONTENT, RecordingCleanup, fake_user, make_cfg,
                                         make_spool, queue_request)



def deliver(cfg, sender, rcpts, content=CONTENT, cleanup=None):
    """deliver - run one request through the agent; (status, request)."""
    req = queue_request(sender, rcpts, content)
    agent = LocalAgent(cfg)
    agent.cleanup = cleanup or RecordingCleanup()
    status = delivery.Status(req, cfg)
    agent.deliver(req, status)
    return status, req


def one_message(maildir):
    files = os.listdir(maildir / "new")
    assert len(files) == 1
    return (maildir / "new" / files[0]).read_bytes()


class TestExtensions:
    @pytest.mark.parametrize("local,delims,expected", [
        ("user+foo", "+", ("user", "foo")),
        ("user", "+", ("user", "")),
        ("user+foo+bar", "+", ("user", "foo+bar")),
        ("user-foo", "+-", ("user", "foo")),
        ("+foo", "+", ("+foo", "")),
        ("owner-list", "-", ("owner-list", "")),
        ("list-request", "-", ("list-request", "")),
        ("user+foo", "", ("user+foo", "")),
    ])
    def test_split_extension(self, local, delims, expected):
        assert split_extension(local, delims) == expected


class TestMailbox:
    def test_home_maildir_gets_envelope_headers_and_logs_postfix_line(self, tmp_path, spool,
                                                                      users, capfd):
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
        status, req = deliver(cfg, "a@example.com", [("alice@mx.example.com", "Alice@Example.com")])
        text = one_message(tmp_path / "home" / "alice" / "Maildir")
        assert text == (b"Return-Path: <a@example.com>\nX-Original-To: Alice@Example.com\n"
                        b"Delivered-To: alice@mx.example.com\n" + CONTENT)
        assert status.results[0]["status"] == "sent"
        assert re.search(rf"{req.queue_id}: to=<alice@mx.example.com>, orig_to=<Alice@Example.com>, "
                         r"relay=local, delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, "
                         r"status=sent \(delivered to maildir\)", capfd.readouterr().err)
        assert records.read_message(req.path).recipients[0].done

    def test_home_mbox(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, home_mailbox="Mailbox")
        status, _ = deliver(cfg, "", [("bob@mx.example.com", "")])
        text = (tmp_path / "home" / "bob" / "Mailbox").read_bytes()
        assert text.startswith(b"From MAILER-DAEMON  ")
        assert b"\nReturn-Path: <>\n" in text
        assert b"\n>From me to you\n" in text and text.endswith(b"body\n\n")
        assert status.results[0]["reason"] == "delivered to mailbox"

    def test_spool_mbox(self, tmp_path, spool, users):
        (tmp_path / "mail").mkdir()
        cfg = make_cfg(tmp_path, mail_spool_directory=str(tmp_path / "mail"))
        deliver(cfg, "a@example.com", [("alice@mx.example.com", "")])
        assert (tmp_path / "mail" / "alice").read_bytes().startswith(b"From a@example.com  ")

    def test_extension_is_delivered_to_the_user(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/", recipient_delimiter="+")
        status, _ = deliver(cfg, "a@example.com", [("Alice+Lists@mx.example.com", "")])
        assert b"Delivered-To: Alice+Lists@mx.example.com\n" in \
            one_message(tmp_path / "home" / "alice" / "Maildir")
        assert status.results[0]["status"] == "sent"

    def test_size_limit_bounces(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, home_mailbox="Mailbox", mailbox_size_limit="50")
        status, _ = deliver(cfg, "a@example.com", [("alice@mx.example.com", "")])
        r = status.results[0]
        assert (r["status"], r["dsn"]) == ("bounced", "5.2.2")
        assert r["reason"].startswith(f"cannot update mailbox {tmp_path}/home/alice/Mailbox "
                                      "for user alice. error writing message: File too large")

    def test_mailbox_transport_defers_instead_of_losing_mail(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp:unix:private/dovecot")
        status, req = deliver(cfg, "a@example.com", [("alice@mx.example.com", "")])
        assert status.results[0]["status"] == "deferred"
        assert not records.read_message(req.path).recipients[0].done


class TestUnknownAndLoops:
    def test_unknown_user_bounces_like_postfix(self, tmp_path, spool, users, capfd):
        cfg = make_cfg(tmp_path)
        status, req = deliver(cfg, "a@example.com", [("nosuch@mx.example.com", "")])
        r = status.results[0]
        assert (r["status"], r["dsn"], r["reason"]) == ("bounced", "5.1.1", 'unknown user: "nosuch"')
        assert "status=bounced (unknown user: \"nosuch\")" in capfd.readouterr().err
        assert records.read_message(req.path).recipients[0].done

    def test_luser_relay_forwards_unknown_users(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, luser_relay="catchall+$user@example.org")
        cleanup = RecordingCleanup()
        status, _ = deliver(cfg, "a@example.com", [("nosuch@mx.example.com", "")], cleanup=cleanup)
        header, _ = cleanup.requests[0]
        assert header["recipients"][0]["address"] == "catchall+nosuch@example.org"
        assert status.results[0]["reason"] == "forwarded as FWD1"

    def test_delivered_to_loop_bounces(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
        looped = b"Delivered-To: alice@mx.example.com\n" + CONTENT
        status, _ = deliver(cfg, "a@example.com", [("alice@mx.example.com", "")], looped)
        r = status.results[0]
        assert (r["status"], r["dsn"]) == ("bounced", "5.4.6")
        assert r["reason"] == "mail forwarding loop for alice@mx.example.com"
        assert not (tmp_path / "home" / "alice" / "Maildir").exists()


class TestForward:
    def test_dotforward_with_extension_file_first(self, tmp_path, spool, users):
        home = tmp_path / "home" / "alice"
        (home / ".forward").write_text("alice-plain@example.org\n")
        (home / ".forward+news").write_text("# comment\nnews@example.org, other@example.org\n")
        cfg = make_cfg(tmp_path, recipient_delimiter="+")
        cleanup = RecordingCleanup()
        status, _ = deliver(cfg, "a@example.com", [("alice+news@mx.example.com", "")],
                            cleanup=cleanup)
        header, content = cleanup.requests[0]
        assert [r["address"] for r in header["recipients"]] == ["news@example.org",
                                                                "other@example.org"]
        assert header["recipients"][0]["orig"] == "alice+news@mx.example.com"
        assert header["attrs"]["origin"] == "local"
        assert header["sender"] == "a@example.com"
        assert content == b"Delivered-To: alice+news@mx.example.com\n" + CONTENT
        assert status.results[0]["reason"] == "forwarded as FWD1"

    def test_no_extension_file_without_extension(self, tmp_path, spool, users):
        home = tmp_path / "home" / "alice"
        (home / ".forward").write_text("plain@example.org")
        cfg = make_cfg(tmp_path, recipient_delimiter="+")
        cleanup = RecordingCleanup()
        deliver(cfg, "a@example.com", [("alice@mx.example.com", "")], cleanup=cleanup)
        assert cleanup.requests[0][0]["recipients"][0]["address"] == "plain@example.org"

    def test_backslash_user_keeps_a_copy(self, tmp_path, spool, users):
        home = tmp_path / "home" / "alice"
        (home / ".forward").write_text("\\alice, copy@example.org\n")
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
        cleanup = RecordingCleanup()
        status, _ = deliver(cfg, "a@example.com", [("alice@mx.example.com", "")], cleanup=cleanup)
        one_message(home / "Maildir")
        assert cleanup.requests[0][0]["recipients"][0]["address"] == "copy@example.org"
        assert status.results[0]["status"] == "sent"

    def test_empty_forward_file_means_mailbox(self, tmp_path, spool, users):
        home = tmp_path / "home" / "alice"
        (home / ".forward").write_text("# nothing\n\n")
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
        deliver(cfg, "a@example.com", [("alice@mx.example.com", "")])
        one_message(home / "Maildir")

    def test_cleanup_failure_defers(self, tmp_path, spool, users):
        (tmp_path / "home" / "alice" / ".forward").write_text("x@example.org\n")
        cfg = make_cfg(tmp_path)
        cleanup = RecordingCleanup({"status": "defer", "dsn": "4.3.0", "reason": "queue file write error"})
        status, req = deliver(cfg, "a@example.com", [("alice@mx.example.com", "")], cleanup=cleanup)
        assert status.results[0]["status"] == "deferred"
        assert not records.read_message(req.path).recipients[0].done

    def test_file_in_forward_is_allowed_by_default(self, tmp_path, spool, users):
        out = tmp_path / "home" / "alice" / "saved"
        (tmp_path / "home" / "alice" / ".forward").write_text(f"{out}\n")
        status, _ = deliver(make_cfg(tmp_path), "a@example.com", [("alice@mx.example.com", "")])
        assert status.results[0]["reason"] == f"delivered to file: {out}"
        text = out.read_bytes()
        assert text.startswith(b"From a@example.com  ") and b"\nDelivered-To: alice@mx.example.com\n" in text


class TestVerify:
    """sendmail -bv: local runs its whole order but only says what it would do."""

    def test_mailbox_command_forward_and_unknown_user_are_reported_not_done(
            self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, home_mailbox="Maildir/")
        (tmp_path / "home" / "bob" / ".forward").write_text('carol@example.org, "|cat"\n')
        req = queue_request("a@example.com", [("alice@mx.example.com", ""),
                                              ("bob@mx.example.com", ""),
                                              ("nosuch@mx.example.com", "")])
        req.attrs["trace_flags"] = "verify"
        agent = LocalAgent(cfg)
        cleanup = agent.cleanup = RecordingCleanup()
        status = delivery.Status(req, cfg)
        agent.deliver(req, status)
        assert [(r["status"], r["reason"]) for r in status.results] == [
            ("deliverable", "delivers to maildir"),
            ("deliverable", "forwards to carol@example.org"),
            ("undeliverable", 'unknown user: "nosuch"')]
        assert not (tmp_path / "home" / "alice" / "Maildir").exists()
        assert cleanup.requests == []
