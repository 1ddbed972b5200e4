"""pickup: what it sends cleanup for a maildrop file, and what it does with the answer.

cleanup itself is exercised end to end in tests/e2e/test_sendmail.py; here a
stand-in answers, so each answer's handling can be seen in isolation."""

import os

import pytest

from pymaster.mail import queue, records
from pymaster.util import log
from services.pickup import Pickup
from tests.support.queue_fixtures import make_spool, reset_logging


class Answer:
    """Records requests and answers them with a fixed reply (or raises)."""

    def __init__(self, reply=None, error=None):
        self.reply, self.error, self.requests = reply, error, []

    def call(self, header, payload):
        self.requests.append((header, b"".join(payload)))
        if self.error:
            raise self.error
        return self.reply, []


@pytest.fixture
def pickup(tmp_path, monkeypatch):
    cfg = make_spool(tmp_path, monkeypatch)
    log.setup("pickup", cfg)
    p = Pickup(cfg)
    yield p
    reset_logging()


def drop(attrs=None, rcpts=("a@x",), sender="me", content=b"Subject: s\n\nbody\n"):
    w = queue.create("maildrop", mode=0o644)
    w.write_envelope(1795900000.0, sender, [records.Recipient(r) for r in rcpts],
                     attrs or {"uid": "0", "rewrite_context": "local"})
    w.write_content([content])
    return w.commit(), w.path


def test_ok_sends_the_message_logs_uid_and_removes_the_file(pickup, tmp_path):
    pickup.cleanup = Answer({"status": "ok", "queue_id": "NEWID12345"})
    qid, path = drop(attrs={"uid": "0", "full_name": "Me Myself", "cleanup_flags": "extract"})
    assert pickup.scan_once() == 1
    [(header, content)] = pickup.cleanup.requests
    assert header["op"] == "message" and header["sender"] == "me"
    assert header["recipients"] == [{"address": "a@x", "orig": "", "notify": "", "orcpt": ""}]
    assert header["attrs"] == {"full_name": "Me Myself", "origin": "pickup",
                               "rewrite_context": "local"}
    assert header["flags"] == ["extract"]
    assert header["arrival_time"] == 1795900000.0
    assert header["uid"] == os.getuid()     # the file's owner: cleanup's Received: header
    assert content == b"Subject: s\n\nbody\n"
    assert not os.path.exists(path)
    assert f"postfix/pickup[{os.getpid()}]: NEWID12345: uid={os.getuid()} from=<me>" \
        in (tmp_path / "maillog").read_text()


def test_a_users_file_cannot_carry_client_attributes(pickup):
    pickup.cleanup = Answer({"status": "ok", "queue_id": "X"})
    drop(attrs={"uid": "1000", "client_address": "192.0.2.1", "envid": "e1"})
    pickup.trusted_uids = set()             # as if the file were another user's
    pickup.scan_once()
    assert pickup.cleanup.requests[0][0]["attrs"] == {"envid": "e1", "origin": "pickup",
                                                      "rewrite_context": "local"}


def test_a_users_file_may_ask_for_verify_and_record_but_not_for_a_probe(pickup):
    pickup.cleanup = Answer({"status": "ok", "queue_id": "X"})
    drop(attrs={"uid": "1000", "trace_flags": "verify,probe,record"})
    pickup.trusted_uids = set()
    pickup.scan_once()
    assert pickup.cleanup.requests[0][0]["attrs"]["trace_flags"] == "verify,record"


def test_temporary_failure_leaves_the_file(pickup):
    pickup.cleanup = Answer({"status": "defer", "dsn": "4.3.0", "reason": "try later"})
    _, path = drop()
    assert pickup.scan_once() == 0
    assert os.path.exists(path)


def test_no_answer_leaves_the_file(pickup):
    from pymaster.util import ipc
    pickup.cleanup = Answer(error=ipc.IpcError("timeout"))
    _, path = drop()
    assert pickup.scan_once() == 0 and os.path.exists(path)


def test_rejected_message_is_kept_in_corrupt(pickup):
    pickup.cleanup = Answer({"status": "reject", "dsn": "5.3.4", "reason": "too big"})
    qid, _ = drop()
    pickup.scan_once()
    assert os.path.exists(f"corrupt/{qid}")


def test_incomplete_files_wait_and_corrupt_ones_are_quarantined(pickup):
    pickup.cleanup = Answer({"status": "ok", "queue_id": "X"})
    w = queue.create("maildrop")
    w.write_envelope(1.0, "me", [records.Recipient("a@x")], {})
    bad, bad_path = drop()
    os.truncate(bad_path, 40)
    pickup.scan_once()
    assert pickup.cleanup.requests == []
    assert os.path.exists(w.path)
    assert os.path.exists(f"corrupt/{bad}")
    w.abort()


def test_done_recipients_are_not_sent_again(pickup):
    pickup.cleanup = Answer({"status": "ok", "queue_id": "X"})
    _, path = drop(rcpts=("a@x", "b@x"))
    records.mark_done(path, records.read_message(path).recipients[0].offset)
    pickup.scan_once()
    assert [r["address"] for r in pickup.cleanup.requests[0][0]["recipients"]] == ["b@x"]


def test_content_filter_and_receive_overrides_of_this_pickup(tmp_path, monkeypatch):
    cfg = make_spool(tmp_path, monkeypatch, "content_filter = scan:[127.0.0.1]:10025\n"
                                            "receive_override_options = no_address_mappings\n")
    p = Pickup(cfg)
    p.cleanup = Answer({"status": "ok", "queue_id": "X"})
    drop(attrs={"uid": "0", "content_filter": "old:filter"})
    p.scan_once()
    header = p.cleanup.requests[0][0]
    assert header["attrs"]["content_filter"] == "scan:[127.0.0.1]:10025"
    assert header["flags"] == ["no_address_mappings"]
    reset_logging()
