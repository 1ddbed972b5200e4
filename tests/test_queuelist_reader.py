"""The listing's fast reader (pymaster.mail.queuelist) reads what the full one reads.

postqueue -p/-j decode only the envelope records they show, with one read
per file, and fall back to records.read_message for anything unusual; the
defer reasons come from a regex instead of read_status_log; a long listing
is shared between two processes (pymaster.util.forkjoin). Each is checked
here against the reader it replaces, on valid files and on damaged ones
drawn from a fixed seed.
"""

from __future__ import annotations

import os
import random

import pytest

from pymaster.mail import delivery, queue, queuelist, records
from pymaster.util import forkjoin
from tests.support.queue_fixtures import add_message, make_spool, reset_logging

SEED = 20261207


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


def slow_entry(monkeypatch, name, qid, path):
    """slow_entry - read_entry through records.read_message alone."""
    with monkeypatch.context() as m:
        m.setattr(queuelist, "_envelope", lambda data: None)
        return queuelist.read_entry(name, qid, path)


class TestEnvelope:
    def test_a_plain_file_is_read_by_the_fast_path(self, cfg, monkeypatch):
        qid = add_message("deferred", rcpts=("a@example.org", "b@example.org"),
                          attrs={"forced_expire": "1"})
        path = queue.path_of("deferred", qid)
        with open(path, "rb") as f:
            assert queuelist._envelope(f.read()) is not None
        fast = queuelist.read_entry("deferred", qid, path)
        assert fast == slow_entry(monkeypatch, "deferred", qid, path)
        assert fast.forced_expire and [r.address for r in fast.recipients] == \
            ["a@example.org", "b@example.org"]

    def test_done_recipients_and_original_addresses(self, cfg, monkeypatch):
        w = queue.create("incoming")
        w.write_envelope(1795900000.5, "", [
            records.Recipient("x@example.org", orig="X@example.org", notify="FAILURE"),
            records.Recipient("y@example.org", orig="Y@example.org", done=True),
            records.Recipient("z@example.org", orcpt="rfc822;z@example.org")], {})
        w.write_content([b"Subject: s\n\nbody\n"])
        qid = w.commit()
        queue.move(qid, "incoming", "deferred")
        path = queue.path_of("deferred", qid)
        fast = queuelist.read_entry("deferred", qid, path)
        assert fast == slow_entry(monkeypatch, "deferred", qid, path)
        assert [(r.address, r.orig) for r in fast.recipients] == \
            [("x@example.org", "X@example.org"), ("z@example.org", "")]

    def test_damaged_files_read_as_the_full_reader_reads_them(self, cfg, monkeypatch):
        rng = random.Random(SEED)
        qid = add_message("deferred", rcpts=("a@example.org", "b@example.org"),
                          attrs={"forced_expire": "no"})
        path = queue.path_of("deferred", qid)
        with open(path, "rb") as f:
            good = f.read()
        for _ in range(1500):
            data = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.choice(b"CTASONQRDME\0\xff=x7")
            if rng.random() < 0.2:
                data = data[:rng.randrange(len(data))]
            with open(path, "wb") as f:
                f.write(data)
            os.chmod(path, 0o700)
            fast = queuelist.read_entry("deferred", qid, path)
            assert fast == slow_entry(monkeypatch, "deferred", qid, path), bytes(data)


class TestDeferReasons:
    @staticmethod
    def reference(path):
        reasons = {}
        for item in delivery.read_status_log(path):
            reason = item.get("reason", "")
            if item.get("offset", "").lstrip("-").isdigit():
                reasons[int(item["offset"])] = reason
            if item.get("recipient"):
                reasons[item["recipient"]] = reason
        return reasons

    def test_logs_of_any_shape_read_as_read_status_log_reads_them(self, cfg):
        rng = random.Random(SEED)
        pieces = ["recipient=", "offset=", "reason=", "=", "\n", "\n\n", "\r", "\r\n",
                  "\x85", "\u2028", "\x1c", "a", "-1", "12", "x=y", "é", "\udcff"]
        qid = add_message("deferred")
        path = queue.defer_log_path(qid)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        for _ in range(3000):
            text = "".join(rng.choice(pieces) for _ in range(rng.randrange(30)))
            with open(path, "wb") as f:
                f.write(text.encode("utf-8", "surrogateescape"))
            assert queuelist._defer_reasons(qid) == self.reference(path), repr(text)

    def test_no_log_no_reasons(self, cfg):
        assert queuelist._defer_reasons(add_message("deferred")) == {}


class TestSplitListing:
    @pytest.mark.parametrize("as_json", [False, True])
    def test_two_processes_print_what_one_prints(self, cfg, monkeypatch, as_json):
        for i in range(7):
            qid = add_message("deferred" if i % 3 else "hold", rcpts=(f"u{i}@example.org",))
            delivery.append_status_log(queue.defer_log_path(qid), {
                "recipient": f"u{i}@example.org", "reason": f"reason {i}"})
        one = queuelist.spool_listing(cfg, as_json)
        monkeypatch.setattr(queuelist, "SPLIT_MIN", 2)
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        assert queuelist.spool_listing(cfg, as_json) == one
        entries = queuelist.list_queue()
        if as_json:
            assert one == "".join(queuelist.format_json(e) + "\n" for e in entries)
        else:
            assert one == queuelist.format_listing(entries, cfg)

    def test_an_empty_queue(self, cfg, monkeypatch):
        monkeypatch.setattr(queuelist, "SPLIT_MIN", 0)
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        assert queuelist.spool_listing(cfg, False) == "Mail queue is empty\n"


class TestForkJoin:
    def test_results_come_in_order(self, monkeypatch):
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        parts = forkjoin.split(list(range(10)), lambda xs: bytes(xs), min_items=2)
        assert b"".join(parts) == bytes(range(10)) and len(parts) == 2

    def test_short_lists_stay_in_one_process(self, monkeypatch):
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        assert forkjoin.split([1, 2], lambda xs: bytes(xs), min_items=3) == [b"\1\2"]

    def test_a_failure_in_the_child_is_raised_by_the_parent(self, monkeypatch):
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        parent = os.getpid()

        def work(xs):
            if 0 in xs:
                raise PermissionError("no")
            return b"ok"
        with pytest.raises(PermissionError):
            forkjoin.split(list(range(4)), work, min_items=2)
        assert os.getpid() == parent

    def test_big_results_cross_the_pipe(self, monkeypatch):
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        parts = forkjoin.split([b"a" * 300_000, b"b" * 300_000], lambda xs: b"".join(xs),
                               min_items=2)
        assert parts == [b"a" * 300_000, b"b" * 300_000]


class TestScanByInode:
    def test_the_same_files_in_inode_order(self, cfg):
        ids = {add_message("deferred") for _ in range(20)}
        found = queue.scan_by_inode("deferred")
        assert {qid for qid, _ in found} == ids
        assert set(found) == set(queue.scan("deferred"))
        inodes = [os.stat(path).st_ino for _, path in found]
        assert inodes == sorted(inodes)


class TestWireForm:
    def test_to_dict_is_asdict(self, cfg):
        from dataclasses import asdict
        add_message("deferred", rcpts=("a@example.org", "b@example.org"))
        for entry in queuelist.list_queue():
            assert list(entry.to_dict().items()) == list(asdict(entry).items())
            assert queuelist.Entry.from_dict(entry.to_dict()) == entry
