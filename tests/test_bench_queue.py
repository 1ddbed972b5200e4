"""bench/queue.py: the queue benchmark measures real, complete queues.

The figures are not tested (benchmarks are not tests); what is: the counts
each command reports are read right, the cloned Postfix queue is one that
Postfix's own commands list, scan and delete in full, and every clone is
named as Postfix names a queue file.
"""

from __future__ import annotations

import subprocess

import pytest

from bench import queue as bench_queue

POSTFIX_MISSING = bench_queue.postfix_missing()


@pytest.mark.parametrize("argv, output, count", [
    (["postqueue", "-p"], b"A1 ...\n\n-- 3 Kbytes in 12 Requests.\n", 12),
    (["postqueue", "-p"], b"-- 1 Kbytes in 1 Request.\n", 1),
    (["postqueue", "-p"], b"Mail queue is empty\n", 0),
    (["postqueue", "-j"], b'{"queue_id": "A"}\n{"queue_id": "B"}\n', 2),
    (["postsuper", "-d", "ALL"], b"postsuper: Deleted: 7 messages\n", 7),
    (["postsuper", "-d", "ALL"], b"postsuper: Deleted: 1 message\n", 1),
    (["postsuper", "-d", "ALL"], b"", None),
])
def test_reported_count_reads_what_each_command_says(argv, output, count):
    assert bench_queue.reported_count(argv, output) == count


def test_a_queue_of_no_messages_is_refused_with_a_reason(tmp_path):
    assert bench_queue.run(tmp_path, 0) == [
        "queue: skipped (the queue needs at least 1 message, not 0)"]


def test_pymaster_side_reports_every_job_over_the_whole_queue(tmp_path):
    lines = bench_queue.run(tmp_path, 20, postfix=False)
    assert lines[0] == "queue: 20 deferred messages, pymaster vs Debian Postfix"
    assert lines[1] == "  Postfix: skipped (--no-postfix)"
    for job in bench_queue.JOBS:
        line = next(line for line in lines if line.lstrip().startswith(job))
        assert line.endswith("messages seen 20")


def test_clones_whose_inode_gives_another_id_length_are_not_kept(tmp_path):
    # A template ID far longer than any inode's: every clone is rejected,
    # the retries stop, and no rejected file stays behind.
    template_id = "ABCDE" + "F" * 30
    for queue_name in ("deferred", "defer"):
        (tmp_path / queue_name / "A").mkdir(parents=True)
        (tmp_path / queue_name / "A" / template_id).write_bytes(b"record")
    assert bench_queue.clone_postfix_queue(tmp_path, 5) == 1
    assert [p.name for p in (tmp_path / "deferred").rglob("*") if p.is_file()] == [template_id]


@pytest.mark.skipif(bool(POSTFIX_MISSING), reason=POSTFIX_MISSING or "")
class TestPostfixClones:
    COUNT = 30

    @pytest.fixture
    def instance(self, short_tmp_path):
        # Postfix's sockets in its spool must fit a socket address.
        pf = bench_queue.postfix_instance(short_tmp_path / "postfix")
        bench_queue.postfix_template(pf)
        yield pf
        bench_queue.stop_postfix(pf)

    def test_every_clone_is_named_for_its_own_inode_in_its_hashed_directory(self, instance):
        assert bench_queue.clone_postfix_queue(instance.queue_dir, self.COUNT) == self.COUNT
        files = [p for p in (instance.queue_dir / "deferred").rglob("*") if p.is_file()]
        assert len(files) == self.COUNT
        for path in files:
            qid = path.name
            assert path.parent.name == qid[0]
            assert int(qid[5:], 16) == path.stat().st_ino
            assert path.stat().st_mode & 0o777 == 0o700
            assert (instance.queue_dir / "defer" / qid[0] / qid).is_file()
            # The queue ID inside the file (log_ident, Received:) is its own.
            assert path.read_bytes().count(qid.encode()) == 2

    def test_postfix_lists_scans_and_deletes_the_whole_cloned_queue(self, short_tmp_path):
        tmp_path = short_tmp_path       # Postfix's sockets must fit a socket address
        figures = bench_queue.postfix_figures(tmp_path / "postfix", self.COUNT)
        assert not isinstance(figures, str), figures
        for job in bench_queue.JOBS:
            assert figures[job].count == self.COUNT, job
        assert not _postfix_running(tmp_path / "postfix" / "etc")


def _postfix_running(config_dir) -> bool:
    done = subprocess.run([str(bench_queue.DEBIAN / "postfix"), "-c", str(config_dir),
                           "status"], capture_output=True, check=False, timeout=30)
    return done.returncode == 0
