#!/usr/bin/env python3
"""Figures for `make bench`: requests straight to workers, and the master's footprint.

run(workdir) starts a real master (`postfix -c DIR start`) on a master.cf of
three request services whose workers just answer (this file is their
program: run with the master's `-n NAME -t TYPE` arguments it serves), then
measures

  - round trips per second to private/NAME with 1, 4 and 16 workers: one
    client takes a lease on each (pymaster.util.ipc) and keeps one request
    in flight on every lease; and the master's CPU meanwhile (it carries
    no request, so this should be next to nothing);
  - the master's CPU use while idle, over a few seconds (psutil);
  - the resident memory of the master and of one idle worker.

Benchmarks are not tests: nothing here asserts a figure.

Interface:
    run(workdir) -> list[str]     one printable line per figure
    python -m bench.master [WORKDIR]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
WORKERS = (1, 4, 16)
MEASURE_SECONDS = 2.0
IDLE_SECONDS = 3.0


def write_instance(workdir: Path) -> tuple[Path, Path]:
    """write_instance - main.cf and master.cf for the benchmark services."""
    config_dir, queue_dir = workdir / "etc", workdir / "spool"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "main.cf").write_text(
        f"queue_directory = {queue_dir}\nmaillog_file = {workdir}/maillog\n"
        "mail_owner = postfix\n")
    lines = [f"bench{n} unix - n n - {n} {Path(__file__).resolve()} -o max_use=0"
             for n in WORKERS]
    (config_dir / "master.cf").write_text("\n".join(lines) + "\n")
    return config_dir, queue_dir


def round_trips(queue_dir: Path, service: str, leases: int) -> tuple[float, float]:
    """round_trips - answered requests per second, one in flight per lease,
    and the master's CPU seconds per second meanwhile."""
    import psutil
    from pymaster.util import ipc
    master = psutil.Process(master_pid(queue_dir))
    path = ipc.endpoint("private", service, str(queue_dir))
    held = [ipc.Lease(path) for _ in range(leases)]
    poller = ipc.Poller()
    try:
        for lease in held:
            lease.wait_open(30)         # the master starts a worker for each
            poller.register(lease)
            lease.send({"op": "ping"})
        done, start, before = 0, time.perf_counter(), master.cpu_times()
        while time.perf_counter() - start < MEASURE_SECONDS:
            for lease in poller.poll(1000):
                if lease.has_reply():
                    lease.recv()
                    done += 1
                    lease.send({"op": "ping"})
        elapsed, after = time.perf_counter() - start, master.cpu_times()
        cpu = after.user + after.system - before.user - before.system
        return done / elapsed, max(0.0, cpu) / elapsed
    finally:
        for lease in held:
            lease.close()


def master_pid(queue_dir: Path) -> int:
    return int((queue_dir / "pid" / "master.pid").read_text().split()[0])


def footprint(queue_dir: Path) -> list[str]:
    """footprint - idle CPU of the master, memory of master and one worker."""
    import psutil
    master = psutil.Process(master_pid(queue_dir))
    time.sleep(0.5)
    before = master.cpu_times()
    time.sleep(IDLE_SECONDS)
    after = master.cpu_times()
    cpu = max(0.0, after.user + after.system - before.user - before.system) / IDLE_SECONDS
    lines = [f"master idle CPU: {cpu * 100:.2f}% of one core over {IDLE_SECONDS:g}s",
             f"master resident memory: {master.memory_info().rss / 1e6:.1f} MB"]
    workers = master.children()
    if workers:
        lines.append(f"idle worker resident memory: {workers[0].memory_info().rss / 1e6:.1f} MB")
    return lines


def run(workdir: str | os.PathLike) -> list[str]:
    """run - start an instance in WORKDIR, measure, stop it; the figures."""
    config_dir, queue_dir = write_instance(Path(workdir))
    postfix = [str(BIN / "postfix"), "-c", str(config_dir)]
    started = subprocess.run(postfix + ["start"], capture_output=True, text=True)
    if started.returncode != 0:
        return [f"master benchmark: postfix start failed: {started.stderr.strip()}"]
    try:
        lines = []
        for n in WORKERS:
            rate, cpu = round_trips(queue_dir, f"bench{n}", n)
            lines.append(f"requests to {n:>2} worker(s) over {n:>2} lease(s): {rate:,.0f} "
                         f"round trips/s, master CPU {cpu * 100:.2f}% of one core")
        return lines + footprint(queue_dir)
    finally:
        subprocess.run(postfix + ["stop"], capture_output=True)


# -- the benchmark service itself ----------------------------------------------

def serve() -> None:
    """serve - the benchmark's worker: answer every request at once."""
    from pymaster.master import service

    def body(svc: service.Service) -> None:
        svc.enter_jail(lambda svc: None)
        svc.serve_requests(lambda header, payload: ({"status": "ok"}, []))
    service.main("bench", body)


def main() -> None:
    if "-n" in sys.argv[1:]:
        serve()
        return
    workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="bench-master-")
    for line in run(workdir):
        print(line)


if __name__ == "__main__":
    main()
