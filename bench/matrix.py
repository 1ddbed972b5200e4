"""`make bench`'s main table: the loads users run, pymaster beside Debian's Postfix.

Loads (one recipient per message, smtp-source from Debian's postfix package
as the client, on loopback):

    discard   user@discard.example, transport_maps to discard:
    virtual   user@localhost, a virtual(8) Maildir (uid 65534)
    local     USER@local.example, local(8) to ~/Maildir/ of a throw-away
              account (root only: the account is made with useradd)
    relay     user@relayed.example through the smtp client to Postfix's
              smtp-sink on 127.0.0.2 (relayhost, the connection cache on)

each with 1 KB and 100 KB messages (smtp-source -l), over 1, 10 and 50
parallel sessions, one message per connection (smtp-source -s N) or 20 per
connection (N driver threads, each running `smtp-source -d -m 20` again and
again, so that N connections stay open and each carries 20 messages).

Both mail systems take one configuration that serves every load, are
started once, and stay up for the whole table; every cell runs ROUNDS times
on each, the order of the two alternating from round to round (pymaster
first in odd rounds), and the figures of a cell are the medians over its
rounds, each figure on its own. A run starts when smtp-source starts and
ends at the last delivery (the `status=sent` lines of the run in the mail
log, which every load writes once per message); the Maildirs are emptied
between runs, outside the measured time.

Figures per cell and mail system: messages delivered per second; CPU
seconds per 1,000 messages by program (bench/sampler.py, whole tree,
exited processes included); the peak RSS and PSS of the whole process
tree during the run; and pymaster/Postfix ratios. Message counts per cell
(cell_messages) are sized for a run of several seconds and the whole
default table (41,240 messages per mail system and round) for about 30
minutes on 2 cores; --scale multiplies them.
Nothing here asserts a figure; every wait is bounded.

Interface:
    FULL, QUICK: the cells of `make bench` and of `make bench BENCH=quick`
    run(workdir, cells, rounds=3, scale=1.0, postfix=True, progress=print) -> [CellResult]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from bench.sampler import Sampler, Usage
from tests.support.instance import Instance, free_port

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
DEBIAN_POSTFIX = "/usr/sbin/postfix"
SINK_HOST = "127.0.0.2"
LOADS = ("discard", "virtual", "local", "relay")
SIZES = (1024, 102400)
SESSIONS = (1, 10, 50)
PER_CONNECTION = (1, 20)
ROUNDS = 3
SENT = b"status=sent"
# A run gives up waiting for its deliveries after this long plus one second
# per BOUND_RATE messages: a mail system that stalls shows as a short count.
BOUND_BASE = 60.0
BOUND_RATE = 20


@dataclass(frozen=True)
class Cell:
    load: str
    size: int
    sessions: int
    per_connection: int

    @property
    def label(self) -> str:
        return (f"{self.load} {self.size // 1024} KB, {self.sessions} session(s), "
                f"{self.per_connection}/conn")


FULL = [Cell(load, size, sessions, per) for load in LOADS for size in SIZES
        for sessions in SESSIONS for per in PER_CONNECTION]
# The "Done when" rows: discard, Maildir, relay at 10 and 50 sessions, 1 KB.
QUICK = [Cell(load, 1024, sessions, 1) for load in ("discard", "virtual", "relay")
         for sessions in (10, 50)]


def cell_messages(cell: Cell, scale: float = 1.0) -> int:
    """cell_messages - messages in one run of CELL: enough for several seconds
    on 2 cores, fewer where each costs more (one session, 100 KB), a whole
    number of 20-message connections per session."""
    if cell.size > 10240:
        base = 150 if cell.sessions == 1 else 600
    else:
        base = 300 if cell.sessions == 1 else 1500
    chunk = cell.sessions * cell.per_connection
    return max(chunk, round(base * scale / chunk) * chunk)


@dataclass
class Run:
    """One run of a cell on one mail system."""
    messages: int
    delivered: int
    seconds: float
    usage: Usage

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else 0.0

    def cpu_per_1000(self, program: str | None = None) -> float:
        cpu = self.usage.cpu_total if program is None else self.usage.cpu.get(program, 0.0)
        return cpu / max(self.delivered, 1) * 1000

    def kernel_per_1000(self) -> float:
        """kernel_per_1000 - the system part of cpu_per_1000()."""
        return self.usage.kernel / max(self.delivered, 1) * 1000

    def user_per_1000(self) -> float:
        return self.cpu_per_1000() - self.kernel_per_1000()


@dataclass
class CellResult:
    cell: Cell
    messages: int
    runs: dict[str, list[Run]] = field(default_factory=dict)   # "pymaster"/"postfix"

    def median(self, mta: str, figure: Callable[[Run], float]) -> float | None:
        runs = self.runs.get(mta)
        return statistics.median(figure(r) for r in runs) if runs else None

    def cpu_by_program(self, mta: str) -> dict[str, float]:
        """cpu_by_program - the median CPU s/1000 messages of each program."""
        runs = self.runs.get(mta) or []
        programs = {p for r in runs for p in r.usage.cpu}
        return {p: statistics.median(r.cpu_per_1000(p) for r in runs) for p in programs}

    def short(self, mta: str) -> bool:
        """short - whether a run of MTA delivered fewer messages than it was sent."""
        return any(r.delivered < r.messages for r in self.runs.get(mta, []))


# -- the mail systems ----------------------------------------------------------------------

def settings(sink_port: int) -> dict[str, str]:
    """settings - main.cf for every load at once, the same for both mail systems."""
    return {
        "myhostname": "bench.example.com",
        "mydestination": "local.example",
        "mynetworks": "127.0.0.0/8",
        "virtual_mailbox_domains": "localhost",
        "virtual_mailbox_maps": "static:bench/",
        "virtual_uid_maps": "static:65534",
        "virtual_gid_maps": "static:65534",
        "home_mailbox": "Maildir/",
        "transport_maps": "inline:{ discard.example=discard: }",
        "relayhost": f"[{SINK_HOST}]:{sink_port}",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject",
        "smtp_connection_cache_on_demand": "yes",
        "default_destination_concurrency_limit": "20",
        "message_size_limit": "10240000",
    }


class System:
    """One running mail system as the table sees it: its port, master, log, Maildirs."""

    def __init__(self, name: str, port: int, master_pid: int, maillog: Path,
                 maildirs: list[Path]) -> None:
        self.name, self.port, self.master_pid = name, port, master_pid
        self.maillog, self.maildirs = maillog, maildirs
        self.offset = 0

    def mark(self) -> None:
        """mark - count deliveries from here on."""
        self.offset = _size(self.maillog)
        self._counted, self._tail, self._read_to = 0, b"", self.offset

    def delivered(self) -> int:
        """delivered - `status=sent` lines logged since mark()."""
        try:
            with open(self.maillog, "rb") as f:
                f.seek(self._read_to)
                chunk = f.read()
        except FileNotFoundError:
            return self._counted
        self._read_to += len(chunk)
        data = self._tail + chunk
        self._counted += data.count(SENT)
        # Keep a partial needle for the next read, never a whole one.
        self._tail = data[-(len(SENT) - 1):] if not data.endswith(SENT) else b""
        return self._counted

    def empty_maildirs(self) -> None:
        for maildir in self.maildirs:
            for sub in ("new", "cur", "tmp"):
                try:
                    entries = list(os.scandir(maildir / sub))
                except FileNotFoundError:
                    continue
                for entry in entries:
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@contextmanager
def pymaster_system(tmp: Path, sink_port: int, home: Path | None) -> Iterator[System]:
    tmp.mkdir(parents=True, exist_ok=True)
    with Instance(tmp, main_cf=settings(sink_port)) as inst:
        maildirs = [inst.mailbox_dir / "bench"] + ([home / "Maildir"] if home else [])
        yield System("pymaster", inst.smtp_port, inst.master_pid() or 0, inst.maillog, maildirs)


@contextmanager
def postfix_system(tmp: Path, sink_port: int, home: Path | None) -> Iterator[System]:
    from bench.run import PostfixInstance, _wait_port
    tmp.mkdir(parents=True, exist_ok=True)
    pf = PostfixInstance(tmp, settings(sink_port))
    pf.run("start")
    try:
        _wait_port(pf.port)
        maildirs = [pf.mailbox_dir / "bench"] + ([home / "Maildir"] if home else [])
        yield System("postfix", pf.port, pf.master_pid(), pf.maillog, maildirs)
    finally:
        from bench.queue import stop_postfix
        stop_postfix(pf)


@contextmanager
def smtp_sink() -> Iterator[int]:
    """smtp_sink - Postfix's smtp-sink on SINK_HOST, for the relay load; its port."""
    port = free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([SMTP_SINK, *user, f"{SINK_HOST}:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from bench.smtp_client import _wait_port_on
        _wait_port_on(SINK_HOST, port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def local_account(tmp: Path) -> Iterator[tuple[str, Path] | None]:
    """local_account - (name, home) of a throw-away user for the local load, or
    None (not root, no useradd): the local load is then left out."""
    from tests.support.accounts import can_add_accounts, temporary_account
    if not can_add_accounts():
        yield None
        return
    homes = tmp / "home"
    homes.mkdir(parents=True)
    for path in (tmp, homes):           # the account must reach its home
        os.chmod(path, 0o755)
    with temporary_account(homes, "pmb") as user:
        yield user.pw_name, Path(user.pw_dir)


# -- the load ----------------------------------------------------------------------------

def recipient(load: str, local_user: str) -> str:
    return {"discard": "user@discard.example", "virtual": "user@localhost",
            "local": f"{local_user}@local.example",
            "relay": "user@relayed.example"}[load]


def drive(port: int, cell: Cell, messages: int, rcpt: str, deadline: float) -> None:
    """drive - send MESSAGES as CELL says through smtp-source; bounded by DEADLINE."""
    base = [SMTP_SOURCE, "-l", str(cell.size), "-f", "bench@example.com", "-t", rcpt]
    target = f"127.0.0.1:{port}"
    if cell.per_connection == 1:
        _source(base + ["-s", str(cell.sessions), "-m", str(messages), target], deadline)
        return
    # One driver thread per session, each a series of connections of
    # per_connection messages (smtp-source -d: all messages over one connection).
    connections = messages // cell.per_connection // cell.sessions
    argv = base + ["-d", "-s", "1", "-m", str(cell.per_connection), target]

    def session() -> None:
        for _ in range(connections):
            if time.monotonic() > deadline:
                return
            _source(argv, deadline)
    threads = [threading.Thread(target=session) for _ in range(cell.sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _source(argv: list[str], deadline: float) -> None:
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=max(1.0, deadline - time.monotonic()), check=False)
    except subprocess.TimeoutExpired:
        pass


def run_once(system: System, cell: Cell, messages: int, rcpt: str) -> Run:
    """run_once - one run of CELL on SYSTEM: send, wait for every delivery, measure."""
    bound = BOUND_BASE + messages / BOUND_RATE
    system.mark()
    sampler = Sampler(system.master_pid)
    sampler.start()
    start = time.monotonic()
    deadline = start + bound
    drive(system.port, cell, messages, rcpt, deadline)
    delivered = system.delivered()
    last = time.monotonic()
    while delivered < messages and time.monotonic() < deadline:
        time.sleep(0.05)
        now = system.delivered()
        if now != delivered:
            delivered, last = now, time.monotonic()
    usage = sampler.stop()
    system.empty_maildirs()
    return Run(messages, delivered, last - start, usage)


def warm_up(system: System, cell: Cell, rcpt: str) -> None:
    """warm_up - one message per session of CELL, not measured: the processes
    that the cell keeps busy are started before its first round."""
    warm = Cell(cell.load, cell.size, cell.sessions, 1)
    system.mark()
    deadline = time.monotonic() + BOUND_BASE
    drive(system.port, warm, cell.sessions, rcpt, deadline)
    while system.delivered() < cell.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    system.empty_maildirs()


# -- the table ---------------------------------------------------------------------------

def run(workdir: Path, cells: list[Cell], rounds: int = ROUNDS, scale: float = 1.0,
        postfix: bool = True, progress: Callable[[str], None] = print) -> list[CellResult]:
    """run - every cell ROUNDS times on pymaster and, where it can run, Debian's Postfix."""
    workdir = Path(workdir)
    results = []
    with ExitStack() as stack:
        sink_port = stack.enter_context(smtp_sink())
        account = stack.enter_context(local_account(workdir))
        local_user, home = account if account else ("", None)
        systems = [stack.enter_context(pymaster_system(workdir / "pymaster", sink_port, home))]
        if postfix and postfix_available():
            systems.append(stack.enter_context(postfix_system(workdir / "postfix", sink_port,
                                                              home)))
        for cell in cells:
            if cell.load == "local" and not local_user:
                progress(f"{cell.label}: skipped (the local load needs root and useradd)")
                continue
            result = CellResult(cell, cell_messages(cell, scale))
            rcpt = recipient(cell.load, local_user)
            for system in systems:
                warm_up(system, cell, rcpt)
            for n in range(rounds):
                order = systems if n % 2 == 0 else systems[::-1]
                for system in order:
                    r = run_once(system, cell, result.messages, rcpt)
                    result.runs.setdefault(system.name, []).append(r)
                    progress(f"  {cell.label}, round {n + 1}, {system.name}: "
                             f"{r.delivered}/{r.messages} in {r.seconds:.1f} s, "
                             f"{r.rate:.0f} msg/s, CPU {r.cpu_per_1000():.2f} s/1000")
            results.append(result)
    return results


def postfix_available() -> bool:
    return os.path.exists(DEBIAN_POSTFIX) and os.geteuid() == 0
