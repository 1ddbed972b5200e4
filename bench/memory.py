"""Memory per process: the PSS, USS and RSS of every program of an instance.

run(workdir) starts a pymaster instance with bench/run.py's configuration,
reads every process of the tree idle (the master, qmgr, pickup, smtpd), then
sends MESSAGES one-kilobyte messages over SESSIONS sessions to `discard`
with smtp-source and samples the tree every 0.3 s; the sample with the
largest PSS sum is printed process by process (PSS: a shared page counts
1/N in each of its N processes, so the sum is what the tree costs; USS: the
pages only this process maps). As root, the services run in their jail as
in production. Figures are from psutil's memory_full_info (smaps_rollup).

Interface:
    run(workdir, messages=2000, sessions=20) -> list[str]
    python -m bench.run --only memory [--messages N --sessions N]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import BENCH_MAIN_CF  # noqa: E402
from bench.sampler import program_name  # noqa: E402
from tests.support.instance import Instance  # noqa: E402

MB = 1e6
# (program, pid, RSS, PSS, USS)
Row = tuple[str, int, int, int, int]


def tree_rows(master_pid: int) -> list[Row]:
    """tree_rows - one row per live process of the tree under MASTER_PID."""
    try:
        master = psutil.Process(master_pid)
        procs = [master, *master.children(recursive=True)]
    except psutil.Error:
        return []
    rows = []
    for proc in procs:
        try:
            info = proc.memory_full_info()
            rows.append((program_name(proc), proc.pid, info.rss, info.pss, info.uss))
        except psutil.Error:
            continue
    return rows


def format_rows(label: str, rows: list[Row]) -> list[str]:
    """format_rows - a header with the sums, then one line per process."""
    out = [f"{label}: {len(rows)} processes, RSS {sum(r[2] for r in rows) / MB:.1f} MB, "
           f"PSS {sum(r[3] for r in rows) / MB:.1f} MB, USS {sum(r[4] for r in rows) / MB:.1f} MB"]
    for name, pid, rss, pss, uss in sorted(rows):
        out.append(f"  {name:16} pid {pid:7}  RSS {rss / MB:5.1f}  PSS {pss / MB:5.1f}  "
                   f"USS {uss / MB:5.1f} MB")
    return out


def peak_during(master_pid: int, load: threading.Thread) -> list[Row]:
    """peak_during - the tree's sample with the largest PSS sum while LOAD runs."""
    peak: list[Row] = []
    load.start()
    while load.is_alive():
        rows = tree_rows(master_pid)
        if sum(r[3] for r in rows) > sum(r[3] for r in peak):
            peak = rows
        time.sleep(0.3)
    return peak


def run(workdir: Path, messages: int = 2000, sessions: int = 20) -> list[str]:
    source = shutil.which("smtp-source")
    if source is None:
        return ["memory: skipped (smtp-source from Debian's postfix package is not installed)"]
    with Instance(Path(workdir), main_cf=BENCH_MAIN_CF) as inst:
        pid = inst.master_pid()
        if pid is None:
            return ["memory: the master did not start"]
        time.sleep(2)           # let the first processes finish their start-up
        lines = format_rows("idle", tree_rows(pid))
        argv = [source, "-s", str(sessions), "-m", str(messages), "-l", "1024",
                "-f", "bench@example.com", "-t", "user@discard.example",
                f"127.0.0.1:{inst.smtp_port}"]
        load = threading.Thread(target=subprocess.run, args=(argv,),
                                kwargs={"stdout": subprocess.DEVNULL, "timeout": 300})
        peak = peak_during(pid, load)
    return lines + format_rows(f"peak under {sessions} sessions to discard "
                               f"({messages} messages)", peak)


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory(prefix="pymaster-memory-") as tmp:
        print("\n".join(run(Path(tmp), *[int(a) for a in sys.argv[1:3]])))
    os._exit(0)
