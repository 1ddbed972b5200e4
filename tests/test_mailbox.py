"""pymaster.mail.mailbox and pymaster.util.safeio: writing a message into Maildir and mbox."""

import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from pymaster.mail import mailbox
from pymaster.util import safeio
from pymaster.mail.mailbox import MailboxError

MESSAGE = b"Subject: hi\nFrom: a@example.com\n\nFrom the start\nsecond line\n>From quoted\n"
PREFIX = mailbox.envelope_headers("a@example.com", "orig@example.com", "b@example.com")


class TestSafeWrite:
    def test_write_file_replaces_atomically_and_leaves_no_temp(self, tmp_path):
        path = tmp_path / "table"
        path.write_bytes(b"old")
        safeio.write_file(str(path), b"new contents", mode=0o600)
        assert path.read_bytes() == b"new contents"
        assert os.listdir(tmp_path) == ["table"]

    def test_temp_names_are_unique(self, tmp_path):
        names = {safeio.unique_temp_name(str(tmp_path)) for _ in range(100)}
        assert len(names) == 100


class TestHeaders:
    def test_envelope_headers_in_postfix_order(self):
        assert PREFIX == (b"Return-Path: <a@example.com>\nX-Original-To: orig@example.com\n"
                          b"Delivered-To: b@example.com\n")

    def test_null_sender_return_path(self):
        assert mailbox.envelope_headers("", None, None) == b"Return-Path: <>\n"

    @pytest.mark.parametrize("content,address,expected", [
        (b"Delivered-To: b@example.com\nSubject: x\n\nbody\n", "b@example.com", True),
        (b"delivered-to:   B@Example.COM\n\nbody\n", "b@example.com", True),
        (b"Delivered-To: other@example.com\n\nbody\n", "b@example.com", False),
        (b"Subject: x\n\nDelivered-To: b@example.com\n", "b@example.com", False),  # body only
        (b"Subject: x\n", "b@example.com", False),
    ])
    def test_loop_detection_reads_only_headers(self, content, address, expected):
        assert mailbox.has_delivered_to(content, address) is expected


class TestMaildir:
    def test_delivery_lands_in_new_with_postfix_style_name(self, tmp_path):
        maildir = tmp_path / "Maildir"
        path = mailbox.deliver_maildir(str(maildir), PREFIX, MESSAGE)
        assert os.path.dirname(path) == str(maildir / "new")
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        assert re.fullmatch(r"\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\." + re.escape(host),
                            os.path.basename(path))
        assert open(path, "rb").read() == PREFIX + MESSAGE
        assert os.listdir(maildir / "tmp") == []
        assert sorted(os.listdir(maildir)) == ["cur", "new", "tmp"]

    def test_many_deliveries_never_collide(self, tmp_path):
        paths = {mailbox.deliver_maildir(str(tmp_path / "m"), b"", MESSAGE) for _ in range(50)}
        assert len(paths) == 50
        assert len(os.listdir(tmp_path / "m" / "new")) == 50

    def test_tmp_names_carry_time_pid_and_counter(self):
        a, b = mailbox.maildir_tmp_name(1000.5), mailbox.maildir_tmp_name(1000.5)
        assert a != b
        assert a.startswith(f"1000.P{os.getpid()}_")

    def test_message_without_final_newline_gets_one(self, tmp_path):
        path = mailbox.deliver_maildir(str(tmp_path / "m"), b"", b"Subject: x\n\nno newline")
        assert open(path, "rb").read().endswith(b"no newline\n")

    def test_existing_maildir_costs_no_mkdir(self, tmp_path, monkeypatch):
        mailbox.make_maildir(str(tmp_path / "m"))
        monkeypatch.setattr(os, "makedirs", lambda *a, **k: pytest.fail("mkdir"))
        path = mailbox.deliver_maildir(str(tmp_path / "m"), PREFIX, MESSAGE)
        assert open(path, "rb").read() == PREFIX + MESSAGE

    @pytest.mark.parametrize("lost", ["new", "tmp"])
    def test_a_lost_subdirectory_is_made_again(self, tmp_path, lost):
        mailbox.make_maildir(str(tmp_path / "m"))
        os.rmdir(tmp_path / "m" / lost)
        path = mailbox.deliver_maildir(str(tmp_path / "m"), PREFIX, MESSAGE)
        assert open(path, "rb").read() == PREFIX + MESSAGE
        assert os.listdir(tmp_path / "m" / "tmp") == []

    def test_a_big_message_is_written_whole(self, tmp_path):
        body = b"Subject: big\n\n" + b"z" * 3_000_000
        path = mailbox.deliver_maildir(str(tmp_path / "m"), PREFIX, body)
        assert open(path, "rb").read() == PREFIX + body + b"\n"

    def test_size_limit_bounces_and_leaves_nothing(self, tmp_path):
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_maildir(str(tmp_path / "m"), PREFIX, MESSAGE, size_limit=10)
        assert e.value.dsn == "5.2.2" and not e.value.temporary
        assert "File too large" in e.value.reason
        assert os.listdir(tmp_path / "m" / "new") == []
        assert os.listdir(tmp_path / "m" / "tmp") == []

    @pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
    def test_unwritable_maildir_defers(self, tmp_path):
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_maildir(str(tmp_path / "ro" / "m"), b"", MESSAGE)
        assert e.value.temporary


class TestMbox:
    def test_from_line_shape(self):
        when = time.mktime((2026, 11, 28, 20, 3, 44, 0, 0, -1))
        assert mailbox.from_line("a@example.com", when) == \
            b"From a@example.com  Sat Nov 28 20:03:44 2026\n"
        assert mailbox.from_line("", when).startswith(b"From MAILER-DAEMON  ")

    def test_from_quoting_only_at_line_start(self):
        # Postfix quotes "From " only; an already quoted ">From " stays as it is.
        assert mailbox.quote_from(b"From x\nnot From y\n>From z\nFromage\n") == \
            b">From x\nnot From y\n>From z\nFromage\n"

    def test_append_writes_separator_headers_quoted_body_and_blank_line(self, tmp_path):
        box = tmp_path / "mbox"
        for _ in range(2):
            mailbox.deliver_mbox(str(box), PREFIX, MESSAGE, "a@example.com",
                                 ["fcntl", "dotlock"])
        text = box.read_bytes()
        entries = re.split(rb"(?m)^From a@example\.com  .*\n", text)
        assert entries[0] == b"" and len(entries) == 3
        assert entries[1] == PREFIX + mailbox.quote_from(MESSAGE) + b"\n"
        assert b"\n>From the start\n" in text and b"\n>From quoted\n" in text
        assert not (tmp_path / "mbox.lock").exists()
        assert oct(box.stat().st_mode & 0o777) == "0o600"

    def test_message_without_final_newline_is_completed(self, tmp_path):
        box = tmp_path / "mbox"
        mailbox.deliver_mbox(str(box), b"", b"Subject: x\n\nlast", "", ["fcntl"])
        assert box.read_bytes().endswith(b"\nlast\n\n")

    def test_size_limit_bounces_and_keeps_old_contents(self, tmp_path):
        box = tmp_path / "mbox"
        box.write_bytes(b"From old  Sat Nov 28 20:03:44 2026\n\nold\n\n")
        before = box.read_bytes()
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_mbox(str(box), PREFIX, MESSAGE, "a@b", ["fcntl"], size_limit=100)
        assert e.value.dsn == "5.2.2"
        assert box.read_bytes() == before

    def test_failed_write_is_truncated_back(self, tmp_path, monkeypatch):
        box = tmp_path / "mbox"
        box.write_bytes(b"existing\n")
        real_write = os.write

        def short_then_fail(fd, data):
            if len(data) > 20:
                real_write(fd, bytes(data[:20]))
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr(mailbox.os, "write", short_then_fail)
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_mbox(str(box), PREFIX, MESSAGE, "a@b", ["fcntl"])
        monkeypatch.undo()
        assert e.value.temporary and "No space left on device" in e.value.reason
        assert box.read_bytes() == b"existing\n"

    def test_not_a_regular_file_bounces(self, tmp_path):
        (tmp_path / "dir").mkdir()
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_mbox(str(tmp_path / "dir"), b"", MESSAGE, "", ["fcntl"])
        assert "is not a regular file" in e.value.reason or e.value.temporary

    def test_symlink_is_refused(self, tmp_path):
        (tmp_path / "target").write_bytes(b"")
        (tmp_path / "link").symlink_to(tmp_path / "target")
        with pytest.raises(MailboxError):
            mailbox.deliver_mbox(str(tmp_path / "link"), b"", MESSAGE, "", ["fcntl"])
        assert (tmp_path / "target").read_bytes() == b""


class TestLocks:
    def test_lock_styles_are_validated(self):
        assert mailbox.parse_lock_styles(["fcntl", "dotlock"]) == ["fcntl", "dotlock"]
        with pytest.raises(MailboxError):
            mailbox.parse_lock_styles(["bogus"])
        with pytest.raises(MailboxError):
            mailbox.parse_lock_styles([])

    def test_busy_dotlock_defers(self, tmp_path):
        box = tmp_path / "mbox"
        (tmp_path / "mbox.lock").write_bytes(b"")
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_mbox(str(box), b"", MESSAGE, "", ["dotlock"],
                                 lock_attempts=2, lock_delay=0.01)
        assert e.value.temporary
        assert "unable to create lock file" in e.value.reason
        assert (tmp_path / "mbox.lock").exists()   # someone else's lock stays

    def test_stale_dotlock_is_broken(self, tmp_path):
        box = tmp_path / "mbox"
        lock = tmp_path / "mbox.lock"
        lock.write_bytes(b"")
        old = time.time() - 1000
        os.utime(lock, (old, old))
        mailbox.deliver_mbox(str(box), b"", MESSAGE, "", ["dotlock"], lock_attempts=2,
                             lock_delay=0.01, stale_time=500)
        assert box.exists() and not lock.exists()

    @pytest.mark.parametrize("style", ["fcntl", "flock"])
    def test_kernel_lock_held_by_another_process_defers(self, tmp_path, style):
        box = tmp_path / "mbox"
        box.write_bytes(b"")
        call = "fcntl.lockf(f, fcntl.LOCK_EX)" if style == "fcntl" else "fcntl.flock(f, fcntl.LOCK_EX)"
        holder = subprocess.Popen(
            [sys.executable, "-c",
             f"import fcntl, sys\nf = open({str(box)!r}, 'a')\n{call}\n"
             "print('locked', flush=True)\nsys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert holder.stdout.readline() == b"locked\n"
            with pytest.raises(MailboxError) as e:
                mailbox.deliver_mbox(str(box), b"", MESSAGE, "", [style],
                                     lock_attempts=2, lock_delay=0.01)
            assert e.value.temporary
            assert "unable to lock for exclusive access" in e.value.reason
        finally:
            holder.stdin.close()
            holder.wait()
        assert box.read_bytes() == b""
        mailbox.deliver_mbox(str(box), b"", MESSAGE, "", [style])
        assert box.read_bytes().startswith(b"From MAILER-DAEMON")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
class TestAsUser:
    def test_files_are_created_as_the_user_and_root_comes_back(self):
        base = tempfile.mkdtemp(prefix="pymaster-as-user-")
        try:
            os.chmod(base, 0o777)
            with mailbox.as_user(65534, 65534):
                assert os.geteuid() == 65534
                path = mailbox.deliver_maildir(os.path.join(base, "m"), b"", MESSAGE)
            assert os.geteuid() == 0 and os.getegid() == 0
            assert os.stat(path).st_uid == 65534
        finally:
            shutil.rmtree(base)

    def test_spool_mailbox_is_given_to_its_user(self, tmp_path):
        box = tmp_path / "user"
        mailbox.deliver_mbox(str(box), b"", MESSAGE, "", ["fcntl"], create_owner=(65534, 65534))
        assert (box.stat().st_uid, box.stat().st_gid) == (65534, 65534)

    def test_strict_ownership_refuses_someone_elses_mailbox(self, tmp_path):
        box = tmp_path / "user"
        box.write_bytes(b"")
        os.chown(box, 65534, 65534)
        with pytest.raises(MailboxError) as e:
            mailbox.deliver_mbox(str(box), b"", MESSAGE, "", ["fcntl"], create_owner=(1234, 1234),
                                 strict_owner=True)
        assert e.value.temporary and e.value.reason == f"destination {box} is not owned by recipient"
        assert box.read_bytes() == b""
