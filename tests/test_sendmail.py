"""sendmail's own part: options, reading standard input, the maildrop file.

Delivery through pickup and cleanup is in tests/e2e/test_sendmail.py."""

import io
import os

import pytest

from pymaster.mail import queue, records
from pymaster.commands import postdrop, sendmail
from pymaster.mail import maildrop as maildrop_queue
from tests.support.queue_fixtures import make_spool, reset_logging


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


def run(monkeypatch, args, text: bytes):
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text)))
    return sendmail.main(args)


def maildrop():
    return [records.read_message(p) for _, p in sorted(queue.scan("maildrop"))]


class TestOptions:
    def test_common_invocation(self):
        o = sendmail.parse_args(["-t", "-oi", "-f", "<me@example.com>", "-F", "Me", "x@y"])
        assert (o.extract, o.dot_ends, o.sender, o.full_name, o.recipients) == \
            (True, False, "<me@example.com>", "Me", ["x@y"])

    def test_bundled_and_attached_values(self):
        o = sendmail.parse_args(["-ti", "-fme@x", "-NSUCCESS,delay", "-R", "hdrs", "-V", "id1",
                                 "-B8BITMIME", "a@b", "c@d"])
        assert (o.extract, o.dot_ends, o.sender) == (True, False, "me@x")
        assert (o.notify, o.ret, o.envid, o.body) == ("SUCCESS,DELAY", "HDRS", "id1", "8BITMIME")
        assert o.recipients == ["a@b", "c@d"]

    def test_ignored_options_are_accepted(self):
        o = sendmail.parse_args(["-G", "-U", "-m", "-n", "-x", "-o7", "-L", "label", "-h", "3", "a@b"])
        assert o.recipients == ["a@b"] and o.mode == "m"

    def test_modes(self):
        assert sendmail.parse_args(["-bp"]).mode == "p"
        assert sendmail.parse_args(["-bi"]).mode == "i"
        assert sendmail.parse_args(["-I"]).mode == "i"
        q = sendmail.parse_args(["-qRexample.com"])
        assert (q.mode, q.queue_arg) == ("q", "Rexample.com")
        assert sendmail.parse_args(["-q"]).mode == "q"

    def test_bad_notify_is_ignored(self):
        assert sendmail.parse_args(["-N", "never,success", "a@b"]).notify == ""

    def test_unknown_option_is_a_usage_error(self):
        with pytest.raises(sendmail.UsageError, match="invalid option -- 'Z'"):
            sendmail.parse_args(["-tZ"])


class TestInput:
    def test_lone_dot_ends_input_unless_i(self):
        text = b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"
        assert sendmail.read_message(io.BytesIO(text), True) == b"Subject: x\n\nline\n"
        assert sendmail.read_message(io.BytesIO(text), False) == \
            b"Subject: x\n\nline\n.\nafter\n"

    def test_mbox_from_line_dropped_and_final_newline_added(self):
        text = b"From someone Sat Nov 28 20:03:44 2026\nSubject: x\n\nno newline"
        assert sendmail.read_message(io.BytesIO(text), True) == b"Subject: x\n\nno newline\n"

    def test_header_recipients(self):
        content = (b"To: A <a@x>, b@x\nCc: c@x\n (folded) ,d@x\nBcc: e@x\n"
                   b"Subject: s\n\nTo: not@header\n")
        assert sendmail.header_recipients(content) == ["a@x", "b@x", "c@x", "d@x", "e@x"]

    def test_resent_headers_win(self):
        content = b"To: a@x\nResent-To: r@x\n\n"
        assert sendmail.header_recipients(content) == ["r@x"]


class TestSubmission:
    def test_recipients_from_arguments(self, cfg, monkeypatch):
        assert run(monkeypatch, ["-f", "me@example.com", "a@x", "b@x, c@x"],
                   b"Subject: hi\n\nbody\n") == 0
        [msg] = maildrop()
        assert msg.sender == "me@example.com"
        assert [r.address for r in msg.recipients] == ["a@x", "b@x", "c@x"]
        assert msg.attrs["uid"] == str(os.getuid())
        assert msg.attrs["rewrite_context"] == "local"
        assert msg.read_content() == b"Subject: hi\n\nbody\n"
        assert queue.is_complete(msg.path)

    def test_default_sender_is_the_login_name(self, cfg, monkeypatch):
        import pwd
        run(monkeypatch, ["a@x"], b"\n")
        assert maildrop()[0].sender == pwd.getpwuid(os.getuid()).pw_name

    def test_null_sender_and_dsn_options(self, cfg, monkeypatch):
        run(monkeypatch, ["-f", "<>", "-N", "failure", "-R", "full", "-V", "env1", "a@x"], b"\n")
        [msg] = maildrop()
        assert msg.sender == ""
        assert msg.recipients[0].notify == "FAILURE"
        assert (msg.attrs["ret"], msg.attrs["envid"]) == ("FULL", "env1")

    def test_t_marks_the_file_for_extraction(self, cfg, monkeypatch):
        run(monkeypatch, ["-t"], b"To: a@x\nBcc: b@x\n\nbody\n")
        [msg] = maildrop()
        assert msg.attrs["cleanup_flags"] == "extract"
        assert msg.recipients == []
        assert b"Bcc: b@x" in msg.read_content()     # cleanup removes it

    def test_t_without_recipients_is_exit_75(self, cfg, monkeypatch, capsys):
        with pytest.raises(SystemExit) as e:
            run(monkeypatch, ["-t"], b"Subject: nobody\n\nbody\n")
        assert e.value.code == 75
        assert "): No recipient addresses found in message header" \
            in capsys.readouterr().err
        assert maildrop() == []

    def test_no_recipients_at_all_is_exit_75(self, cfg, monkeypatch, capsys):
        with pytest.raises(SystemExit) as e:
            run(monkeypatch, [], b"Subject: x\n\n")
        assert e.value.code == 75


class TestPostdrop:
    def test_postdrop_records_the_real_uid(self, cfg):
        data = records.encode_message(1.0, "me", [records.Recipient("a@x")],
                                      {"uid": "12345"}, b"Subject: s\n\nb\n")
        maildrop_queue.drop(data, 4242, cfg)
        [msg] = maildrop()
        assert msg.attrs["uid"] == "4242"
        assert msg.read_content() == b"Subject: s\n\nb\n"
        assert os.stat(msg.path).st_mode & 0o777 == 0o744

    def test_postdrop_refuses_garbage(self, cfg, monkeypatch, capsys):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"From: x\n\nhello\n")))
        with pytest.raises(SystemExit) as e:
            postdrop.main([])
        assert e.value.code == 65
        assert maildrop() == []


class TestAuthorizedUsers:
    def test_submission_refused_to_unlisted_users(self, tmp_path, monkeypatch, capsys):
        import pwd
        me = pwd.getpwuid(os.getuid()).pw_name
        make_spool(tmp_path, monkeypatch, f"authorized_submit_users = !{me}, static:anyone\n")
        try:
            with pytest.raises(SystemExit) as e:
                run(monkeypatch, ["a@x"], b"\n")
        finally:
            reset_logging()
        assert e.value.code == 77
        assert f"sendmail: fatal: User {me}({os.getuid()}) is not allowed to submit mail" \
            in capsys.readouterr().err
        assert maildrop() == []

    def test_user_lists(self, cfg):
        from pymaster.commands.postqueue import user_allowed
        from pymaster.mail.config import Config
        me = os.getuid()
        import pwd
        name = pwd.getpwuid(me).pw_name
        assert user_allowed(Config("/", {"x": "static:anyone"}), "x", me)
        assert user_allowed(Config("/", {"x": f"nobody, {name}"}), "x", me)
        assert not user_allowed(Config("/", {"x": f"!{name}, static:anyone"}), "x", me)
        assert not user_allowed(Config("/", {"x": ""}), "x", me)


class TestSizeLimit:
    def test_message_over_the_limit_is_refused_at_once(self, tmp_path, monkeypatch, capsys):
        make_spool(tmp_path, monkeypatch, "message_size_limit = 100\n")
        try:
            with pytest.raises(SystemExit) as e:
                run(monkeypatch, ["-f", "me@x", "a@x"], b"Subject: big\n\n" + b"x" * 200 + b"\n")
        finally:
            reset_logging()
        assert e.value.code == 69
        assert f"me@x({os.getuid()}): message file too big" in capsys.readouterr().err
        assert maildrop() == []
