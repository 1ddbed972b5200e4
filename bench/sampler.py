"""CPU by program and peak memory of a mail system's process tree, during a load.

A Sampler watches the tree under one master process from start() to stop():

  - CPU: user + system seconds of every process, by program, and the
    system (kernel) seconds of the whole tree apart. A program's
    name is the last part of the first word of its title (`pymaster/smtpd`
    -> smtpd, Postfix's `smtpd -n smtp -t inet` -> smtpd, `master`).
    Processes are read every CPU_INTERVAL; a process that exits during the
    load (Postfix's max_use, a worker past max_idle) is seen until its last
    sample, and what it used after that reaches its master's reaped-children
    total: that remainder is shared out over the programs of the processes
    that exited, in proportion to what each was seen to use.
  - memory: the sum over the tree of resident (RSS) and proportional (PSS,
    psutil's memory_full_info) memory, every MEMORY_INTERVAL; the peak of
    each sum is kept.

Interface: Sampler(master_pid); .start(); .stop() -> Usage
           Usage.cpu (program -> seconds), .kernel (seconds), .peak_rss, .peak_pss (bytes)
           tree_memory(master_pid, only=None) -> (processes, rss, pss)
           program_name(process) -> str
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psutil

CPU_INTERVAL = 0.25
MEMORY_INTERVAL = 1.0


@dataclass
class Usage:
    cpu: dict[str, float] = field(default_factory=dict)
    peak_rss: int = 0
    peak_pss: int = 0
    kernel: float = 0.0          # the system part of cpu_total

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())


def program_name(proc: psutil.Process) -> str:
    """program_name - the program a process of the tree runs, from its title."""
    try:
        title = proc.cmdline()
    except psutil.Error:
        title = []
    first = title[0].split()[0] if title and title[0].split() else ""
    if not first:
        try:
            first = proc.name()
        except psutil.Error:
            return "?"
    return first.rsplit("/", 1)[-1]


def _tree(master: psutil.Process) -> list[psutil.Process]:
    try:
        return [master, *master.children(recursive=True)]
    except psutil.Error:
        return [master]


def tree_memory(master_pid: int, only: str | None = None) -> tuple[int, int, int]:
    """tree_memory - (processes, RSS, PSS) of the tree under MASTER_PID, or of
    its processes running program ONLY."""
    n = rss = pss = 0
    try:
        master = psutil.Process(master_pid)
    except psutil.Error:
        return 0, 0, 0
    for proc in _tree(master):
        if only is not None and program_name(proc) != only:
            continue
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        n += 1
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return n, rss, pss


class Sampler:
    """Samples one master's process tree in a thread between start() and stop()."""

    def __init__(self, master_pid: int) -> None:
        self.master = psutil.Process(master_pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Of each process: CPU and system CPU at start; program, CPU and
        # system CPU at the last sample.
        self._base: dict[int, tuple[float, float]] = {}
        self._seen: dict[int, tuple[str, float, float]] = {}
        self._procs: dict[int, psutil.Process] = {}
        self.usage = Usage()

    def start(self) -> None:
        self._reaped0 = self._reaped()
        self._sample_cpu()
        self._base = {pid: (cpu, system) for pid, (_, cpu, system) in self._seen.items()}
        self._thread.start()

    def stop(self) -> Usage:
        self._stop.set()
        self._thread.join()
        self._sample_cpu()
        self._sample_memory()
        unseen_cpu, unseen_system = self._unseen()
        self.usage.cpu = self._cpu_by_program(unseen_cpu)
        self.usage.kernel = self._kernel(unseen_system)
        return self.usage

    def _run(self) -> None:
        ticks = 0
        per_memory = max(1, round(MEMORY_INTERVAL / CPU_INTERVAL))
        while not self._stop.wait(CPU_INTERVAL):
            self._sample_cpu()
            if ticks % per_memory == 0:
                self._sample_memory()
            ticks += 1

    def _reaped(self) -> tuple[float, float]:
        """_reaped - CPU and system CPU of the master's reaped children."""
        t = self.master.cpu_times()
        return t.children_user + t.children_system, t.children_system

    def _sample_cpu(self) -> None:
        self._alive: set[int] = set()
        for proc in _tree(self.master):
            # The same Process object each time: psutil checks a reused pid by it.
            proc = self._procs.setdefault(proc.pid, proc)
            try:
                t = proc.cpu_times()
            except psutil.Error:
                continue
            # Read each time: a process just forked carries the interpreter's
            # name until it sets its title.
            self._seen[proc.pid] = (program_name(proc), t.user + t.system, t.system)
            self._alive.add(proc.pid)

    def _sample_memory(self) -> None:
        _, rss, pss = tree_memory(self.master.pid)
        self.usage.peak_rss = max(self.usage.peak_rss, rss)
        self.usage.peak_pss = max(self.usage.peak_pss, pss)

    def _cpu_by_program(self, unseen: float) -> dict[str, float]:
        """_cpu_by_program - CPU by program; UNSEEN (what exited processes
        used after their last sample) shared out over the exited ones."""
        totals: dict[str, float] = {}
        exited: dict[str, float] = {}
        for pid, (name, cpu, _) in self._seen.items():
            used = cpu - self._base.get(pid, (0.0, 0.0))[0]
            totals[name] = totals.get(name, 0.0) + used
            if pid not in self._alive:
                exited[name] = exited.get(name, 0.0) + used
        seen = sum(exited.values())
        for name, used in exited.items():
            totals[name] += unseen * (used / seen if seen else 1 / len(exited))
        if unseen and not exited:
            totals["(exited)"] = unseen
        return {name: cpu for name, cpu in totals.items() if cpu > 0}

    def _kernel(self, unseen: float) -> float:
        """_kernel - system CPU of the tree: every process seen, and UNSEEN."""
        return unseen + sum(system - self._base.get(pid, (0.0, 0.0))[1]
                            for pid, (_, _, system) in self._seen.items())

    def _unseen(self) -> tuple[float, float]:
        """_unseen - CPU and system CPU that processes used after their last
        sample: the exited processes' whole lifetimes reached the master's
        reaped-children totals (read once, so that both agree), and the
        samples saw only part of them."""
        reaped_cpu, reaped_system = self._reaped()
        exited = [(cpu, system) for pid, (_, cpu, system) in self._seen.items()
                  if pid not in self._alive]
        return (max(0.0, reaped_cpu - self._reaped0[0] - sum(cpu for cpu, _ in exited)),
                max(0.0, reaped_system - self._reaped0[1] - sum(system for _, system in exited)))
