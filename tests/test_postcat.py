"""postcat: the sections and lines Postfix's postcat prints.

The expected shapes were taken from Debian's Postfix 3.7 postcat run on a
queue file its own smtpd and cleanup wrote (a message with DSN parameters
held by header_checks), so that scripts written for Postfix's output read
pymaster's the same way."""

import os
import time

import pytest

from pymaster.mail import queue, records
from pymaster.commands import postcat
from tests.support.queue_fixtures import add_message, make_spool, reset_logging

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

    def test_section_markers_carry_offsets_too(self, cfg, capsys):
        qid = message()
        path = queue.path_of("deferred", qid)
        msg = records.read_message(path)
        lines = cat(capsys, "-o", "-q", qid)[1].splitlines()
        assert lines[0] == f"*** ENVELOPE RECORDS {path} ***"       # never an offset
        content_start = msg.content_offset
        end = content_start + msg.content_length
        assert f"{content_start - 5:9d} *** MESSAGE CONTENTS {path} ***" in lines
        assert f"{content_start:9d} Subject: hello" in lines
        assert f"{end:9d} *** HEADER EXTRACTED {path} ***" in lines
        assert lines[-1] == f"{end:9d} *** MESSAGE FILE END {path} ***"

    def test_decimal_record_types(self, cfg, capsys):
        qid = message()
        lines = cat(capsys, "-d", "-q", qid)[1].splitlines()
        path = queue.path_of("deferred", qid)
        assert lines[0] == f"*** ENVELOPE RECORDS {path} ***"
        assert lines[1].startswith(" 67 message_size: ")
        assert lines[2].startswith(" 84 message_arrival_time: ")
        assert " 65 named_attribute: rewrite_context=local" in lines
        assert " 83 sender: alice@example.com" in lines
        assert " 82 recipient: bob@example.org" in lines
        assert f" 77 *** MESSAGE CONTENTS {path} ***" in lines
        assert " 78 Subject: hello" in lines
        assert lines[-2:] == [f" 88 *** HEADER EXTRACTED {path} ***",
                              f" 69 *** MESSAGE FILE END {path} ***"]

    def test_offsets_and_decimal_types_together(self, cfg, capsys):
        out = cat(capsys, "-od", "-q", message())[1]
        assert "\n        0  67 message_size: " in out

    def test_verbose_names_the_content_records(self, cfg, capsys):
        out = cat(capsys, "-v", "-q", message())[1]
        assert "\nregular_text: Subject: hello\nregular_text: From: alice@example.com\n" in out
        assert "\nregular_text: \nregular_text: Hi Bob\n" in out
        assert "\nsender: alice@example.com\n" in out

    def test_start_offset_skips_what_comes_before(self, cfg, capsys):
        qid = message()
        msg = records.read_message(queue.path_of("deferred", qid))
        out = cat(capsys, "-s", str(msg.recipients[0].offset), "-q", qid)[1]
        assert out.startswith("recipient: bob@example.org\n*** MESSAGE CONTENTS")
        assert "ENVELOPE RECORDS" not in out and "sender:" not in out

    def test_start_offset_inside_the_content(self, cfg, capsys):
        qid = message()
        msg = records.read_message(queue.path_of("deferred", qid))
        body = msg.content_offset + CONTENT.index(b"Hi Bob")
        out = cat(capsys, "-b", "-s", str(body), "-q", qid)[1]
        assert out == "Hi Bob\nSecond line\n"

    def test_file_order_option_is_accepted(self, cfg, capsys):
        qid = message()
        assert cat(capsys, "-r", "-q", qid)[1] == cat(capsys, "-q", qid)[1]


SMTPD_ATTRS = {"origin": "smtpd", "rewrite_context": "remote", "client_name": "localhost",
               "client_address": "127.0.0.1", "client_port": "49270",
               "helo_name": "client.example", "protocol": "ESMTP", "envid": "abc123",
               "ret": "HDRS", "body": "8BITMIME", "sasl_method": "", "sasl_username": "",
               "log_queue_id": ""}


class TestPostfixNames:
    """pymaster's own attribute names and values, shown as Postfix's."""

    def envelope(self, capsys, attrs, rcpts=(), **kw):
        w = queue.create("incoming")
        w.write_envelope(1795900000.0, "alice@example.com", list(rcpts) or
                         [records.Recipient("bob@example.org")], attrs)
        w.write_content([CONTENT])
        w.commit()
        out = cat(capsys, "-e", w.path)[1]
        return out.splitlines()[3:out.splitlines().index(f"*** MESSAGE CONTENTS {w.path} ***")]

    def test_smtpd_attributes(self, cfg, capsys):
        assert self.envelope(capsys, SMTPD_ATTRS) == [
            "named_attribute: origin=smtpd",
            "named_attribute: rewrite_context=remote",
            "named_attribute: log_client_name=localhost",
            "named_attribute: client_name=localhost",
            "named_attribute: log_client_address=127.0.0.1",
            "named_attribute: client_address=127.0.0.1",
            "named_attribute: log_client_port=49270",
            "named_attribute: client_port=49270",
            "named_attribute: log_helo_name=client.example",
            "named_attribute: helo_name=client.example",
            "named_attribute: log_protocol_name=ESMTP",
            "named_attribute: protocol_name=ESMTP",
            "named_attribute: envelope_id=abc123",
            "named_attribute: ret_flags=2",
            "named_attribute: encoding=8bit",
            "sender: alice@example.com",
            "recipient: bob@example.org",
        ]

    def test_more_postfix_names(self, cfg, capsys):
        lines = self.envelope(capsys, {
            "log_queue_id": "4XSgKk1Bwz", "ret": "FULL", "body": "7BIT",
            "sasl_method": "PLAIN", "sasl_username": "alice",
            "content_filter": "smtp:[127.0.0.1]:10025", "full_name": "Alice Liddell"})
        assert lines[:7] == [
            "named_attribute: log_ident=4XSgKk1Bwz", "named_attribute: ret_flags=1",
            "named_attribute: encoding=7bit", "named_attribute: sasl_method=PLAIN",
            "named_attribute: sasl_username=alice", "content_filter: smtp:[127.0.0.1]:10025",
            "sender_fullname: Alice Liddell"]

    def test_dsn_attributes_come_before_the_original_recipient(self, cfg, capsys):
        rcpts = [records.Recipient("bob@example.org", orig="Bob@example.org",
                                   notify="SUCCESS,FAILURE", orcpt="rfc822;Bob@example.org"),
                 records.Recipient("carol@example.net", orig="carol@example.net",
                                   notify="NEVER")]
        assert self.envelope(capsys, {}, rcpts) == [
            "sender: alice@example.com",
            "named_attribute: notify_flags=6",
            "named_attribute: dsn_orig_rcpt=rfc822;Bob@example.org",
            "original_recipient: Bob@example.org",
            "recipient: bob@example.org",
            "named_attribute: notify_flags=1",
            "original_recipient: carol@example.net",
            "recipient: carol@example.net",
        ]

    def test_notify_delay(self, cfg, capsys):
        rcpts = [records.Recipient("bob@example.org", notify="SUCCESS,FAILURE,DELAY")]
        assert "named_attribute: notify_flags=14" in self.envelope(capsys, {}, rcpts)


class TestErrors:
    def test_bad_option_prints_postfix_usage(self, cfg, capsys):
        with pytest.raises(SystemExit) as e:
            postcat.main(["-Z"])
        assert e.value.code == 1
        assert "postcat: fatal: usage: postcat [-b (body text)] [-c config_dir] " \
            "[-d (decimal record type)] [-e (envelope records)] [-h (header text)] " \
            "[-q (access queue)] [-v] [file(s)...]" in capsys.readouterr().err

    def test_bad_start_offset(self, cfg, capsys):
        with pytest.raises(SystemExit) as e:
            postcat.main(["-s", "-q", "x"])
        assert e.value.code == 1
        assert "postcat: fatal: bad offset: -q" in capsys.readouterr().err

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
