"""postqueue -p / -j / -f and mailq: the listing shapes Postfix users parse."""

import json
import os
import re
import time

import pytest

from pymaster.mail import queue, records
from pymaster.commands import mailq, postqueue
from pymaster.mail.delivery import append_status_log
from tests.support.queue_fixtures import add_message, make_spool, reset_logging


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


def run(capsys, *args):
    status = postqueue.main(list(args))
    return status, capsys.readouterr().out


def stamp(when):
    return time.asctime(time.localtime(when))[:20]


class TestListing:
    def test_empty_queue(self, cfg, capsys):
        assert run(capsys, "-p") == (0, "Mail queue is empty\n")

    def test_one_deferred_message(self, cfg, capsys):
        qid = add_message("deferred", when=1795900000.0)
        size = len(b"Subject: hello\nFrom: alice@example.com\n\nHi Bob\n")
        status, out = run(capsys, "-p")
        assert status == 0
        # pymaster's IDs have Postfix's long form, so the listing has Postfix's
        # enable_long_queue_ids = yes layout (compared in tests/e2e/test_postfix_parity.py).
        assert out == (
            "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------\n"
            f"{qid + ' ':<17} {size:>8} {stamp(1795900000.0)[:19]} alice@example.com\n"
            f"{' ' * 47}bob@example.org\n"
            "\n-- 0 Kbytes in 1 Request.\n")

    def test_active_and_hold_marks(self, cfg, capsys):
        active = add_message("active")
        held = add_message("hold")
        out = run(capsys, "-p")[1]
        assert re.search(rf"^{active}\*", out, re.M)
        assert re.search(rf"^{held}!", out, re.M)
        assert out.endswith("-- 0 Kbytes in 2 Requests.\n")

    def test_null_sender_shows_as_mailer_daemon(self, cfg, capsys):
        add_message("deferred", sender="")
        assert " MAILER-DAEMON\n" in run(capsys, "-p")[1]

    def test_deferred_reason_is_shown_above_its_recipients(self, cfg, capsys):
        qid = add_message("deferred", rcpts=("a@x.example", "b@y.example"))
        msg = records.read_message(queue.path_of("deferred", qid))
        reason = "connect to x.example[192.0.2.1]:25: Connection refused"
        os.makedirs(os.path.dirname(queue.defer_log_path(qid)), exist_ok=True)
        append_status_log(queue.defer_log_path(qid), {
            "recipient": "a@x.example", "offset": msg.recipients[0].offset,
            "status": "4.4.1", "reason": reason})
        lines = run(capsys, "-p")[1].splitlines()
        assert lines[2] == " " * (76 - len(reason)) + f"({reason})"
        assert lines[3] == " " * 47 + "a@x.example"
        assert lines[4] == " " * 47 + "b@y.example"

    def test_done_recipients_are_not_listed(self, cfg, capsys):
        qid = add_message("deferred", rcpts=("a@x.example", "b@y.example"))
        path = queue.path_of("deferred", qid)
        records.mark_done(path, records.read_message(path).recipients[0].offset)
        out = run(capsys, "-p")[1]
        assert "a@x.example" not in out and "b@y.example" in out

    def test_messages_are_listed_in_arrival_order_per_queue(self, cfg, capsys):
        first = add_message("deferred")
        second = add_message("deferred")
        incoming = add_message("incoming")
        out = run(capsys, "-p")[1]
        assert out.index(incoming) < out.index(first) < out.index(second)

    def test_incomplete_and_corrupt_files_are_skipped(self, cfg, capsys):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [records.Recipient("c@d")], {})
        qid = add_message("deferred")
        os.truncate(queue.path_of("deferred", qid), 30)
        assert run(capsys, "-p")[1] == "Mail queue is empty\n"
        w.abort()

    def test_kbytes_total(self, cfg, capsys):
        # 5015 bytes of message (not the larger file), rounded down as Postfix's
        # mailq does (Debian: a 267-byte message is "-- 0 Kbytes in 1 Request.").
        add_message("deferred", content=b"Subject: big\n\n" + b"x" * 5000 + b"\n")
        assert "-- 4 Kbytes in 1 Request." in run(capsys, "-p")[1]

    def test_mailq_is_postqueue_p(self, cfg, capsys):
        add_message("deferred")
        assert mailq.main([]) == 0
        assert capsys.readouterr().out.startswith("----Queue ID----- --Size--")


class TestJson:
    def test_one_object_per_line(self, cfg, capsys):
        qid = add_message("deferred", rcpts=("a@x.example",), when=1795900000.5)
        held = add_message("hold")
        lines = run(capsys, "-j")[1].splitlines()
        assert len(lines) == 2
        obj = json.loads(lines[0])
        assert obj == {"queue_name": "deferred", "queue_id": qid, "arrival_time": 1795900000,
                       "message_size": obj["message_size"], "forced_expire": False,
                       "sender": "alice@example.com",
                       "recipients": [{"address": "a@x.example"}]}
        assert json.loads(lines[1])["queue_id"] == held

    def test_delay_reason_and_original_address(self, cfg, capsys):
        w = queue.create("incoming")
        w.write_envelope(1.0, "", [records.Recipient("a@x.example", orig="A@alias.example")], {})
        w.write_content([b"\n"])
        qid = w.commit()
        queue.move(qid, "incoming", "deferred")
        os.makedirs(os.path.dirname(queue.defer_log_path(qid)), exist_ok=True)
        append_status_log(queue.defer_log_path(qid), {"recipient": "a@x.example",
                                                      "reason": "try again"})
        obj = json.loads(run(capsys, "-j")[1])
        assert obj["sender"] == ""
        assert obj["recipients"] == [{"address": "a@x.example",
                                      "orig_address": "A@alias.example",
                                      "delay_reason": "try again"}]


class TestFlush:
    def test_flush_needs_the_mail_system(self, cfg, capsys):
        with pytest.raises(SystemExit) as e:
            postqueue.main(["-f"])
        assert e.value.code == 69
        assert "fatal: Cannot flush mail queue - mail system is down" in capsys.readouterr().err

    def test_site_flush_moves_matching_deferred_mail_to_incoming(self, cfg):
        hit = add_message("deferred", rcpts=("a@site.example",))
        miss = add_message("deferred", rcpts=("a@other.example",))
        assert postqueue.flush_ids(postqueue.deferred_for_site("site.example")) == 1
        assert os.path.exists(queue.path_of("incoming", hit))
        assert os.path.exists(queue.path_of("deferred", miss))


class TestUsage:
    def test_no_action_is_a_usage_error(self, cfg, capsys):
        with pytest.raises(SystemExit) as e:
            postqueue.main([])
        assert e.value.code == 69      # EX_UNAVAILABLE, as Postfix's postqueue exits

    def test_bad_config_dir_is_a_clear_error(self, tmp_path, capsys):
        with pytest.raises(SystemExit) as e:
            postqueue.main(["-c", str(tmp_path / "nowhere"), "-p"])
        assert e.value.code == 1
        assert "main.cf: No such file or directory" in capsys.readouterr().err
