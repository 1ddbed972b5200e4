"""kill -9 of the local delivery agent mid-delivery: nothing lost, nothing twice.

One message goes to four local recipients, delivered one request at a time
(one local process: maxproc 1; one recipient per request): two address
extensions of a temporary system account (its Maildir), then an alias
whose command blocks (it writes a marker and sleeps), then a third
extension. While the command blocks, the test kills every local process
with SIGKILL. qmgr's request to the dead agent is never answered: after
ipc_timeout (5s here) qmgr gives it up and defers the recipient; the
command is made quick, and the retry (minimal_backoff_time 1s) delivers it
and the last recipient. The two recipients marked done before the kill are
never delivered again, and the queue ends empty.

Needs root (local switches to the account, useradd); skipped elsewhere.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.support.accounts import account_under, can_add_accounts
from tests.support.instance import Instance, submit_to_cleanup
from tests.support.wait import poll, wait_until

DOMAIN = "mx.example.com"
pytestmark = pytest.mark.skipif(not can_add_accounts(),
                                reason="local delivery to a system account needs root and useradd")

# While BLOCK exists the command records its pid in MARKER and sleeps;
# otherwise it records one quick run and exits 0.
SCRIPT = """#!/bin/sh
if [ -e {block} ]; then
    echo $$ > {marker}
    exec sleep 30
fi
cat > /dev/null
echo ran >> {runs}
"""


def local_processes(inst: Instance) -> list[psutil.Process]:
    """local_processes - the instance's live local agents (title pymaster/local)."""
    found = []
    for p in psutil.Process(inst.master_pid()).children():
        try:
            words = " ".join(p.cmdline())
            if ("pymaster/local" in words or "-n local" in words) \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_file(path: Path, timeout: float = 20) -> str:
    wait_until(lambda: path.exists() and path.read_text().strip(), timeout, f"{path} to appear")
    return path.read_text().strip()


def queue_files(inst: Instance) -> list[str]:
    return [f for q in ("incoming", "active", "deferred")
            for _, _, files in os.walk(inst.queue_dir / q) for f in files]


@pytest.fixture
def account(tmp_path):
    with account_under(tmp_path, "pm") as user:
        yield user


def crash_instance(tmp_path: Path, user: str) -> tuple[Instance, Path]:
    work = tmp_path / "work"
    work.mkdir()
    os.chmod(work, 0o1777)            # the command runs as default_privs
    script = tmp_path / "block.sh"
    script.write_text(SCRIPT.format(block=work / "block", marker=work / "marker",
                                    runs=work / "runs"))
    os.chmod(script, 0o755)
    (work / "block").write_text("")
    settings = {"myhostname": DOMAIN, "mydestination": DOMAIN,
                "alias_maps": "hash:$config_directory/aliases",
                "alias_database": "hash:$config_directory/aliases",
                "home_mailbox": "Maildir/", "recipient_delimiter": "+",
                "ipc_timeout": "5s", "queue_run_delay": "1s",
                "minimal_backoff_time": "1s", "maximal_backoff_time": "2s"}
    inst = Instance(tmp_path, main_cf=settings, start=False)
    (inst.config_dir / "aliases").write_text(f"blocker: \"|{script}\"\n")
    # One local process: the requests go one after the other, in order.
    master_cf = inst.config_dir / "master.cf"
    master_cf.write_text(re.sub(r"(?m)^local(\s+unix\s+\S+\s+\S+\s+\S+\s+\S+\s+)\S+",
                                r"local\g<1>1", master_cf.read_text()))
    return inst, work


def test_kill_9_of_local_mid_delivery_loses_nothing_and_repeats_nothing(tmp_path, account):
    inst, work = crash_instance(tmp_path, account.pw_name)
    sleeper = None
    with inst:
        inst.start()
        user = account.pw_name
        mailbox_rcpts = [f"{user}+{ext}@{DOMAIN}" for ext in ("first", "second", "last")]
        rcpts = [*mailbox_rcpts[:2], f"blocker@{DOMAIN}", mailbox_rcpts[2]]
        qid = submit_to_cleanup(inst, rcpts, b"Subject: crash test\n\nhello\n", "a@example.org")

        sleeper = int(wait_for_file(work / "marker"))
        sent = rf"{qid}: to=<([^>]+)>, .*status=sent \(delivered to maildir\)"
        before = Counter(re.findall(sent, inst.log_text()))
        assert before == Counter(mailbox_rcpts[:2])
        agents = local_processes(inst)
        assert agents, "no local process to kill"
        for p in agents:
            p.send_signal(signal.SIGKILL)
        # The orphaned command is ours too; make the retry quick.
        os.kill(sleeper, signal.SIGKILL)
        (work / "block").unlink()

        inst.wait_for_log(rf"{qid}: to=<blocker@{DOMAIN}>, .*status=deferred", timeout=30)
        inst.wait_for_log(rf"{qid}: to=<blocker@{DOMAIN}>, .*status=sent "
                          r"\(delivered to command: ", timeout=30)
        inst.wait_for_log(rf"{qid}: to=<{re.escape(mailbox_rcpts[2])}>, .*status=sent",
                          timeout=30)
        poll(lambda: not queue_files(inst), timeout=20, interval=0.1)
        assert queue_files(inst) == []

        # Each mailbox recipient exactly once; the command ran once to the end.
        messages = inst.maildir_messages(Path(account.pw_dir) / "Maildir", count=3)
        originals = Counter(re.search(rb"^X-Original-To: (\S+)$", m, re.M).group(1).decode()
                            for m in messages)
        assert originals == Counter(mailbox_rcpts)
        assert Counter(re.findall(sent, inst.log_text())) == Counter(mailbox_rcpts)
        assert (work / "runs").read_text() == "ran\n"
