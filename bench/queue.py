"""Queue benchmark: listing, deleting and scanning a big deferred queue.

Both mail systems get a deferred queue of the same N messages (default
100,000: one small message, many files), not due for an hour, and are timed
on the same four jobs: `postqueue -p` and `postqueue -j` (output to a file,
whose message count is checked), qmgr's first full walk over the deferred
queue after `postfix start` (start included), and `postsuper -d ALL` (the
count it reports is checked).

pymaster: the N messages are written straight into a spool with
pymaster.mail.queue's writer (no fsync: this builds a test queue, it does not
receive mail), each with the defer log a deferral leaves. The scan ends at qmgr's verbose `deferred queue scan done:
N file(s)` log line.

Debian's Postfix, where installed and we are root: a throw-away instance
(`postfix -c DIR`, spool under the work directory, smtpd on a free loopback
port) with `defer_transports = smtp` takes one message from smtp-source and
defers it; Postfix stops; that queue file and its defer log are the
template. Submitting 100,000 through smtpd would take minutes, so the
template is cloned the way Postfix's own cleanup names a file: create it
under a temporary name, read its inode, rename it to the short queue ID
(five hex digits of microseconds, then the inode number in hex) in its
hashed directory, and write the clone's defer log beside it. The queue ID
that the template carries inside (the `log_ident` attribute and the
Received: header) is replaced by the clone's own, which has the same
length, so every record offset stays valid; a clone whose inode would give
an ID of another length is set aside (so the next gets a new inode), made
again, and removed before Postfix starts. `postfix start` runs
Postfix's structure check (postsuper) over the result. The scan ends at
the verbose qmgr's `done deferred queue scan` log line; Postfix's qmgr -v
also logs three lines per skipped file, and that cost is in its figure.
Postfix lists its queue through the running master (showq), so its
`postqueue` and `postsuper` are timed after the scan, with Postfix up and
idle; pymaster's run with the master stopped.

Each side's timed jobs follow one untimed `postqueue -p` over its queue:
the page cache of this machine does not keep a freshly built queue (seen on
a VM: the first listing after the build took four times the second), and
both sides must start from the same state, every file read once.

Every wait is bounded in time, every loop in count; Postfix is stopped
(and, if it does not stop, aborted) whatever happens.

Interface: run(workdir: Path, messages=100_000, postfix=True) -> [line]
           clone_postfix_queue(queue_dir: Path, count: int) -> int
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymaster.mail import delivery, queue, records  # noqa: E402
from tests.support.instance import BIN, Instance  # noqa: E402

DEBIAN = Path("/usr/sbin")
SMTP_SOURCE = shutil.which("smtp-source")
CONTENT = b"Subject: queue bench\nFrom: bench@example.com\n\n" + b"x" * 200 + b"\n"
MASTER_CF = "qmgr      unix  n       -       n       300     1       qmgr -v\n" \
            "cleanup   unix  n       -       n       -       0       cleanup\n" \
            "showq     unix  n       -       n       -       -       showq\n"
TIMEOUT = 600
ECHO = ROOT / "tests" / "services" / "echo.py"
JOBS = ("postqueue -p", "postqueue -j", "start + qmgr scan", "postsuper -d ALL")
# A few clones may draw an inode whose hex form is longer or shorter than
# the template's; they are remade, but never without end.
CLONE_RETRIES = 1000


class NoSync(queue.FileSystem):
    """Builds a test queue quickly: nothing here needs to survive a crash."""

    def fsync(self, fd: int) -> None:
        pass


@dataclass
class Job:
    """One timed command: seconds taken, the message count it reported, and
    the CPU seconds (user + system) of the command itself, where measured."""
    seconds: float
    count: int | None = None
    cpu: float | None = None


# -- measuring ------------------------------------------------------------------

def timed(argv: list[str], out: Path, env: dict | None = None) -> Job:
    """timed - run ARGV with its output in OUT; seconds and the messages it reported."""
    start, usage = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as f:
        subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, env=env,
                       timeout=TIMEOUT, check=False)
    seconds, after = time.monotonic() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    return Job(seconds, reported_count(argv, out.read_bytes()), cpu)


def reported_count(argv: list[str], output: bytes) -> int | None:
    """reported_count - how many messages a postqueue/postsuper run says it saw."""
    if "-j" in argv:
        return sum(1 for line in output.splitlines() if line.startswith(b"{"))
    if "-p" in argv:
        if b"Mail queue is empty" in output:
            return 0
        found = re.search(rb"in (\d+) Requests?\.", output)
    else:
        found = re.search(rb"Deleted: (\d+) messages?", output)
    return int(found.group(1)) if found else None


def wait_for_text(path: Path, needle: bytes, offset: int, timeout: float) -> bool:
    """wait_for_text - whether NEEDLE appears in the growing file PATH past OFFSET in time."""
    deadline, tail = time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        if needle in tail + chunk:
            return True
        tail = (tail + chunk)[-len(needle):]
        time.sleep(0.05)
    return False


def log_since(path: Path, offset: int) -> bytes:
    """log_since - what was logged to PATH past OFFSET."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- pymaster -------------------------------------------------------------------

def build_queue(queue_dir: Path, count: int) -> float:
    """build_queue - COUNT deferred messages, not due for an hour; seconds taken."""
    start = time.monotonic()
    cwd = os.getcwd()
    os.chdir(queue_dir)
    try:
        owner = os.stat("deferred")
        fs, later = NoSync(), time.time() + 3600
        for i in range(count):
            rcpt = records.Recipient(f"user{i % 100}@example.net")
            w = queue.create("incoming", fs)
            w.write_envelope(time.time(), "bench@example.com", [rcpt], {})
            w.write_content([CONTENT])
            qid = w.commit()
            path = queue.move(qid, "incoming", "deferred")
            os.chown(path, owner.st_uid, owner.st_gid)
            queue.set_retry_time(path, later)
            write_defer_log(qid, rcpt)
    finally:
        os.chdir(cwd)
    # Written without fsync: let the disk catch up now, so the timings that
    # follow do not pay for this build's writeback.
    os.sync()
    return time.monotonic() - start


def write_defer_log(qid: str, rcpt: records.Recipient) -> None:
    """write_defer_log - why RCPT waits, as a delivery agent records a deferral.

    A deferred message has one, in either mail system: showq reads it for
    postqueue's reason, postsuper deletes it with the message."""
    delivery.append_status_log(queue.defer_log_path(qid), {
        "recipient": rcpt.address, "orig_rcpt": rcpt.orig, "offset": rcpt.offset,
        "dsn_orcpt": rcpt.orcpt, "notify_flags": rcpt.notify, "status": "4.3.2",
        "action": "delayed", "reason": "deferred transport", "relay": "none",
        "time": f"{time.time():.0f}"})


def pymaster_figures(workdir: Path, count: int) -> dict[str, Job | float]:
    """pymaster_figures - the four jobs on a pymaster queue of COUNT messages."""
    inst = Instance(workdir, main_cf={"queue_run_delay": "3600s"}, master_cf="", start=False)
    # The instance wants something on its SMTP port: the tests' echo service.
    (inst.config_dir / "master.cf").write_text(
        f"127.0.0.1:{inst.smtp_port} inet n - n - 1 {ECHO}\n" + MASTER_CF)
    queue.create_layout(str(inst.queue_dir), "postfix" if os.geteuid() == 0 else None,
                        "postdrop" if os.geteuid() == 0 else None)
    figures: dict[str, Job | float] = {"build": build_queue(inst.queue_dir, count)}
    env, out = inst.env(), workdir / "out"
    timed([str(BIN / "postqueue"), "-p"], out, env)         # warm-up, as Postfix's
    figures["postqueue -p"] = timed([str(BIN / "postqueue"), "-p"], out, env)
    figures["postqueue -j"] = timed([str(BIN / "postqueue"), "-j"], out, env)
    figures["start + qmgr scan"] = pymaster_scan(inst, count)
    figures["postsuper -d ALL"] = timed([str(BIN / "postsuper"), "-d", "ALL"], out, env)
    return figures


def pymaster_scan(inst: Instance, count: int) -> Job:
    """pymaster_scan - from `postfix start` to qmgr's end of its deferred walk."""
    start = time.monotonic()
    inst.start()
    try:
        inst.wait_for_log(rf"deferred queue scan done: {count} file", timeout=TIMEOUT)
        return Job(time.monotonic() - start, count)
    finally:
        inst.stop()


# -- Postfix --------------------------------------------------------------------

def postfix_missing() -> str:
    """postfix_missing - why Postfix cannot be measured here, or ''."""
    if not (DEBIAN / "postfix").exists() or not SMTP_SOURCE:
        return "Debian's Postfix and its smtp-source are not installed"
    if os.geteuid() != 0:
        return "Postfix's queue can only be built as root"
    return ""


def postfix_instance(workdir: Path):
    """postfix_instance - a stopped throw-away Postfix that defers all mail."""
    from bench.run import PostfixInstance
    pf = PostfixInstance(workdir, {"myhostname": "bench.example.com", "mydestination": "",
                                   "defer_transports": "smtp", "mynetworks": "127.0.0.0/8",
                                   "smtpd_recipient_restrictions": "permit_mynetworks, reject",
                                   "queue_run_delay": "3600s"})
    # qmgr -v: the only sign Postfix gives of the end of a queue scan.
    master_cf = pf.config_dir / "master.cf"
    master_cf.write_text(re.sub(r"(?m)^(qmgr\s.*\sqmgr)\s*$", r"\1 -v", master_cf.read_text()))
    return pf


def stop_postfix(pf) -> None:
    """stop_postfix - stop PF's master; abort it if it is still there."""
    try:
        pid = pf.master_pid()
    except (OSError, ValueError, IndexError):
        pid = None
    pf.run("stop")
    # `postfix stop` returns when the master is told; give it a moment to go.
    deadline = time.monotonic() + 30
    while pid is not None and _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid is not None and _alive(pid):
        pf.run("abort")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def postfix_template(pf) -> None:
    """postfix_template - let PF take one message from smtp-source and defer it."""
    from bench.run import _wait_port
    pf.run("start")
    try:
        _wait_port(pf.port)
        subprocess.run([SMTP_SOURCE, "-m", "1", "-l", "250", "-f", "bench@example.com",
                        "-t", "user@example.net", f"127.0.0.1:{pf.port}"],
                       stdout=subprocess.DEVNULL, timeout=60, check=False)
        deadline = time.monotonic() + 60
        while not _template_files(pf.queue_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop_postfix(pf)


def _template_files(queue_dir: Path) -> tuple[Path, Path] | None:
    """_template_files - the one deferred queue file and its defer log, once both exist."""
    files = [p for p in (queue_dir / "deferred").rglob("*") if p.is_file()]
    if len(files) != 1:
        return None
    log = queue_dir / "defer" / files[0].parent.name / files[0].name
    return (files[0], log) if log.is_file() else None


def clone_postfix_queue(queue_dir: Path, count: int) -> int:
    """clone_postfix_queue - grow Postfix's one deferred message to COUNT; how many there are.

    Each clone is a file of its own, named as Postfix's cleanup names one,
    not due for an hour."""
    found = _template_files(queue_dir)
    if found is None:
        raise RuntimeError("Postfix did not defer the template message")
    path, log = found
    template_id, content, reason = path.name, path.read_bytes(), log.read_bytes()
    owner, later = path.stat(), time.time() + 3600
    os.utime(path, (later, later))
    _make_hash_dirs(queue_dir, owner)
    made, rejected = 1, []
    while made < count and len(rejected) <= CLONE_RETRIES:
        qid = _clone_one(queue_dir, template_id, content, reason, owner, later)
        if qid.startswith("reject."):
            rejected.append(queue_dir / "deferred" / qid)
        else:
            made += 1
    # Kept until now so that the file system gave each retry a new inode.
    for reject in rejected:
        reject.unlink()
    # Written without fsync, like pymaster's: the timings must not pay for it.
    os.sync()
    return made


def _clone_one(queue_dir: Path, template_id: str, content: bytes, reason: bytes,
               owner: os.stat_result, later: float) -> str:
    """_clone_one - one more deferred message and its defer log; its queue ID.

    A file whose inode makes an ID of another length than the template's is
    left as `reject.INODE` in the deferred directory, and that name returned."""
    temp = queue_dir / "deferred" / f"clone.{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        inode = os.fstat(fd).st_ino
        # Postfix's short queue ID: microseconds in five hex digits, the inode in hex.
        qid = "%05X%X" % (int(time.time() * 1e6) % 1_000_000, inode)
        if len(qid) != len(template_id):
            os.rename(temp, temp.with_name(f"reject.{inode}"))
            return f"reject.{inode}"
        os.write(fd, content.replace(template_id.encode(), qid.encode()))
        os.fchown(fd, owner.st_uid, owner.st_gid)
        os.fchmod(fd, owner.st_mode & 0o7777)
        # Postfix keeps a deferred file's next try in its modification time.
        os.utime(fd, (later, later))
    finally:
        os.close(fd)
    hashed = qid[0]
    os.rename(temp, queue_dir / "deferred" / hashed / qid)
    _write_defer_log(queue_dir / "defer" / hashed, qid, reason, owner)
    return qid


def _make_hash_dirs(queue_dir: Path, owner: os.stat_result) -> None:
    """_make_hash_dirs - deferred/X and defer/X for every hex digit X, as Postfix makes them."""
    # Short queue IDs start with a hex digit, and hash_queue_depth = 1 files
    # them under that digit.
    for queue_name in ("deferred", "defer"):
        for digit in "0123456789ABCDEF":
            path = queue_dir / queue_name / digit
            if not path.is_dir():
                path.mkdir(mode=0o700)
                os.chown(path, owner.st_uid, owner.st_gid)


def _write_defer_log(directory: Path, qid: str, reason: bytes, owner: os.stat_result) -> None:
    # The bounce daemon's record of why the recipient was deferred: showq
    # reads it for the reason that postqueue -p prints under the recipient.
    fd = os.open(directory / qid, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, reason)
        os.fchown(fd, owner.st_uid, owner.st_gid)
    finally:
        os.close(fd)


def postfix_figures(workdir: Path, count: int) -> dict[str, Job | float] | str:
    """postfix_figures - the four jobs on a Postfix queue of COUNT messages, or why not."""
    missing = postfix_missing()
    if missing:
        return missing
    pf = postfix_instance(workdir)
    postfix_template(pf)
    start = time.monotonic()
    try:
        made = clone_postfix_queue(pf.queue_dir, count)
    except (RuntimeError, OSError) as e:     # Postfix is stopped: say why, keep ours
        return f"its queue could not be built: {e}"
    figures: dict[str, Job | float] = {"build": time.monotonic() - start}
    if made != count:
        return f"only {made} of {count} queue files could be made"
    cdir, out = ["-c", str(pf.config_dir)], workdir / "out"
    mark, start = log_size(pf.maillog), time.monotonic()
    pf.run("start")
    try:
        if wait_for_text(pf.maillog, b"done deferred queue scan", mark, TIMEOUT):
            # qmgr -v names each file it skips as not yet due: all of them?
            skipped = log_since(pf.maillog, mark).count(b"qmgr_active_feed: skip ")
            figures["start + qmgr scan"] = Job(time.monotonic() - start, skipped)
        timed([str(DEBIAN / "postqueue"), *cdir, "-p"], out)    # warm-up, as pymaster's
        figures["postqueue -p"] = timed([str(DEBIAN / "postqueue"), *cdir, "-p"], out)
        figures["postqueue -j"] = timed([str(DEBIAN / "postqueue"), *cdir, "-j"], out)
        figures["postsuper -d ALL"] = postfix_delete_all(pf, out)
    finally:
        stop_postfix(pf)
    return figures


def postfix_delete_all(pf, out: Path) -> Job:
    """postfix_delete_all - time Postfix's `postsuper -d ALL`; the count it logged.

    Postfix's postsuper writes to stderr only when that is a terminal; its
    `Deleted: N messages` goes to the log."""
    mark = log_size(pf.maillog)
    job = timed([str(DEBIAN / "postsuper"), "-c", str(pf.config_dir), "-d", "ALL"], out)
    if job.count is None and wait_for_text(pf.maillog, b"Deleted: ", mark, 10):
        job.count = reported_count(["-d"], log_since(pf.maillog, mark))
    return job


# -- the report -----------------------------------------------------------------

def run(workdir: Path, messages: int = 100_000, postfix: bool = True) -> list[str]:
    """run - the queue section of `make bench`, as printable lines."""
    if messages < 1:
        return [f"queue: skipped (the queue needs at least 1 message, not {messages})"]
    workdir = Path(workdir)
    ours = pymaster_figures(workdir / "pymaster", messages)
    theirs = postfix_figures(workdir / "postfix", messages) if postfix \
        else "--no-postfix"
    lines = [f"queue: {messages} deferred messages, pymaster vs Debian Postfix"]
    if isinstance(theirs, str):
        lines.append(f"  Postfix: skipped ({theirs})")
        theirs = {}
    elif "start + qmgr scan" not in theirs:
        lines.append("  Postfix: qmgr scan not timed (no `done deferred queue scan` line seen)")
    lines.append(_build_line(ours, theirs))
    lines += [_job_line(name, ours.get(name), theirs.get(name)) for name in JOBS]
    if "start + qmgr scan" in theirs:
        lines.append("  (qmgr scan: Postfix's qmgr -v logs 3 lines per file, pymaster's "
                     "one line per scan; both figures include `postfix start`)")
    return lines


def _build_line(ours: dict, theirs: dict) -> str:
    built = f"  queue built in: pymaster {ours['build']:.1f} s (written by pymaster.mail.queue)"
    if "build" in theirs:
        built += f", postfix {theirs['build']:.1f} s (one deferred message, cloned)"
    return built


def _job_line(name: str, ours: Job | None, theirs: Job | None) -> str:
    mine = f"{ours.seconds:8.2f} s" if ours else "       -  "
    pf = f"{theirs.seconds:8.2f} s" if theirs else "       -  "
    ratio = f"{ours.seconds / theirs.seconds:6.2f}x" if ours and theirs else "     -"
    line = f"  {name:<18} pymaster {mine}   postfix {pf}   ratio {ratio}"
    # The command's own CPU: on a shared machine, wall time also measures
    # the neighbours. (Postfix's postqueue lists through showq, whose CPU
    # is the running master's, not the command's.)
    cpus = [f"{job.cpu:.2f}" if job and job.cpu is not None else "-" for job in (ours, theirs)]
    if any(c != "-" for c in cpus):
        line += f"   command CPU s {' / '.join(cpus)}"
    # What each command said it listed, deleted or scanned: a figure for
    # fewer messages than the queue holds would compare nothing.
    counts = [str(job.count) for job in (ours, theirs) if job and job.count is not None]
    if counts:
        line += f"   messages seen {' / '.join(counts)}"
    return line


if __name__ == "__main__":
    import tempfile
    if len(sys.argv) > 1 and not sys.argv[1].isdigit():
        sys.exit(f"usage: python -m bench.queue [MESSAGES]: not a count: {sys.argv[1]!r}")
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory(prefix="pymaster-queue-bench-") as tmp:
        for line in run(Path(tmp), size):
            print(line)
