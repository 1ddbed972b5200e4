"""The start-up repair pass on planted debris, side by side with Debian's Postfix.

Debris that crashes and careless hands leave in a spool: a file whose name
is no queue ID, an empty queue file a killed writer left incomplete, a
garbage file in active/ without the completion mark, an orphan defer log.
`postsuper` without options (and `postfix start`, which runs it) must say
about them what Postfix 3.7's postsuper says, on standard error and in the
log, and exit as it does.

What Postfix 3.7 does with it (verified on Debian's package): it warns
`postsuper: warning: bogus file name: incoming/NAME` for every name that is
no queue ID and leaves the file; it removes neither empty or garbage queue
files (queue-ID names, complete or not) nor orphan logs. pymaster says the
same; it also removes its own temporary and incomplete files once they are
older than an hour (postsuper -p), which Postfix's names never match, and
delivery logs whose message is gone (postsuper -s), which would otherwise
stay for ever.

Skips (with the reason) when Debian's Postfix is not installed or not root.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from pymaster.mail import queue
from tests.support.instance import Instance
from tests.support.parity import postfix

pytestmark = pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")

SETTINGS = {"myhostname": "mx.example.com", "alias_maps": "", "alias_database": ""}
DAY = 86400


def _plant(spool: Path, owner_of: Path) -> dict[str, Path]:
    """_plant - the debris, owned as the spool's queue directories are."""
    st = owner_of.stat()
    now = time.time()
    made: dict[str, Path] = {}

    def put(name: str, directory: str, content: bytes, complete: bool = False,
            queue_id: str | None = None) -> None:
        path = spool / directory / "planting"
        path.write_bytes(content)
        final = path.with_name(queue_id or queue.new_queue_id(path.stat().st_ino, now - DAY))
        os.rename(path, final)
        os.chmod(final, 0o700 if complete else 0o600)
        os.chown(final, st.st_uid, st.st_gid)
        os.utime(final, (now - DAY, now - DAY))
        made[name] = final

    put("bogus", "incoming", b"junk", queue_id="not-a-queue-id")
    put("empty", "incoming", b"")
    put("garbage", "active", b"garbage\n")
    orphan = queue.new_queue_id(12345, now - DAY)
    put("orphan_log", "defer", b"recipient=x\n", queue_id=orphan)
    return made


def _repair(inst, spool: Path) -> tuple[int, str, list[str]]:
    made = _plant(spool, spool / "incoming")
    done = inst.command("postsuper")
    kept = sorted(name for name, path in made.items() if _still_there(path))
    return done.returncode, done.stderr.decode(), kept


def _still_there(path: Path) -> bool:
    """_still_there - the file, here or moved into a hashed subdirectory."""
    return path.exists() or any(path.parent.glob(f"*/{path.name}"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("repair")
    (base / "postfix").mkdir()
    (base / "pymaster").mkdir()
    pf = postfix.DebianPostfix(base / "postfix", {**SETTINGS, "enable_long_queue_ids": "yes"})
    pm = Instance(base / "pymaster", main_cf=SETTINGS)
    for inst in (pf, pm):       # the queue directories, as start makes them
        inst.start()
        inst.stop()
    os.chmod(pf.maillog, 0o666)     # postsuper writes it as mail_owner
    return pf, pm


# What pymaster does beyond Postfix, and why: debris -> the stderr line.
EXPECTED_EXTRA = {
    # An incomplete file with a queue ID's name, an hour old, is a killed
    # writer's (cleanup reserves the file at smtpd's first RCPT): postsuper -p
    # removes it, so it is never requeued into maildrop by postsuper -r ALL.
    "empty": r"postsuper: incoming/\w+: removed temporary file",
    "garbage": r"postsuper: active/\w+: removed temporary file",
    # A killed `postsuper -d ALL` leaves the defer log of a deleted message.
    "orphan_log": r"postsuper: warning: defer/\w/\w+: removed: no queue file \w+",
}


def test_postsuper_alone_says_what_postfix_says_about_debris(pair):
    pf, pm = pair
    want = _repair(pf, pf.queue_dir)
    got = _repair(pm, pm.queue_dir)
    assert want == (0, "postsuper: warning: bogus file name: incoming/not-a-queue-id\n",
                    ["bogus", "empty", "garbage", "orphan_log"])
    extra = [line for line in got[1].splitlines() if line not in want[1].splitlines()]
    assert sorted(extra) == sorted(
        line for line in extra if any(re.fullmatch(p, line) for p in EXPECTED_EXTRA.values()))
    assert len(extra) == len(EXPECTED_EXTRA)
    assert (got[0], [k for k in got[2]]) == \
        (want[0], [k for k in want[2] if k not in EXPECTED_EXTRA])


def test_postfix_start_runs_the_repair_pass(pair):
    pm = pair[1]
    stale = pm.queue_dir / "incoming" / ".tmp.4242.1"       # a killed writer's file
    stale.write_bytes(b"half a message")
    os.utime(stale, (time.time() - DAY, time.time() - DAY))
    (pm.queue_dir / "hold" / "junk").write_bytes(b"x")
    pm.start()
    try:
        log = pm.log_text()
        assert re.search(r"postfix/postsuper\[\d+\]: warning: bogus file name: hold/junk$",
                         log, re.M)
        assert not stale.exists()
        assert (pm.queue_dir / "hold" / "junk").exists()
    finally:
        pm.stop()
