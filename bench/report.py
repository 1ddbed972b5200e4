"""The markdown report of `make bench`: what ran where, and the tables.

The heading says when and on what the figures were taken (date, cores, CPU
model, Python, pymaster's commit, Debian's Postfix version) and the rule
behind them (rounds, alternating order, medians); then the main table
(bench/matrix.py), CPU by program, and the other sections' lines as they
printed them.

Interface: heading(rounds, quick) -> [line]; matrix_table(results) -> [line];
           cpu_table(results) -> [line]; kernel_table(results) -> [line];
           write(path, lines)
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench.matrix import CellResult

MB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
TOP_PROGRAMS = 6


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def versions() -> str:
    commit = _output(["git", "log", "-1", "--format=%h %cs"]) or "unknown commit"
    dirty = " (uncommitted changes)" if _output(["git", "status", "--porcelain"]) else ""
    postfix = _output(["/usr/sbin/postconf", "-dh", "mail_version"]) or "not installed"
    return (f"pymaster {commit}{dirty}, Python {platform.python_version()}, "
            f"Debian's Postfix {postfix}")


def heading(rounds: int, quick: bool) -> list[str]:
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return [
        f"# pymaster benchmark{' (quick)' if quick else ''}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- machine: {cores} core(s), {cpu_model()}, {platform.system()} "
        f"{platform.release()}; load average at the start {load:.2f}",
        f"- versions: {versions()}",
        f"- command: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}",
        f"- rule: every cell runs {rounds} round(s) on each mail system, the order of the "
        "two alternating from round to round; each figure is the median over the rounds "
        "(taken figure by figure); ratios are pymaster / Postfix of those medians.",
        "- msg/s: messages delivered per second, from the start of the load to the last "
        "delivery; CPU: seconds per 1,000 messages of the whole process tree, exited "
        "processes included; peak RSS / PSS: the largest sum over the process tree "
        "during a run, in MB.",
        "",
    ]


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}" if ours is not None and theirs else "-"


def matrix_table(results: list[CellResult]) -> list[str]:
    """matrix_table - one row per cell: rates, CPU, memory and ratios."""
    out = ["| load | size | sessions | msgs/conn | messages | pymaster msg/s | Postfix msg/s "
           "| ratio | pymaster CPU s/1000 | Postfix CPU s/1000 | CPU ratio "
           "| pymaster peak RSS/PSS MB | Postfix peak RSS/PSS MB |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        c = r.cell
        rate = {m: r.median(m, lambda run: run.rate) for m in ("pymaster", "postfix")}
        cpu = {m: r.median(m, lambda run: run.cpu_per_1000()) for m in ("pymaster", "postfix")}
        mem = {m: _memory(r, m) for m in ("pymaster", "postfix")}
        short = {m: " (short)" if r.short(m) else "" for m in ("pymaster", "postfix")}
        out.append(
            f"| {c.load} | {c.size // 1024} KB | {c.sessions} | {c.per_connection} "
            f"| {r.messages} | {_fmt(rate['pymaster'], '.0f')}{short['pymaster']} "
            f"| {_fmt(rate['postfix'], '.0f')}{short['postfix']} "
            f"| {_ratio(rate['pymaster'], rate['postfix'])} "
            f"| {_fmt(cpu['pymaster'], '.2f')} | {_fmt(cpu['postfix'], '.2f')} "
            f"| {_ratio(cpu['pymaster'], cpu['postfix'])} | {mem['pymaster']} "
            f"| {mem['postfix']} |")
    if any(r.short(m) for r in results for m in ("pymaster", "postfix")):
        out += ["", "(short): a run did not deliver every message within its time bound; "
                "its rate counts what was delivered."]
    return out


def _memory(r: CellResult, mta: str) -> str:
    rss = r.median(mta, lambda run: run.usage.peak_rss)
    pss = r.median(mta, lambda run: run.usage.peak_pss)
    return f"{rss / MB:.0f} / {pss / MB:.0f}" if rss is not None and pss is not None else "-"


def cpu_table(results: list[CellResult]) -> list[str]:
    """cpu_table - CPU seconds per 1,000 messages by program, the biggest first."""
    out = ["CPU seconds per 1,000 messages by program (medians; the "
           f"{TOP_PROGRAMS} biggest):", "",
           "| cell | pymaster | Postfix |", "|---|---|---|"]
    for r in results:
        cols = []
        for mta in ("pymaster", "postfix"):
            split = sorted(r.cpu_by_program(mta).items(), key=lambda kv: -kv[1])
            cols.append(", ".join(f"{p} {v:.2f}" for p, v in split[:TOP_PROGRAMS]
                                  if v >= 0.005) or "-")
        out.append(f"| {r.cell.label} | {cols[0]} | {cols[1]} |")
    return out


def kernel_table(results: list[CellResult]) -> list[str]:
    """kernel_table - each tree's CPU per 1,000 messages split into user
    (the programs' own code) and system (the kernel on their behalf)."""
    out = ["CPU seconds per 1,000 messages, user and system apart (medians):", "",
           "| cell | pymaster user | Postfix user | user ratio | pymaster system "
           "| Postfix system | system ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        user = {m: r.median(m, lambda run: run.user_per_1000()) for m in ("pymaster", "postfix")}
        kernel = {m: r.median(m, lambda run: run.kernel_per_1000())
                  for m in ("pymaster", "postfix")}
        out.append(f"| {r.cell.label} | {_fmt(user['pymaster'], '.2f')} "
                   f"| {_fmt(user['postfix'], '.2f')} "
                   f"| {_ratio(user['pymaster'], user['postfix'])} "
                   f"| {_fmt(kernel['pymaster'], '.2f')} | {_fmt(kernel['postfix'], '.2f')} "
                   f"| {_ratio(kernel['pymaster'], kernel['postfix'])} |")
    return out


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
