"""The log as operators' tools read it: pflogsumm's counts, and `postfix logrotate`.

A real instance receives a few messages that are delivered, one whose
recipient is rejected, one that bounces and one that is deferred; Debian's
pflogsumm must count each kind right from maillog_file. Then the log is
rotated under a running system and every process follows to the new file.
"""

from __future__ import annotations

import gzip
import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest

from pymaster.util import log
from tests.support.instance import Instance
from tests.support.wait import wait_until

PFLOGSUMM = shutil.which("pflogsumm")


def session_instance(tmp_path: Path) -> Instance:
    """session_instance - 127.0.0.1 may not relay; two relay domains fail on purpose."""
    transport = tmp_path / "transport"
    transport.write_text("bounce.example error:5.1.1 mailbox unavailable\n"
                         "defer.example retry:4.4.1 try again later\n")
    return Instance(tmp_path, main_cf={
        "mynetworks": "192.0.2.0/24",
        "relay_domains": "bounce.example, defer.example",
        "transport_maps": f"texthash:{transport}",
        # bounce.example must reach the error agent, not be refused at RCPT.
        "smtpd_reject_unlisted_recipient": "no",
    })


def send(inst: Instance, sender: str, recipients: list[str]) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as smtp:
        smtp.sendmail(sender, recipients, f"From: <{sender}>\nSubject: log test\n\nhello\n")


def grand_totals(report: str) -> dict[str, int]:
    """grand_totals - "received" -> 5 … from pflogsumm's Grand Totals section."""
    section = report.split("Grand Totals", 1)[1]
    counts = {}
    for kind in ("received", "delivered", "deferred", "bounced", "rejected"):
        m = re.search(rf"^\s*(\d+)\s+{kind}\b", section, re.M)
        counts[kind] = int(m.group(1)) if m else None
    return counts


@pytest.mark.skipif(PFLOGSUMM is None, reason="pflogsumm is not installed (make deb-packages)")
def test_pflogsumm_counts_a_session(tmp_path):
    with session_instance(tmp_path) as inst:
        for user in ("ann", "bob", "cy"):
            send(inst, "sender@localhost", [f"{user}@localhost"])
        send(inst, "", ["gone@bounce.example"])
        send(inst, "", ["later@defer.example"])
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(inst, "sender@localhost", ["someone@elsewhere.example"])
        inst.wait_for_log(r"status=sent", count=3)
        inst.wait_for_log(r"status=bounced")
        inst.wait_for_log(r"status=deferred")
        inst.wait_for_log(r"NOQUEUE: reject: RCPT from")
    report = subprocess.run([PFLOGSUMM, str(inst.maillog)], capture_output=True,
                            text=True, check=True).stdout
    assert grand_totals(report) == {"received": 5, "delivered": 3, "deferred": 1,
                                    "bounced": 1, "rejected": 1}, report


def test_logrotate_renames_compresses_and_everyone_follows(tmp_path):
    with Instance(tmp_path) as inst:
        send(inst, "sender@localhost", ["first@localhost"])
        inst.wait_for_log(r"to=<first@localhost>.*status=sent")
        done = inst.postfix("logrotate")
        assert done.returncode == 0, done.stderr.decode()
        send(inst, "sender@localhost", ["second@localhost"])
        inst.wait_for_log(r"postfix/smtpd\[\d+\]: \w+: client=")
        inst.wait_for_log(r"to=<second@localhost>.*status=sent")
        rotated = wait_for_file(tmp_path, "maillog.*.gz")
    old = gzip.decompress(rotated.read_bytes()).decode()
    assert "to=<first@localhost>" in old
    assert "to=<second@localhost>" not in old
    assert "to=<first@localhost>" not in inst.log_text()


def test_logrotate_refuses_what_it_cannot_rotate(tmp_path):
    inst = Instance(tmp_path, main_cf={"maillog_file": "/dev/stdout"}, start=False)
    done = inst.postfix("logrotate")
    assert done.returncode == 1
    assert "fatal: not rotating '/dev/stdout'" in done.stderr.decode()


def test_a_process_follows_a_renamed_log_file(tmp_path, monkeypatch):
    """pymaster.util.log itself: after a rename, the next check reopens the name."""
    path = tmp_path / "maillog"
    monkeypatch.setattr(log, "_state", log._State())
    log.open_destination(str(path))
    log.info("before")
    path.rename(tmp_path / "maillog.1")
    monkeypatch.setattr(log._state.writer, "checked", 0.0)   # the second has passed
    log.info("after")
    log.close()
    assert "before" in (tmp_path / "maillog.1").read_text()
    assert "after" in path.read_text() and "before" not in path.read_text()


def wait_for_file(directory: Path, pattern: str, timeout: float = 90) -> Path:
    """wait_for_file - PATTERN in DIRECTORY, once the compressor has finished
    (gzip removes the uncompressed file after the compressed one is whole)."""
    def compressed() -> Path | None:
        found = sorted(directory.glob(pattern))
        if found and not Path(str(found[0])[:-len(".gz")]).exists():
            return found[0]
        return None
    return wait_until(compressed, timeout, f"{pattern} in {directory}", interval=0.1)
