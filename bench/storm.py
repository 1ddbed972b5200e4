"""`make bench` section: the memory of smtpd under a storm of idle connections.

STORM (500) clients connect to smtpd and stay silent. The figures are the
process count, RSS and PSS (psutil's memory_full_info, summed) of the smtpd
processes and of the whole tree under the master: before (at rest, after
one quick session), during the storm (once every connection was made and
the greetings that come within GREET_WAIT were read), and after (the
clients gone, once the smtpd processes are back to one or SETTLE seconds
passed; Postfix's smtpd processes stay up to max_idle, 100 s). smtpd's
process limit (100, default_process_limit) holds for both: Postfix greets
at most 100 of the clients, the others wait in the listen queue; pymaster's
smtpd processes take several sessions each. How many were greeted is
printed beside the figures. The method is the e2e storm test's
(tests/e2e/test_fuzz_smtpd.py); nothing here asserts a figure.

Interface: run(workdir, count=500, postfix=True) -> [line];  rows(workdir, ...) -> [StormResult]
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from bench.sampler import tree_memory
from tests.support.instance import Instance

STORM = 500
GREET_WAIT = 20.0
SETTLE = 30.0
MB = 1 << 20


@dataclass
class StormResult:
    name: str
    greeted: int
    smtpd: list[tuple[int, int, int]]      # before, during, after: (processes, RSS, PSS)
    tree: list[tuple[int, int, int]]


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def quick_session(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.recv(1024)
        sock.sendall(b"QUIT\r\n")
        sock.recv(1024)


def storm(port: int, count: int, master_pid: int) -> tuple[int, tuple, tuple]:
    """storm - COUNT silent connections; (greeted, smtpd memory, tree memory) meanwhile.

    The connections are made without waiting: a server whose listen queue is
    full (Postfix's is its process limit) leaves the rest in SYN retries."""
    socks, greeted = [], 0
    sel = selectors.DefaultSelector()
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            sel.register(sock, selectors.EVENT_READ)
            socks.append(sock)
        deadline = time.monotonic() + GREET_WAIT
        while greeted < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sel.unregister(key.fileobj)
                try:
                    greeted += key.fileobj.recv(512).startswith(b"220")
                except OSError:
                    pass
        return greeted, tree_memory(master_pid, "smtpd"), tree_memory(master_pid)
    finally:
        sel.close()
        for sock in socks:
            sock.close()


def measure(name: str, port: int, master_pid: int, count: int) -> StormResult:
    quick_session(port)
    time.sleep(1)
    before = (tree_memory(master_pid, "smtpd"), tree_memory(master_pid))
    greeted, smtpd_during, tree_during = storm(port, count, master_pid)
    deadline = time.monotonic() + SETTLE
    while tree_memory(master_pid, "smtpd")[0] > 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    after = (tree_memory(master_pid, "smtpd"), tree_memory(master_pid))
    return StormResult(name, greeted, [before[0], smtpd_during, after[0]],
                       [before[1], tree_during, after[1]])


@contextmanager
def _pymaster(tmp: Path) -> Iterator[tuple[int, int]]:
    from bench.matrix import settings
    tmp.mkdir(parents=True, exist_ok=True)
    with Instance(tmp, main_cf=settings(25)) as inst:
        yield inst.smtp_port, inst.master_pid() or 0


@contextmanager
def _postfix(tmp: Path) -> Iterator[tuple[int, int]]:
    from bench.matrix import postfix_system
    with postfix_system(tmp, 25, None) as system:
        yield system.port, system.master_pid


def rows(workdir: Path, count: int = STORM, postfix: bool = True) -> list[StormResult]:
    """rows - the storm on pymaster and, where it runs, Debian's Postfix."""
    from bench.matrix import postfix_available
    _raise_fd_limit(count + 1024)
    results = []
    with _pymaster(Path(workdir) / "pymaster") as (port, pid):
        results.append(measure("pymaster", port, pid, count))
    if postfix and postfix_available():
        with _postfix(Path(workdir) / "postfix") as (port, pid):
            results.append(measure("postfix", port, pid, count))
    return results


def table(results: list[StormResult], count: int) -> list[str]:
    """table - the storm figures as a markdown table."""
    out = [f"smtpd under a storm of {count} idle connections "
           "(processes / RSS MB / PSS MB; smtpd processes, then the whole tree):", "",
           "| MTA | greeted | smtpd before | smtpd storm | smtpd after "
           "| tree before | tree storm | tree after |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        cells = [_mem(m) for m in r.smtpd] + [_mem(m) for m in r.tree]
        out.append(f"| {r.name} | {r.greeted}/{count} | " + " | ".join(cells) + " |")
    return out


def _mem(m: tuple[int, int, int]) -> str:
    return f"{m[0]} / {m[1] / MB:.0f} / {m[2] / MB:.0f}"


def run(workdir: Path, count: int = STORM, postfix: bool = True) -> list[str]:
    return table(rows(workdir, count, postfix), count)
