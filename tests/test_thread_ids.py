"""pymaster.util.thread_ids: switching the effective ids of the calling thread only."""

import os
import shutil
import tempfile
import threading

import pytest

from pymaster.util import thread_ids


def effective_uid_of(tid: int) -> int:
    """effective_uid_of - the euid the kernel holds for thread TID of this process."""
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])
    raise AssertionError("no Uid line")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.skipif(not thread_ids.PER_THREAD, reason="no per-thread switch on this platform")
class TestPerThread:
    def test_only_the_calling_thread_switches_and_comes_back(self):
        started, done = threading.Event(), threading.Event()
        other = threading.Thread(target=lambda: (started.set(), done.wait(10)))
        other.start()
        started.wait(10)
        groups = os.getgroups()
        try:
            thread_ids.set_effective(65534, 65534, [65534])
            try:
                assert (os.geteuid(), os.getegid(), os.getgroups()) == (65534, 65534, [65534])
                assert effective_uid_of(other.native_id) == 0
            finally:
                thread_ids.set_root(groups)
            assert (os.geteuid(), os.getegid()) == (0, 0)
            assert sorted(os.getgroups()) == sorted(groups)
        finally:
            done.set()
            other.join()

    def test_files_are_created_as_the_thread_user(self):
        base = tempfile.mkdtemp(prefix="pymaster-thread-ids-")    # reachable by nobody
        try:
            os.chmod(base, 0o777)
            groups = os.getgroups()
            thread_ids.set_effective(65534, 65534, [65534])
            try:
                with open(os.path.join(base, "f"), "w") as f:
                    f.write("x")
            finally:
                thread_ids.set_root(groups)
            st = os.stat(os.path.join(base, "f"))
            assert (st.st_uid, st.st_gid) == (65534, 65534)
        finally:
            shutil.rmtree(base)

    def test_a_refused_switch_is_an_os_error(self):
        groups = os.getgroups()
        thread_ids.set_effective(65534, 65534, [65534])
        try:
            with pytest.raises(OSError):
                thread_ids.set_effective(1, 1, [1])     # no longer root: refused
        finally:
            thread_ids.set_root(groups)
        assert os.geteuid() == 0


def test_without_per_thread_calls_the_process_wide_functions(monkeypatch):
    calls = []
    monkeypatch.setattr(thread_ids, "PER_THREAD", False)
    for name in ("setgroups", "setegid", "seteuid"):
        monkeypatch.setattr(os, name, lambda value, name=name: calls.append((name, value)))
    thread_ids.set_effective(5000, 6000, [6000])
    thread_ids.set_root([0, 1])
    assert calls == [("setgroups", [6000]), ("setegid", 6000), ("seteuid", 5000),
                     ("seteuid", 0), ("setegid", 0), ("setgroups", [0, 1])]
