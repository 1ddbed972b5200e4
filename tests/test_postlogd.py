"""postlogd (services/postlogd.py) and the postlog side of pymaster.util.log:
the record protocol, sanitising, and following maillog_file after a rename."""

from __future__ import annotations

import errno
import os
import re
import socket

import pytest

from pymaster.util import log
from services import postlogd

LINE = re.compile(r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d (\S+) (\S+)\[(\d+)\]: (.*)$")
GOOD = b"Nov 28 20:03:44 mx postfix/sendmail[1234]: "


@pytest.fixture
def postlog_socket(tmp_path):
    """A bound datagram socket where public/postlog would be, and the writer."""
    (tmp_path / "public").mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "public" / "postlog"))
    yield sock
    sock.close()


class TestSanitise:
    def test_a_well_formed_record_is_one_line_as_sent(self):
        assert postlogd.sanitise(GOOD + b"fatal: no") == GOOD + b"fatal: no\n"

    def test_a_newline_cannot_forge_a_second_line(self):
        line = postlogd.sanitise(GOOD + b"a\nNov 28 20:03:45 mx postfix/smtpd[1]: b\r\n")
        assert line.count(b"\n") == 1 and line.endswith(b"postfix/smtpd[1]: b\n")

    def test_control_characters_become_question_marks(self):
        assert postlogd.sanitise(GOOD + b"a\x00b\x1b[31mc\x7f") == GOOD + b"a?b?[31mc?\n"

    def test_utf8_text_is_kept(self):
        text = GOOD + "to=<jörg@exämple.de>".encode()
        assert postlogd.sanitise(text) == text + b"\n"

    def test_a_long_record_is_cut_between_characters(self):
        record = GOOD + "ä".encode() * log.RECORD_LIMIT
        line = postlogd.sanitise(record)
        assert len(line) <= log.RECORD_LIMIT + 1
        line.decode("utf-8")    # no half character at the end

    def test_a_record_without_the_line_shape_is_kept_behind_a_warning(self, monkeypatch):
        monkeypatch.setattr(log._state, "program", "postlogd")
        line = postlogd.sanitise(b"just text").decode()
        m = LINE.match(line.rstrip("\n"))
        assert m and m.group(2) == "postfix/postlogd"
        assert m.group(4) == "warning: malformed log record: just text"


class TestDrain:
    def test_waiting_records_are_appended_in_order(self, tmp_path, postlog_socket):
        writer = log.MaillogWriter(str(tmp_path / "maillog"))
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        for n in range(3):
            sender.sendto(GOOD + b"n=%d" % n, postlog_socket.getsockname())
        assert postlogd.Postlogd(postlog_socket, writer).drain() == 3
        assert postlogd.Postlogd(postlog_socket, writer).drain() == 0
        writer.close()
        assert (tmp_path / "maillog").read_bytes() == b"".join(
            GOOD + b"n=%d\n" % n for n in range(3))

    def test_an_oversized_datagram_is_cut_not_fatal(self, tmp_path, postlog_socket):
        writer = log.MaillogWriter(str(tmp_path / "maillog"))
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(GOOD + b"x" * 20000, postlog_socket.getsockname())
        postlogd.Postlogd(postlog_socket, writer).drain()
        writer.close()
        text = (tmp_path / "maillog").read_bytes()
        assert text.count(b"\n") == 1 and len(text) == log.RECORD_LIMIT + 1

    def test_after_a_rename_the_next_records_go_to_the_new_file(self, tmp_path,
                                                               postlog_socket):
        path = tmp_path / "maillog"
        writer = log.MaillogWriter(str(path))
        daemon = postlogd.Postlogd(postlog_socket, writer)
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sender.sendto(GOOD + b"before", postlog_socket.getsockname())
        daemon.drain()
        path.rename(tmp_path / "maillog.1")
        writer.checked = 0.0            # a second has passed
        sender.sendto(GOOD + b"after", postlog_socket.getsockname())
        daemon.drain()
        writer.close()
        assert (tmp_path / "maillog.1").read_bytes() == GOOD + b"before\n"
        assert path.read_bytes() == GOOD + b"after\n"


class TestClient:
    """pymaster.util.log when maillog_file is out of reach: through postlogd."""

    def received(self, sock) -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(65536, socket.MSG_DONTWAIT).decode())
            except BlockingIOError:
                return out

    def test_permission_denied_sends_through_the_socket(self, tmp_path, postlog_socket,
                                                        monkeypatch, capsys):
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(log, "MaillogWriter", denied)
        log.setup("sendmail")
        log.open_destination(str(tmp_path / "maillog"), log.PostlogClient(str(tmp_path)))
        log.warning("to postlogd")
        [record] = self.received(postlog_socket)
        m = LINE.match(record)
        assert m and (m.group(2), m.group(4)) == ("postfix/sendmail", "warning: to postlogd")
        assert int(m.group(3)) == os.getpid()
        assert capsys.readouterr().err == ""     # no complaint about the file

    def test_a_rename_we_cannot_follow_sends_through_the_socket(self, tmp_path,
                                                                postlog_socket, monkeypatch):
        path = tmp_path / "maillog"
        log.open_destination(str(path), log.PostlogClient(str(tmp_path)))
        log.info("direct")
        path.rename(tmp_path / "maillog.1")
        monkeypatch.setattr(log._state.writer, "checked", 0.0)

        def denied():
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(log._state.writer, "_open", denied)
        log.info("rotated")
        assert [LINE.match(r).group(4) for r in self.received(postlog_socket)] == ["rotated"]
        assert "direct" in (tmp_path / "maillog.1").read_text()
        assert "rotated" not in (tmp_path / "maillog.1").read_text()

    def test_no_postlogd_keeps_the_line_on_standard_error(self, tmp_path, monkeypatch,
                                                          capsys):
        """The mail system is down: a command's error is not lost silently."""
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(log, "MaillogWriter", denied)
        monkeypatch.setattr(log, "_open_syslog", lambda: setattr(log._state, "use_stderr", True))
        log.setup("postqueue")
        log.open_destination(str(tmp_path / "maillog"), log.PostlogClient(str(tmp_path)))
        log.error("mail system is down")
        assert capsys.readouterr().err.rstrip().endswith(
            "postfix/postqueue[%d]: error: mail system is down" % os.getpid())

    def test_inside_the_chroot_jail_the_socket_is_found_from_the_new_root(self, tmp_path,
                                                                         monkeypatch):
        client = log.PostlogClient(str(tmp_path))
        real_stat = os.stat
        monkeypatch.setattr(log.os, "stat", lambda p, *a, **k: real_stat(tmp_path)
                            if p == "/" else real_stat(p, *a, **k))
        assert client._address() == "/public/postlog"


def test_maillog_file_permissions_is_the_mode_of_a_new_file(tmp_path):
    writer = log.MaillogWriter(str(tmp_path / "maillog"), log.file_mode("0640"))
    writer.close()
    old = os.umask(0)
    os.umask(old)
    assert (tmp_path / "maillog").stat().st_mode & 0o777 == 0o640 & ~old
    assert log.file_mode("rw") == 0o600 and log.file_mode("") == 0o600


class TestCheck:
    """`postfix check` / `set-permissions` and the socket's mode (0666)."""

    def test_a_postlog_socket_others_cannot_write_is_reported_and_repaired(
            self, tmp_path, postlog_socket):
        from pymaster.commands import check
        from pymaster.mail.config import Config
        cfg = Config(str(tmp_path), {"queue_directory": str(tmp_path)})
        path = tmp_path / "public" / "postlog"
        os.chmod(path, 0o600)
        assert check._postlog_socket_problems(cfg) == [
            f"wrong mode 0600 (expected 0666): {path}"]
        check._fix_postlog_socket(cfg)
        assert check._postlog_socket_problems(cfg) == []


class TestHostileOrBrokenInput:
    """The socket is world-writable and disks fill up: postlogd stays bounded and up."""

    def send(self, sock, *records):
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sender:
            for record in records:
                sender.sendto(record, sock.getsockname())

    def test_one_wake_up_reads_a_bounded_batch_of_a_flood(self, tmp_path, postlog_socket,
                                                         monkeypatch):
        # The kernel queues few datagrams (net.unix.max_dgram_qlen): a smaller
        # batch shows the bound as well as 256 would.
        monkeypatch.setattr(postlogd, "BATCH", 3)
        writer = log.MaillogWriter(str(tmp_path / "maillog"))
        self.send(postlog_socket, *[GOOD + b"%d" % n for n in range(5)])
        daemon = postlogd.Postlogd(postlog_socket, writer)
        assert daemon.drain() == 3
        assert daemon.drain() == 2
        writer.close()

    def test_a_forged_second_line_and_escape_sequences_stay_in_one_line(
            self, tmp_path, postlog_socket):
        writer = log.MaillogWriter(str(tmp_path / "maillog"))
        forged = GOOD + b"x\r\nNov 28 20:03:45 mx postfix/smtp[9]: ID: to=<a@b>, status=sent"
        self.send(postlog_socket, forged, GOOD + b"\x1b]0;title\x07")
        postlogd.Postlogd(postlog_socket, writer).drain()
        writer.close()
        lines = (tmp_path / "maillog").read_bytes().split(b"\n")
        assert lines[0].startswith(GOOD) and b"status=sent" in lines[0]
        assert lines[1] == GOOD + b"?]0;title?" and lines[2:] == [b""]

    def test_a_full_disk_drops_records_with_one_warning_and_no_crash(
            self, postlog_socket, monkeypatch, capfd):
        writer = log.MaillogWriter("/dev/full")
        monkeypatch.setattr(log._state, "writer", writer)
        monkeypatch.setattr(log._state, "postlog", None)
        monkeypatch.setattr(log._state, "syslog_sock", None)
        monkeypatch.setattr(log._state, "use_stderr", True)
        monkeypatch.setattr(log._state, "also_stderr", False)
        daemon = postlogd.Postlogd(postlog_socket, writer)
        for n in range(3):
            self.send(postlog_socket, GOOD + b"%d" % n)
            assert daemon.drain() == 1
        err = capfd.readouterr().err
        assert err.count("warning: write /dev/full: No space left on device: "
                         "dropping log records until it can be written again") == 1
        assert daemon.dropped == 3

    def test_after_a_full_disk_the_count_of_dropped_records_is_logged(
            self, tmp_path, postlog_socket, monkeypatch):
        path = tmp_path / "maillog"
        writer = log.MaillogWriter(str(path))
        monkeypatch.setattr(log._state, "writer", writer)
        monkeypatch.setattr(log._state, "postlog", None)
        daemon = postlogd.Postlogd(postlog_socket, writer)
        daemon.dropped = 7              # as after a full disk
        self.send(postlog_socket, GOOD + b"back")
        daemon.drain()
        writer.close()
        text = path.read_text()
        assert text.startswith(GOOD.decode() + "back\n")
        assert "warning: 7 log records were dropped: " in text and daemon.dropped == 0


def test_a_write_cut_short_by_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
    writer = log.MaillogWriter(str(tmp_path / "maillog"))
    real_write = os.write
    calls = []

    def short_then_full(fd, data):
        calls.append(data)
        if len(calls) == 1:
            return real_write(fd, data[:5])
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", short_then_full)
    assert not writer.write(b"first line\n")
    assert writer.error == "No space left on device"
    assert writer.write(b"second line\n")
    writer.close()
    assert (tmp_path / "maillog").read_bytes() == b"first\nsecond line\n"
