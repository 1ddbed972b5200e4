"""The queue manager end to end: the real master, cleanup, qmgr and agents.

Mail enters through the real cleanup service (the request smtpd and pickup
send), so each test sees the whole path: cleanup writes incoming/ and wakes
qmgr, qmgr moves the file to active and sends delivery requests to the
discard, error and retry agents the master starts, then removes, bounces or
defers the message. The SMTP side is replaced by the echo test service only
because the instance needs something on its port."""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.support.instance import Instance, submit_to_cleanup
from tests.support.wait import poll, wait_until

ECHO = Path(__file__).resolve().parents[1] / "services" / "echo.py"
TRANSPORT = """\
discard.example   discard:
error.example     error:5.1.1 User unknown
retry.example     retry:4.2.0 try again later
"""
SERVICES = """\
qmgr      unix  n       -       n       300     1       qmgr
cleanup   unix  n       -       n       -       0       cleanup
discard   unix  -       -       n       -       -       discard
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
"""


def instance(tmp_path: Path, **main_cf: str) -> Instance:
    settings = {"transport_maps": f"texthash:{tmp_path / 'etc' / 'transport'}",
                "myhostname": "mx.example.com", "mydestination": "",
                "queue_run_delay": "1s", "minimal_backoff_time": "1s",
                "maximal_backoff_time": "2s"}
    settings.update(main_cf)
    inst = Instance(tmp_path, main_cf=settings, master_cf="", start=False)
    (inst.config_dir / "transport").write_text(TRANSPORT)
    (inst.config_dir / "master.cf").write_text(
        f"127.0.0.1:{inst.smtp_port} inet n - n - 1 {ECHO}\n" + SERVICES)
    return inst


def submit(inst: Instance, *rcpts: str, sender: str = "sender@example.com") -> str:
    """submit - queue a message through cleanup; its queue ID."""
    return submit_to_cleanup(inst, rcpts, b"Subject: qmgr test\n\nhello\n", sender)


def queue_files(inst: Instance, name: str) -> list[str]:
    return [f for _, _, files in os.walk(inst.queue_dir / name) for f in files]


def qmgr_process(inst: Instance) -> psutil.Process:
    def live_qmgr() -> psutil.Process | None:
        for p in psutil.Process(inst.master_pid()).children():
            try:
                if "-n qmgr" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    return p
            except psutil.NoSuchProcess:
                continue
        return None
    return wait_until(live_qmgr, 20, "a qmgr process")


def test_discarded_mail_is_sent_and_removed(tmp_path):
    with instance(tmp_path) as inst:
        inst.start()
        qid = submit(inst, "a@discard.example")
        inst.wait_for_log(rf"{qid}: from=<sender@example.com>, size=\d+, nrcpt=1 \(queue active\)")
        inst.wait_for_log(rf"postfix/discard\[\d+\]: {qid}: to=<a@discard.example>, relay=none, "
                          r"delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(discard.example\)")
        inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: removed")
        assert queue_files(inst, "active") == [] and queue_files(inst, "incoming") == []


def test_error_transport_bounces(tmp_path):
    with instance(tmp_path) as inst:
        inst.start()
        qid = submit(inst, "nobody@error.example")
        inst.wait_for_log(rf"postfix/error\[\d+\]: {qid}: to=<nobody@error.example>, "
                          r"relay=none, .*dsn=5\.1\.1, status=bounced \(User unknown\)")
        inst.wait_for_log(rf"{qid}: removed")


def test_retry_defers_and_tries_again_after_the_backoff(tmp_path):
    with instance(tmp_path) as inst:
        inst.start()
        qid = submit(inst, "later@retry.example", "now@discard.example")
        deferred = rf"{qid}: to=<later@retry.example>, .*dsn=4\.2\.0, status=deferred \(try again later\)"
        inst.wait_for_log(deferred)
        inst.wait_for_log(rf"{qid}: to=<now@discard.example>, .*status=sent")
        inst.wait_for_log(deferred, count=2, timeout=30)
        # Still queued: in deferred/ or, while qmgr retries it, active/. One
        # look at both can miss a move between them, so look until it is seen.
        queued = poll(lambda: queue_files(inst, "deferred") == [qid]
                      or queue_files(inst, "active") == [qid])
        assert queued and f"{qid}: removed" not in inst.log_text()
        sent = re.findall(rf"{qid}: to=<now@discard.example>.*status=sent", inst.log_text())
        assert len(sent) == 1


def test_postqueue_flush_retries_at_once(tmp_path):
    with instance(tmp_path, minimal_backoff_time="1h", maximal_backoff_time="2h",
                  queue_run_delay="1h") as inst:
        inst.start()
        qid = submit(inst, "later@retry.example")
        deferred = rf"{qid}: to=<later@retry.example>, .*status=deferred"
        inst.wait_for_log(deferred)
        done = inst.command("postqueue", "-f")
        assert done.returncode == 0, done.stderr
        inst.wait_for_log(deferred, count=2)


def test_kill_9_of_qmgr_loses_nothing_and_repeats_nothing(tmp_path):
    with instance(tmp_path) as inst:
        inst.start()
        ids = [submit(inst, f"a{i}@discard.example", f"b{i}@discard.example") for i in range(30)]
        os.kill(qmgr_process(inst).pid, signal.SIGKILL)
        ids += [submit(inst, f"c{i}@discard.example") for i in range(5)]
        # Every recipient delivered and every file gone. (A kill that lands
        # between unlinking a finished file and logging "removed" loses only
        # that log line, so the test looks at the queue itself.)
        inst.wait_for_log(r"status=sent", timeout=60, count=65)
        poll(lambda: not any(queue_files(inst, q) for q in ("incoming", "active", "deferred")),
             timeout=30, interval=0.1)
        sent = Counter(re.findall(r"(\w+): to=<([^>]+)>.*status=sent", inst.log_text()))
        assert {qid for qid, _ in sent} == set(ids)
        assert len(sent) == 65 and set(sent.values()) == {1}
        for q in ("incoming", "active", "deferred"):
            assert queue_files(inst, q) == []


def test_stop_and_start_with_mail_in_the_queue(tmp_path):
    with instance(tmp_path, minimal_backoff_time="2s", maximal_backoff_time="2s") as inst:
        inst.start()
        qid = submit(inst, "later@retry.example")
        inst.wait_for_log(rf"{qid}: to=<later@retry.example>, .*status=deferred")
        inst.stop()
        # Rewrite the transport while stopped: the deferred mail is now deliverable.
        (inst.config_dir / "transport").write_text(TRANSPORT.replace(
            "retry:4.2.0 try again later", "discard:"))
        inst.start()
        inst.wait_for_log(rf"{qid}: to=<later@retry.example>, .*status=sent", timeout=30)
        inst.wait_for_log(rf"{qid}: removed")
