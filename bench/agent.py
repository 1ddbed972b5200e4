"""Delivery agent benchmark: CPU per message of the virtual agent, in-process.

The smtp benchmark (bench/run.py) measures whole programs under a shared
load; this one isolates the virtual agent's path for one request: request
parsing, the done check, reading the queue file, the Maildir write (tmp/,
fsync, link into new/), marking the recipient done, the status line, the
reply. N one-kilobyte messages with one recipient each are queued in a
temporary spool with pymaster's own writer, then handed one request at a
time to the same handler the virtual program serves (delivery.request_handler
around VirtualAgent.deliver). A zeromq context is open meanwhile, as in the
real program, since its threads make uid switches dearer. Run as root, the
mailbox is written as uid/gid 65534, as the smtp benchmark's is.

CPU is the process's user and system time (os.times), apart: other load
does not count, though the system share depends on the file system's
state (ext4 scans past recently freed inodes to create a file); wall time
is printed beside it.

Interface: run(workdir: Path, messages=2000) -> [line]
           python -m bench.agent [MESSAGES]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from pymaster.mail import delivery, queue, records
from pymaster.util import log  # noqa: E402
from pymaster.mail.config import Config  # noqa: E402
from services.virtual import VirtualAgent  # noqa: E402

CONTENT = (b"From: bench@example.com\nTo: user@localhost\nSubject: agent bench\n\n"
           + b"x" * 75 + b"\n") * 12
NOBODY = "65534"


def make_instance(workdir: Path) -> Config:
    """make_instance - a spool (the working directory) and the agent's settings."""
    spool, base = workdir / "spool", workdir / "mailboxes"
    queue.create_layout(str(spool))
    base.mkdir()
    os.chmod(base, 0o777)
    for parent in base.parents:         # the mailbox owner must reach the base
        if parent != Path("/"):
            os.chmod(parent, parent.stat().st_mode | 0o011)
    os.chdir(spool)
    return Config(str(workdir), {
        "queue_directory": str(spool), "maillog_file": str(workdir / "maillog"),
        "myhostname": "bench.example.com", "virtual_mailbox_domains": "localhost",
        "virtual_mailbox_base": str(base), "virtual_mailbox_maps": "static:bench/",
        "virtual_uid_maps": f"static:{NOBODY}", "virtual_gid_maps": f"static:{NOBODY}"})


def queue_requests(count: int) -> list[dict]:
    """queue_requests - COUNT queued messages in active, as qmgr's request headers."""
    headers = []
    for _ in range(count):
        w = queue.create("incoming")
        w.write_envelope(time.time(), "bench@example.com",
                         [records.Recipient("user@localhost")], {"size": str(len(CONTENT))})
        w.write_content([CONTENT])
        qid = w.commit()
        path = queue.move(qid, "incoming", "active")
        msg = records.read_message(path)
        req = delivery.DeliveryRequest(
            queue_id=qid, path=path, transport="virtual", nexthop="localhost",
            sender=msg.sender, recipients=msg.recipients, arrival_time=msg.arrival_time,
            active_time=time.time(), attrs=dict(msg.attrs))
        headers.append(req.to_header())
    return headers


def run(workdir: Path, messages: int = 2000) -> list[str]:
    """run - deliver MESSAGES requests; CPU and wall time per message."""
    cwd = os.getcwd()
    context = zmq.Context()
    context.socket(zmq.PAIR).close()    # starts zeromq's threads, as in the agent
    try:
        cfg = make_instance(workdir)
        log.setup("virtual", cfg)        # status lines go to maillog_file
        headers = queue_requests(messages)
        handle = delivery.request_handler(VirtualAgent(cfg).deliver, cfg)
        usage0, wall0 = os.times(), time.perf_counter()
        sent = sum(handle(h, [])[0]["results"][0]["status"] == "sent" for h in headers)
        usage, wall = os.times(), time.perf_counter() - wall0
        user, system = usage.user - usage0.user, usage.system - usage0.system
        cpu = user + system
    finally:
        log.close()
        os.chdir(cwd)
        context.term()
    return [f"virtual agent, in-process: {sent}/{messages} delivered to a Maildir: "
            f"CPU {cpu / messages * 1000:.3f} ms/msg (user {user / messages * 1000:.3f}, "
            f"system {system / messages * 1000:.3f}), wall {wall / messages * 1000:.3f} ms/msg"]


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory(prefix="pymaster-agent-") as tmp:
        for line in run(Path(tmp), int(sys.argv[1]) if len(sys.argv) > 1 else 2000):
            print(line)
