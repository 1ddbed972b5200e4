"""postsuper: delete, hold, release, requeue, structure check, purge."""

import io
import os
import pwd
import shutil
import stat
import time

import pytest

from pymaster.mail import queue
from pymaster.commands import postsuper
from tests.support.queue_fixtures import add_message, make_spool, reset_logging


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    yield make_spool(tmp_path, monkeypatch)
    reset_logging()


def where(qid):
    found = queue.find(qid)
    return found[0] if found else None


class TestDelete:
    def test_delete_one_prints_and_logs_like_postfix(self, cfg, capsys, tmp_path):
        qid = add_message("deferred")
        assert postsuper.main(["-d", qid]) == 0
        err = capsys.readouterr().err
        assert f"postsuper: {qid}: removed\n" in err
        assert "postsuper: Deleted: 1 message\n" in err
        assert where(qid) is None
        assert f"postfix/postsuper[" in (tmp_path / "maillog").read_text()

    def test_delete_all_in_every_default_queue(self, cfg, capsys):
        ids = [add_message(q) for q in ("deferred", "hold", "active", "incoming")]
        postsuper.main(["-d", "ALL"])
        assert "Deleted: 4 messages" in capsys.readouterr().err
        assert all(where(q) is None for q in ids)

    def test_delete_all_limited_to_a_queue(self, cfg, capsys):
        keep = add_message("hold")
        gone = add_message("deferred")
        postsuper.main(["-d", "ALL", "deferred"])
        assert where(keep) == "hold" and where(gone) is None

    def test_delete_ids_from_stdin(self, cfg, capsys, monkeypatch):
        a, b, c = (add_message("deferred") for _ in range(3))
        monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n{b}\n"))
        postsuper.main(["-d", "-"])
        assert where(a) is None and where(b) is None and where(c) == "deferred"
        assert "Deleted: 2 messages" in capsys.readouterr().err

    def test_delete_removes_the_defer_log_too(self, cfg, capsys):
        qid = add_message("deferred")
        log_path = queue.defer_log_path(qid)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        open(log_path, "w").write("recipient=bob@example.org\n\n")
        postsuper.main(["-d", qid])
        assert not os.path.exists(log_path)

    def test_delete_all_takes_every_kind_of_log_along(self, cfg, capsys):
        ids = [add_message("deferred") for _ in range(3)]
        kept = add_message("hold")
        logs = [queue.defer_log_path(ids[0]), queue.bounce_log_path(ids[1]),
                queue.trace_log_path(ids[2]), queue.defer_log_path(kept)]
        for path in logs:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").write("recipient=bob@example.org\n\n")
        postsuper.main(["-d", "ALL", "deferred"])
        assert [os.path.exists(p) for p in logs] == [False, False, False, True]
        assert "Deleted: 3 messages" in capsys.readouterr().err

    def test_delete_all_finds_files_at_an_old_hash_depth(self, cfg, capsys):
        qid = add_message("deferred")
        stray = os.path.join("deferred", "0", "1", qid)     # deeper than path_of says
        os.makedirs(os.path.dirname(stray), exist_ok=True)
        os.rename(queue.path_of("deferred", qid), stray)
        postsuper.main(["-d", "ALL"])
        assert not os.path.exists(stray)
        assert f"postsuper: {qid}: removed\n" in capsys.readouterr().err

    def test_many_ids_from_stdin_each_once(self, cfg, capsys, monkeypatch):
        ids = [add_message("deferred") for _ in range(50)]
        text = "".join(f"{q}\n{q}\n" for q in ids) + "not-an-id\n"
        monkeypatch.setattr("sys.stdin", io.StringIO(text))
        postsuper.main(["-d", "-"])
        err = capsys.readouterr().err
        assert "Deleted: 50 messages" in err
        assert "invalid mail queue id: not-an-id" in err

    def test_unknown_id_deletes_nothing_and_says_so(self, cfg, capsys):
        postsuper.main(["-d", "BBBBBBBBBBzB"])     # as Postfix 3.7 does
        assert "postsuper: Deleted: 0 messages" in capsys.readouterr().err

    def test_unknown_queue_name_is_a_usage_error(self, cfg):
        with pytest.raises(SystemExit) as e:
            postsuper.main(["-d", "ALL", "nosuchqueue"])
        assert e.value.code == 1        # Postfix: "fatal: invalid directory name"


class TestHold:
    def test_hold_and_release(self, cfg, capsys):
        qid = add_message("deferred")
        postsuper.main(["-h", qid])
        assert where(qid) == "hold"
        assert "Placed on hold: 1 message" in capsys.readouterr().err
        postsuper.main(["-H", "ALL"])
        assert where(qid) == "deferred"
        err = capsys.readouterr().err
        assert f"{qid}: released from hold" in err
        assert "Released from hold: 1 message" in err

    def test_hold_all_takes_incoming_active_deferred(self, cfg, capsys):
        ids = [add_message(q) for q in ("incoming", "active", "deferred")]
        postsuper.main(["-h", "ALL"])
        assert [where(q) for q in ids] == ["hold"] * 3


class TestRequeue:
    def test_requeue_moves_to_maildrop_and_drops_old_logs(self, cfg, capsys):
        qid = add_message("deferred")
        log_path = queue.defer_log_path(qid)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        open(log_path, "w").write("recipient=bob@example.org\n\n")
        postsuper.main(["-r", "ALL"])
        assert where(qid) == "maildrop"
        assert not os.path.exists(log_path)
        err = capsys.readouterr().err
        assert f"{qid}: requeued" in err and "Requeued: 1 message" in err


class TestStructure:
    def test_misplaced_file_moves_to_its_hashed_directory(self, cfg, capsys):
        qid = add_message("deferred")
        right = queue.path_of("deferred", qid)
        os.rename(right, f"deferred/{qid}")
        postsuper.main(["-s"])
        assert os.path.exists(right)

    def test_strays_are_reported(self, cfg, capsys):
        open("incoming/not a queue file", "w").close()
        postsuper.main(["-s"])
        assert "postsuper: warning: bogus file name: incoming/not a queue file\n" \
            in capsys.readouterr().err
        assert os.path.exists("incoming/not a queue file")     # Postfix leaves it too


class TestRepairPass:
    def test_postsuper_alone_checks_structure_and_purges(self, cfg, capsys):
        """Without options, postsuper does -s and -p (the start-up pass); before,
        it did nothing at all."""
        misplaced = add_message("deferred")
        os.rename(queue.path_of("deferred", misplaced), f"deferred/{misplaced}")
        stale = queue.reserve("incoming")           # a killed cleanup's empty file
        old = time.time() - 2 * postsuper.STALE_AGE
        os.utime(queue.path_of("incoming", stale), (old, old))
        open("active/junk", "w").close()
        assert postsuper.main([]) == 0
        assert where(misplaced) == "deferred"
        assert os.path.exists(queue.path_of("deferred", misplaced))
        assert not os.path.exists(queue.path_of("incoming", stale))
        err = capsys.readouterr().err
        assert "postsuper: warning: bogus file name: active/junk\n" in err


    def test_a_delivery_log_without_its_message_is_removed(self, cfg, capsys):
        # A killed `postsuper -d ALL` leaves the defer log of a deleted message.
        orphan = add_message("deferred")
        kept = add_message("deferred")
        old = time.time() - 2 * postsuper.ORPHAN_AGE
        for qid in (orphan, kept):
            path = queue.defer_log_path(qid)
            queue.make_dirs(os.path.dirname(path))
            with open(path, "w") as f:
                f.write("recipient=a@b\n")
            os.utime(path, (old, old))
        os.unlink(queue.path_of("deferred", orphan))
        assert postsuper.main([]) == 0
        assert not os.path.exists(queue.defer_log_path(orphan))
        assert os.path.exists(queue.defer_log_path(kept))
        assert f"removed: no queue file {orphan}" in capsys.readouterr().err


class TestPurge:
    def test_old_temporary_and_incomplete_files_go(self, cfg, capsys):
        w = queue.create("incoming")
        old = time.time() - 2 * postsuper.STALE_AGE
        os.utime(w.path, (old, old))
        tmp = "maildrop/.tmp.999.1"
        open(tmp, "w").close()
        os.utime(tmp, (old, old))
        fresh = queue.create("incoming")
        kept = add_message("incoming")
        os.utime(queue.path_of("incoming", kept), (old, old))
        postsuper.main(["-p"])
        assert not os.path.exists(w.path) and not os.path.exists(tmp)
        assert os.path.exists(fresh.path)
        assert os.path.exists(queue.path_of("incoming", kept))
        fresh.abort()


class TestInodeRepair:
    def test_restored_file_gets_an_id_that_matches_its_inode(self, cfg, capsys):
        qid = add_message("deferred")
        path = queue.path_of("deferred", qid)
        log_path = queue.defer_log_path(qid)
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        open(log_path, "w").write("recipient=bob@example.org\n\n")
        # A copy (as from a backup) has a new inode under the old name.
        data = open(path, "rb").read()
        os.unlink(path)
        open("deferred/spare", "wb").close()          # take the freed inode
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o700)
        os.unlink("deferred/spare")
        if queue.queue_id_inode(qid) == os.stat(path).st_ino:
            pytest.skip("the file system gave the copy the same inode")
        postsuper.main(["-s"])
        [(new_id, new_path)] = list(queue.scan("deferred"))
        assert new_id != qid and new_id[:11] == qid[:11]
        assert queue.queue_id_inode(new_id) == os.stat(new_path).st_ino
        assert os.path.exists(queue.defer_log_path(new_id))
        assert "renamed to" in capsys.readouterr().err


class TestQueueDirectories:
    """A hashed subdirectory postsuper creates is a queue directory: 0700 and,
    run as root, mail_owner's (Debian's postsuper -H ALL: drwx------ postfix postfix)."""

    def test_release_creates_hashed_directories_as_mail_owner(self, cfg, capsys):
        held = add_message("hold")
        parent = os.path.dirname(queue.path_of("deferred", held))
        if parent != "deferred":
            shutil.rmtree(parent, ignore_errors=True)
        assert postsuper.main(["-H", "ALL"]) == 0
        st = os.stat(parent)
        assert stat.S_IMODE(st.st_mode) == 0o700
        if os.geteuid() == 0:
            owner = pwd.getpwnam(cfg.get("mail_owner"))
            assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid)


class TestDeleteAllInTwoProcesses:
    def test_every_file_and_its_log_goes_and_each_is_said_once(self, cfg, capfd, monkeypatch,
                                                               tmp_path):
        from pymaster.mail.delivery import append_status_log
        from pymaster.util import forkjoin
        monkeypatch.setattr(postsuper, "SPLIT_MIN", 2)
        monkeypatch.setattr(forkjoin, "_cores", lambda: 2)
        ids = [add_message("deferred") for _ in range(10)]
        for qid in ids:
            append_status_log(queue.defer_log_path(qid), {"recipient": "bob@example.org"})
        assert postsuper.main(["-d", "ALL"]) == 0
        err = capfd.readouterr().err
        assert sorted(line.split()[1].rstrip(":") for line in err.splitlines()
                      if line.endswith(": removed")) == sorted(ids)
        assert "postsuper: Deleted: 10 messages\n" in err
        assert list(queue.scan("deferred")) == [] and list(queue.scan("defer")) == []
        assert (tmp_path / "maillog").read_text().count(": removed") == 10
