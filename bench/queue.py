"""Queue benchmark: listing, deleting and scanning a big deferred queue.

pymaster: N deferred messages (default 100,000: one small message, many
files) are written straight into a spool with pymaster.queue's writer (no
fsync: this builds a test queue, it does not receive mail), then timed:
`postqueue -p` and `postqueue -j` (output to /dev/null), qmgr's first
full walk over the deferred queue after `postfix start` (start included; the
end is qmgr's verbose `deferred queue scan done: N file(s)` log line), and
`postsuper -d ALL`.

Postfix, where Debian's is installed and we are root: a queue Postfix built
itself, since its queue file format is its own. smtp-source submits M
messages (default 10,000: Postfix takes a few hundred a second, so 100,000
would dominate the run) to a Postfix with `defer_transports = smtp`, which
leaves every message deferred; then `postqueue -p`, `postqueue -j` and
`postsuper -d ALL` are timed. pymaster is timed on a queue of the same M
too, so the ratio compares like with like. Postfix's qmgr scan is not
timed: it logs nothing at the end of a scan.

Interface: run(workdir: Path, messages=100_000, postfix_messages=10_000) -> [line]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymaster import queue, records  # noqa: E402
from tests.e2e.instance import BIN, Instance  # noqa: E402

DEBIAN = Path("/usr/sbin")
SMTP_SOURCE = shutil.which("smtp-source")
CONTENT = b"Subject: queue bench\nFrom: bench@example.com\n\n" + b"x" * 200 + b"\n"
MASTER_CF = "qmgr      unix  n       -       n       300     1       qmgr -v\n" \
            "cleanup   unix  n       -       n       -       0       cleanup\n" \
            "showq     unix  n       -       n       -       -       showq\n"
TIMEOUT = 1800
ECHO = ROOT / "tests" / "services" / "echo.py"


class NoSync(queue.FileSystem):
    """Builds a test queue quickly: nothing here needs to survive a crash."""

    def fsync(self, fd: int) -> None:
        pass


def build_queue(queue_dir: Path, count: int) -> float:
    """build_queue - COUNT deferred messages, not due for an hour; seconds taken."""
    start = time.monotonic()
    cwd = os.getcwd()
    os.chdir(queue_dir)
    try:
        owner = os.stat("deferred")
        fs, later = NoSync(), time.time() + 3600
        for i in range(count):
            w = queue.create("incoming", fs)
            w.write_envelope(time.time(), "bench@example.com",
                             [records.Recipient(f"user{i % 100}@example.net")], {})
            w.write_content([CONTENT])
            qid = w.commit()
            path = queue.move(qid, "incoming", "deferred")
            os.chown(path, owner.st_uid, owner.st_gid)
            queue.set_retry_time(path, later)
    finally:
        os.chdir(cwd)
    # Written without fsync: let the disk catch up now, so the timings that
    # follow do not pay for this build's writeback.
    os.sync()
    return time.monotonic() - start


def timed(argv: list[str], env: dict | None = None) -> float:
    start = time.monotonic()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env, timeout=TIMEOUT, check=False)
    return time.monotonic() - start


def pymaster_figures(workdir: Path, count: int, scan: bool) -> dict[str, float]:
    inst = Instance(workdir, main_cf={"queue_run_delay": "3600s"}, master_cf="", start=False)
    # The instance wants something on its SMTP port: the tests' echo service.
    (inst.config_dir / "master.cf").write_text(
        f"127.0.0.1:{inst.smtp_port} inet n - n - 1 {ECHO}\n" + MASTER_CF)
    queue.create_layout(str(inst.queue_dir), "postfix" if os.geteuid() == 0 else None,
                        "postdrop" if os.geteuid() == 0 else None)
    figures = {"build": build_queue(inst.queue_dir, count)}
    env = inst.env()
    figures["postqueue -p"] = timed([str(BIN / "postqueue"), "-p"], env)
    figures["postqueue -j"] = timed([str(BIN / "postqueue"), "-j"], env)
    if scan:
        figures["start + qmgr scan"] = qmgr_scan_time(inst, count)
    figures["postsuper -d ALL"] = timed([str(BIN / "postsuper"), "-d", "ALL"], env)
    return figures


def qmgr_scan_time(inst: Instance, count: int) -> float:
    """qmgr_scan_time - from `postfix start` to qmgr's end of its deferred walk."""
    start = time.monotonic()
    inst.start()
    try:
        inst.wait_for_log(rf"deferred queue scan done: {count} file", timeout=TIMEOUT)
        return time.monotonic() - start
    finally:
        inst.stop()


def postfix_figures(workdir: Path, count: int) -> dict[str, float] | str:
    if not (DEBIAN / "postfix").exists() or os.geteuid() != 0 or not SMTP_SOURCE:
        return "Debian's Postfix (and smtp-source, run as root) not available"
    from bench.run import PostfixInstance, _wait_port
    pf = PostfixInstance(workdir, {"myhostname": "bench.example.com", "mydestination": "",
                                   "defer_transports": "smtp", "mynetworks": "127.0.0.0/8",
                                   "smtpd_recipient_restrictions": "permit_mynetworks, reject"})
    pf.run("start")
    try:
        _wait_port(pf.port)
        subprocess.run([SMTP_SOURCE, "-s", "10", "-m", str(count), "-l", "250",
                        "-f", "bench@example.com", "-t", "user@example.net",
                        f"127.0.0.1:{pf.port}"], stdout=subprocess.DEVNULL,
                       timeout=TIMEOUT, check=False)
        deadline = time.monotonic() + TIMEOUT
        while deferred_count(pf.queue_dir) < count and time.monotonic() < deadline:
            time.sleep(0.5)
        cdir = ["-c", str(pf.config_dir)]
        return {"postqueue -p": timed([str(DEBIAN / "postqueue"), *cdir, "-p"]),
                "postqueue -j": timed([str(DEBIAN / "postqueue"), *cdir, "-j"]),
                "postsuper -d ALL": timed([str(DEBIAN / "postsuper"), *cdir, "-d", "ALL"])}
    finally:
        pf.run("stop")


def deferred_count(queue_dir: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(queue_dir / "deferred"))


def run(workdir: Path, messages: int = 100_000, postfix_messages: int = 10_000) -> list[str]:
    workdir = Path(workdir)
    lines = []
    big = pymaster_figures(workdir / "big", messages, scan=True)
    lines.append(f"  pymaster, {messages} deferred messages:")
    lines += [f"    {name:<20} {secs:8.2f} s" for name, secs in big.items()]
    same = pymaster_figures(workdir / "same", postfix_messages, scan=False)
    postfix = postfix_figures(workdir / "postfix", postfix_messages)
    lines.append(f"  {postfix_messages} deferred messages, pymaster vs Debian Postfix:")
    if isinstance(postfix, str):
        lines.append(f"    Postfix: skipped ({postfix})")
        postfix = {}
    for name, secs in same.items():
        if name == "build":
            continue
        theirs = postfix.get(name)
        ratio = f"{secs / theirs:6.2f}x" if theirs else "     -"
        pf = f"{theirs:8.2f} s" if theirs is not None else "       -  "
        lines.append(f"    {name:<20} pymaster {secs:8.2f} s   postfix {pf}   ratio {ratio}")
    return lines


if __name__ == "__main__":
    import tempfile
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    small = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    with tempfile.TemporaryDirectory(prefix="pymaster-queue-bench-") as tmp:
        for line in run(Path(tmp), size, small):
            print(line)
