"""The queue store: IDs, directories, the writer's guarantees, moves and scans."""

import errno
import os
import stat

import pytest

from pymaster.mail import queue, records
from pymaster.mail.config import Config
from pymaster.mail.records import Recipient


@pytest.fixture
def spool(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    queue.create_layout(str(tmp_path))
    yield tmp_path
    queue.configure(Config(str(tmp_path), {}))      # back to the defaults


def commit(queue_name="incoming", fs=None):
    w = queue.create(queue_name, fs=fs)
    w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
    w.write_content([b"Subject: x\n\nbody\n"])
    w.commit()
    return w


class TestQueueIds:
    def test_ids_sort_by_time(self):
        ids = [queue.new_queue_id(5, t) for t in (1e9, 1e9 + 0.000001, 1e9 + 1, 1.8e9, 2.5e9)]
        assert ids == sorted(ids)

    def test_later_ids_sort_after_earlier_whatever_the_inode(self):
        assert queue.new_queue_id(10**9, 1000.0) < queue.new_queue_id(1, 1000.5)

    def test_long_form_shape(self):
        qid = queue.new_queue_id(123456, 1795901880.5)
        assert qid[10] == "z" and "z" not in qid[11:]
        assert queue.queue_id_time(qid) == pytest.approx(1795901880.5)
        assert queue.is_queue_id(qid)

    def test_no_vowels_so_no_words(self):
        assert not set("aeiouAEIOU") & set(queue.ALPHABET)

    def test_files_get_distinct_ids(self, spool):
        ids = {commit().queue_id for _ in range(200)}
        assert len(ids) == 200

    def test_temporary_names_are_not_queue_ids(self):
        assert not queue.is_queue_id(".tmp.123.1")


class TestLayout:
    def test_every_directory_exists(self, spool):
        for name in queue.ALL_DIRS:
            assert (spool / name).is_dir()

    @pytest.mark.skipif(os.geteuid() == 0, reason="runs as an unprivileged user")
    def test_unprivileged_layout_is_private(self, spool):
        assert stat.S_IMODE(os.stat(spool / "maildrop").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(spool / "pid").st_mode) == 0o755

    @pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
    def test_root_layout_has_postfix_modes(self, tmp_path):
        import pwd
        owner = "nobody"
        queue.create_layout(str(tmp_path / "q"), owner, "nogroup")
        st = os.stat(tmp_path / "q" / "maildrop")
        assert stat.S_IMODE(st.st_mode) == 0o730
        assert st.st_uid == pwd.getpwnam(owner).pw_uid
        assert stat.S_IMODE(os.stat(tmp_path / "q" / "public").st_mode) == 0o710
        assert stat.S_IMODE(os.stat(tmp_path / "q" / "private").st_mode) == 0o700
        assert os.stat(tmp_path / "q" / "pid").st_uid == 0


class TestHashedPaths:
    def test_deferred_and_defer_are_hashed_by_default(self, spool):
        qid = queue.new_queue_id(77, 1795901880.123456)
        assert queue.path_of("deferred", qid) == f"deferred/{qid[9]}/{qid}"
        assert queue.defer_log_path(qid) == f"defer/{qid[9]}/{qid}"
        assert queue.path_of("active", qid) == f"active/{qid}"

    def test_depth_and_names_follow_the_configuration(self, spool):
        queue.configure(Config(str(spool), {"hash_queue_depth": "2",
                                            "hash_queue_names": "incoming, deferred"}))
        qid = queue.new_queue_id(77, 1795901880.123456)
        assert queue.path_of("incoming", qid) == f"incoming/{qid[9]}/{qid[8]}/{qid}"
        assert queue.defer_log_path(qid) == f"defer/{qid}"

    def test_writer_creates_hashed_subdirectories_on_demand(self, spool):
        queue.configure(Config(str(spool), {"hash_queue_names": "incoming"}))
        w = commit()
        assert w.path == queue.path_of("incoming", w.queue_id)
        assert os.path.dirname(w.path) != "incoming"
        assert records.read_message(w.path).sender == "a@b"


class TestWriter:
    def test_commit_sets_the_completion_mark(self, spool):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        w.write_content([b"x\n"])
        assert not queue.is_complete(w.path)
        w.commit()
        assert queue.is_complete(w.path)

    def test_abort_removes_the_file(self, spool):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        w.abort()
        assert not os.path.exists(w.path)
        assert os.listdir(spool / "incoming") == []

    def test_context_manager_aborts_on_error(self, spool):
        with pytest.raises(RuntimeError):
            with queue.create("incoming") as w:
                raise RuntimeError("client went away")
        assert not os.path.exists(w.path)


class TestWriterSystemCalls:
    """What the writer leaves out for the usual case still holds in the rest."""

    def test_big_message_gets_its_sizes_patched_after_the_flush(self, spool):
        w = queue.create("incoming")
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        content = b"Subject: x\n\n" + b"y" * (queue.WRITE_BUFFER + 10) + b"\n"
        w.write_content([content])
        w.commit()
        msg = records.read_message(w.path)
        assert msg.content_length == len(content) and msg.read_content() == content

    def test_file_gets_its_mode_whatever_the_umask(self, spool):
        old = os.umask(0o077)
        try:
            w = queue.create("maildrop", mode=0o644)
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.fstat(w.fd).st_mode) == 0o644
        w.abort()

    def test_reserved_file_with_leftovers_is_emptied(self, spool):
        queue_id = queue.reserve("incoming")
        with open(queue.path_of("incoming", queue_id), "ab") as f:
            f.write(b"half a message from a writer that died")
        w = queue.open_reserved("incoming", queue_id)
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        w.write_content([b"Subject: x\n\nbody\n"])
        w.commit()
        assert records.read_message(w.path).read_content() == b"Subject: x\n\nbody\n"


class FullDisk(queue.FileSystem):
    """Fails with ENOSPC at the chosen system call."""

    def __init__(self, where: str) -> None:
        self.where = where

    def write(self, fd, data):
        if self.where == "write":
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(fd, data)

    def fsync(self, fd):
        if self.where == "fsync":
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().fsync(fd)


class TestFullDisk:
    @pytest.mark.parametrize("where", ["write", "fsync"])
    def test_half_written_file_is_removed_and_error_raised(self, spool, where):
        with pytest.raises(OSError) as info:
            commit(fs=FullDisk(where))
        assert info.value.errno == errno.ENOSPC
        assert os.listdir(spool / "incoming") == []

    def test_writer_refuses_use_after_failure(self, spool):
        w = queue.create("incoming", fs=FullDisk("write"))
        w.write_envelope(1.0, "a@b", [Recipient("c@d")], {})
        with pytest.raises(OSError):
            w.write_content([b"x" * 200000])
        with pytest.raises(ValueError):
            w.commit()


class TestMovesAndScans:
    def test_move_renames_between_queues(self, spool):
        w = commit()
        new = queue.move(w.queue_id, "incoming", "active")
        assert new == f"active/{w.queue_id}"
        assert not os.path.exists(w.path)
        new = queue.move(w.queue_id, "active", "deferred")
        assert records.read_message(new).queue_id == w.queue_id

    def test_move_of_missing_file_raises(self, spool):
        with pytest.raises(FileNotFoundError):
            queue.move("BBBBBBBBBBzB", "incoming", "active")

    def test_scan_finds_files_in_hashed_subdirectories(self, spool):
        ids = set()
        for _ in range(5):
            w = commit()
            queue.move(w.queue_id, "incoming", "deferred")
            ids.add(w.queue_id)
        found = dict(queue.scan("deferred"))
        assert set(found) == ids
        assert all(p == queue.path_of("deferred", q) for q, p in found.items())

    def test_scan_skips_temporary_files(self, spool):
        w = queue.create("incoming")
        (spool / "incoming" / ".tmp.1.1").write_bytes(b"")
        assert list(queue.scan("incoming")) == [(w.queue_id, w.path)]
        w.abort()

    def test_scan_of_missing_queue_is_empty(self, spool):
        assert list(queue.scan("nonexistent")) == []

    def test_find_and_remove_with_logs(self, spool):
        w = commit()
        queue.move(w.queue_id, "incoming", "deferred")
        log = queue.defer_log_path(w.queue_id)
        os.makedirs(os.path.dirname(log), exist_ok=True)
        open(log, "w").write("recipient=c@d\n\n")
        assert queue.find(w.queue_id) == ("deferred", queue.path_of("deferred", w.queue_id))
        assert queue.remove(w.queue_id, "deferred")
        assert not os.path.exists(log)
        assert queue.find(w.queue_id) is None

    def test_remove_without_notice_logs_still_removes_the_defer_log(self, spool):
        w = commit()
        log = queue.defer_log_path(w.queue_id)
        os.makedirs(os.path.dirname(log), exist_ok=True)
        open(log, "w").write("recipient=c@d\n\n")
        assert queue.remove(w.queue_id, "incoming", notice_logs=False)
        assert not os.path.exists(log)
        assert queue.find(w.queue_id) is None

    def test_quarantine_moves_to_corrupt_and_warns(self, spool, capsys):
        w = commit()
        new = queue.quarantine(w.queue_id, "incoming", "truncated")
        assert new == f"corrupt/{w.queue_id}"
        assert "warning: corrupt queue file incoming/" in capsys.readouterr().err

    def test_retry_time_is_the_modification_time(self, spool):
        w = commit()
        queue.set_retry_time(w.path, 2000000000)
        assert queue.retry_time(w.path) == 2000000000


@pytest.mark.parametrize("queue_id", ["4jcT5Z3SCSzQVgV", "ABCDEF", "4jcT5Z3SCSaQVgV",
                                      "4jcT5Z3SCz", "0000000000z1", "B4C3D2"])
def test_hash_dirs_follow_the_long_form_test_of_queue_id_time(queue_id, monkeypatch):
    monkeypatch.setattr(queue, "_hash_depth", 2)
    long_form = queue.queue_id_time(queue_id) is not None
    source = queue_id[queue.SEC_WIDTH + queue.USEC_WIDTH - 1::-1] if long_form else queue_id
    assert queue._hash_dirs(queue_id) == list(source[:2])


@pytest.mark.parametrize("queue_name", ["incoming", "deferred", "defer", "deferred/", ""])
@pytest.mark.parametrize("queue_id", ["4jcT5Z3SCSzQVgV", "ABCDEF", "B", "", "a/b",
                                      "/etc/passwd", "../x"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_path_of_joins_as_os_path_join(queue_name, queue_id, depth, monkeypatch):
    # path_of joins by hand (qmgr's hot path); any name must give what
    # os.path.join gave, the odd ones (slashes, empty) included.
    monkeypatch.setattr(queue, "_hash_depth", depth)
    dirs = queue._hash_dirs(queue_id) if queue.is_hashed(queue_name) else []
    assert queue.path_of(queue_name, queue_id) == os.path.join(queue_name, *dirs, queue_id)


def test_scan_lists_hashed_and_plain_files_and_skips_temporary_ones(spool):
    plain = commit()
    os.makedirs("deferred/Q/R")
    open("deferred/Q/R/4jcT5Z3SCSzQVgV", "w").close()
    open("incoming/.tmp.1.1", "w").close()
    assert list(queue.scan("incoming")) == [(plain.queue_id, plain.path)]
    assert list(queue.scan("deferred")) == [("4jcT5Z3SCSzQVgV", "deferred/Q/R/4jcT5Z3SCSzQVgV")]
