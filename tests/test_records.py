"""The queue file format: what a writer puts down, a reader gets back.

Files are built with pymaster.mail.queue's writer in a temporary queue directory,
then read, marked, truncated and damaged."""

import os

import pytest

from pymaster.mail import queue, records
from pymaster.mail.records import CorruptQueueFile, Recipient

CONTENT = b"From: a@example.com\nSubject: test\n\nline one\nline two\n"


@pytest.fixture
def spool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    queue.create_layout(str(tmp_path))
    return tmp_path


def write(sender="a@example.com", rcpts=None, attrs=None, content=CONTENT,
          when=1764360224.25, queue_name="incoming"):
    w = queue.create(queue_name)
    rcpts = rcpts if rcpts is not None else [Recipient("b@example.org", orig="B@example.org"),
                                             Recipient("c@example.org", notify="NEVER",
                                                       orcpt="rfc822;c@example.org")]
    w.write_envelope(when, sender, rcpts, attrs or {"origin": "smtpd", "log_queue_id": ""})
    w.write_content([content[:10], content[10:]])
    w.commit()
    return w


class TestRoundTrip:
    def test_envelope_comes_back_as_written(self, spool):
        w = write()
        msg = records.read_message(w.path)
        assert msg.queue_id == w.queue_id
        assert msg.arrival_time == 1764360224.25
        assert msg.sender == "a@example.com"
        assert msg.attrs == {"origin": "smtpd", "log_queue_id": ""}
        assert [(r.address, r.orig, r.notify, r.orcpt, r.done) for r in msg.recipients] == [
            ("b@example.org", "B@example.org", "", "", False),
            ("c@example.org", "", "NEVER", "rfc822;c@example.org", False)]

    def test_content_is_read_with_one_seek_or_in_chunks(self, spool):
        msg = records.read_message(write().path)
        assert msg.read_content() == CONTENT
        assert msg.size == len(CONTENT)
        assert b"".join(msg.iter_content(chunk=7)) == CONTENT

    def test_null_sender_and_attribute_values_with_equals_signs(self, spool):
        msg = records.read_message(write(sender="", attrs={"x": "a=b"}).path)
        assert msg.sender == ""
        assert msg.attrs == {"x": "a=b"}

    def test_large_content_streams_through(self, spool):
        big = b"x" * 100 + b"\n"
        content = b"Subject: big\n\n" + big * 20000
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        w.write_content(content[i:i + 100000] for i in range(0, len(content), 100000))
        w.commit()
        assert records.read_message(w.path).read_content() == content

    def test_recipient_offsets_point_at_their_records(self, spool):
        msg = records.read_message(write().path)
        with open(msg.path, "rb") as f:
            data = f.read()
        for r in msg.recipients:
            assert data[r.offset:r.offset + 1] == b"R"

    def test_parse_message_reads_the_same_from_bytes(self, spool):
        w = write()
        with open(w.path, "rb") as f:
            msg = records.parse_message(f.read())
        assert msg.sender == "a@example.com"
        assert msg.read_content() == CONTENT


class TestMarkDone:
    def test_done_recipient_reads_back_done(self, spool):
        msg = records.read_message(write().path)
        records.mark_done(msg.path, msg.recipients[1].offset)
        again = records.read_message(msg.path)
        assert [r.done for r in again.recipients] == [False, True]
        assert [r.address for r in again.pending()] == ["b@example.org"]

    def test_marking_twice_is_harmless(self, spool):
        msg = records.read_message(write().path)
        records.mark_done(msg.path, msg.recipients[0].offset)
        records.mark_done(msg.path, msg.recipients[0].offset)
        assert records.read_message(msg.path).recipients[0].done

    @pytest.mark.parametrize("sync, fsyncs", [(True, 1), (False, 0)])
    def test_the_mark_is_fsynced_unless_told_not_to(self, spool, monkeypatch, sync, fsyncs):
        msg = records.read_message(write().path)
        synced: list[int] = []
        real = os.fsync
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
        records.mark_done(msg.path, msg.recipients[0].offset, sync=sync)
        assert len(synced) == fsyncs
        assert records.read_message(msg.path).recipients[0].done

    def test_wrong_offset_is_refused(self, spool):
        msg = records.read_message(write().path)
        with pytest.raises(CorruptQueueFile):
            records.mark_done(msg.path, msg.recipients[0].offset + 1)


class TestCorrupt:
    @pytest.mark.parametrize("cut", [1, 5, 30, 60, 200])
    def test_truncated_file_raises(self, spool, cut):
        w = write()
        size = os.path.getsize(w.path)
        os.truncate(w.path, max(0, size - cut))
        with pytest.raises(CorruptQueueFile):
            records.read_message(w.path)

    def test_not_a_queue_file(self, spool):
        path = spool / "incoming" / "ABCDEFzXYZ"
        path.write_bytes(b"From: someone\n\nhello\n")
        with pytest.raises(CorruptQueueFile):
            records.read_message(str(path))

    def test_empty_file(self, spool):
        path = spool / "incoming" / "ABCDEFzXYZ"
        path.write_bytes(b"")
        with pytest.raises(CorruptQueueFile):
            records.read_message(str(path))

    def test_unknown_record_type(self, spool):
        w = write()
        data = bytearray(open(w.path, "rb").read())
        msg = records.read_message(w.path)
        data[msg.recipients[0].offset] = ord("?")
        open(w.path, "wb").write(bytes(data))
        with pytest.raises(CorruptQueueFile, match="unknown record type"):
            records.read_message(w.path)

    def test_size_record_must_agree_with_content(self, spool):
        w = write()
        data = bytearray(open(w.path, "rb").read())
        data[5:20] = b"%15d" % 3
        open(w.path, "wb").write(bytes(data))
        with pytest.raises(CorruptQueueFile, match="size record"):
            records.read_message(w.path)


class TestRecords:
    def test_iter_records_lists_every_record_in_order(self, spool):
        w = write()
        types = [t for _, t, _ in records.iter_records(w.path)]
        assert types == [b"C", b"T", b"A", b"A", b"S", b"O", b"R", b"N", b"Q", b"R", b"M", b"E"]

    def test_size_record_is_fixed_width(self):
        assert len(records.size_record(0, 0, 0)) == len(records.size_record(10**12, 10**9, 10**6))

    def test_recipients_added_after_content_are_extracted(self, spool):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("one@x")], {})
        w.write_content([b"Subject: x\n\nbody\n"])
        w.add_recipient(Recipient("two@x"))
        w.commit()
        msg = records.read_message(w.path)
        assert [r.address for r in msg.recipients] == ["one@x", "two@x"]
        assert msg.rcpt_count == 2


class TestReadOnce:
    """A small file is read in one go and kept; a big one record by record."""

    def big(self):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("c@d", orig="C@d")], {"x": "y"})
        w.write_content([b"Subject: big\n\n" + b"y" * (records.WHOLE_READ + 10) + b"\n"])
        w.commit()
        return w

    def test_small_file_content_comes_from_the_one_read(self, spool):
        w = write()
        msg = records.read_message(w.path)
        os.unlink(w.path)
        assert msg.read_content() == CONTENT
        assert b"".join(msg.iter_content()) == CONTENT

    def test_big_file_reads_the_same_as_its_bytes(self, spool):
        w = self.big()
        on_disk = records.read_message(w.path)
        in_memory = records.parse_message(open(w.path, "rb").read(), w.path)
        assert on_disk.recipients == in_memory.recipients
        assert (on_disk.sender, on_disk.attrs, on_disk.content_offset, on_disk.content_length) \
            == (in_memory.sender, in_memory.attrs, in_memory.content_offset,
                in_memory.content_length)
        assert on_disk.read_content() == in_memory.read_content()
        assert list(records.iter_records(w.path)) == \
            [r[:3] for r in records.walk_buffer(w.path, open(w.path, "rb").read())]

    @pytest.mark.parametrize("make", ["small", "big"])
    def test_walk_from_an_offset_gives_the_records_from_there(self, spool, make):
        w = write() if make == "small" else self.big()
        every = list(records.walk_records(w.path))
        with open(w.path, "rb") as f:
            f.seek(every[3][0])
            assert list(records.walk_records(w.path, f)) == every[3:]

    @pytest.mark.parametrize("cut", [1, 5, 30])
    def test_truncated_big_file_raises(self, spool, cut):
        w = self.big()
        os.truncate(w.path, os.path.getsize(w.path) - cut)
        with pytest.raises(CorruptQueueFile):
            records.read_message(w.path)
