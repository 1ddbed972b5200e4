"""postcat: the sections and lines Postfix's postcat prints."""

import os
import time

import pytest

from pymaster import queue, records
from pymaster.commands import postcat
from tests.queue_fixtures import add_message, make_spool, reset_logging

CONTENT = b"Subject: hello\nFrom: alice@example.com\n continued\n\nHi Bob\nSecond line\n"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


def cat(capsys, *args):
    status = postcat.main(list(args))
    return status, capsys.readouterr().out


def message(**kw):
    kw.setdefault("content", CONTENT)
    kw.setdefault("attrs", {"rewrite_context": "local"})
    return add_message("deferred", **kw)


class TestWholeFile:
    def test_sections_and_envelope_lines(self, cfg, capsys):
        qid = message(when=1795900000.0)
        label = queue.path_of("deferred", qid)
        status, out = cat(capsys, "-q", qid)
        assert status == 0
        lines = out.splitlines()
        assert lines[0] == f"*** ENVELOPE RECORDS {label} ***"
        assert lines[1].startswith("message_size: ") and str(len(CONTENT)) in lines[1]
        assert lines[2] == "message_arrival_time: " + time.asctime(time.localtime(1795900000))
        assert "named_attribute: rewrite_context=local" in lines
        assert "sender: alice@example.com" in lines
        assert "recipient: bob@example.org" in lines
        i = lines.index(f"*** MESSAGE CONTENTS {label} ***")
        assert lines[i + 1:i + 7] == CONTENT.decode().splitlines()
        assert lines[-2:] == [f"*** HEADER EXTRACTED {label} ***",
                              f"*** MESSAGE FILE END {label} ***"]

    def test_done_and_original_recipients(self, cfg, capsys):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [records.Recipient("x@y", orig="X@alias"),
                                      records.Recipient("z@w")], {})
        w.write_content([b"\n"])
        w.commit()
        records.mark_done(w.path, records.read_message(w.path).recipients[1].offset)
        out = cat(capsys, w.path)[1]
        assert "original_recipient: X@alias\nrecipient: x@y\ndone_recipient: z@w\n" in out

    def test_a_path_argument_is_shown_under_its_own_name(self, cfg, capsys, tmp_path):
        qid = message()
        path = os.path.join(str(tmp_path / "spool"), queue.path_of("deferred", qid))
        assert cat(capsys, path)[1].startswith(f"*** ENVELOPE RECORDS {path} ***")


class TestParts:
    def test_headers_only(self, cfg, capsys):
        qid = message()
        out = cat(capsys, "-h", "-q", qid)[1]
        assert out == "Subject: hello\nFrom: alice@example.com\n continued\n"

    def test_body_only_starts_at_the_first_non_header_line(self, cfg, capsys):
        qid = message()
        assert cat(capsys, "-b", "-q", qid)[1] == "\nHi Bob\nSecond line\n"

    def test_headers_and_body_without_markers(self, cfg, capsys):
        qid = message()
        assert cat(capsys, "-bh", "-q", qid)[1] == CONTENT.decode()

    def test_envelope_only(self, cfg, capsys):
        qid = message()
        out = cat(capsys, "-e", "-q", qid)[1]
        assert "sender: alice@example.com" in out
        assert "Hi Bob" not in out and "*** MESSAGE FILE END" in out

    def test_offsets(self, cfg, capsys):
        qid = message()
        out = cat(capsys, "-o", "-e", "-q", qid)[1]
        assert "        0 message_size:" in out
        msg = records.read_message(queue.path_of("deferred", qid))
        assert f"{msg.recipients[0].offset:9d} recipient: bob@example.org" in out


class TestErrors:
    def test_unknown_queue_id(self, cfg, capsys):
        with pytest.raises(SystemExit) as e:
            postcat.main(["-q", "BBBBBBBBBBzB"])
        assert e.value.code == 1
        assert "postcat: fatal: open queue file BBBBBBBBBBzB: No such file or directory" \
            in capsys.readouterr().err

    def test_truncated_file_is_shown_as_far_as_it_goes(self, cfg, capsys):
        qid = message()
        path = queue.path_of("deferred", qid)
        os.truncate(path, os.path.getsize(path) - 3)
        with pytest.raises(SystemExit) as e:
            postcat.main(["-q", qid])
        assert e.value.code == 1
        captured = capsys.readouterr()
        assert "sender: alice@example.com" in captured.out
        assert "postcat: fatal:" in captured.err

    def test_not_a_queue_file(self, cfg, capsys, tmp_path):
        junk = tmp_path / "junk"
        junk.write_bytes(b"hello world, this is not a queue file\n")
        with pytest.raises(SystemExit):
            postcat.main([str(junk)])
        assert "not a queue file" in capsys.readouterr().err
