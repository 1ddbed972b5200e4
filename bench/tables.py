"""Lookup table benchmark, one part of `make bench` (not a test).

Builds a 1,000,000-entry hash: table from text with our postmap, does
100,000 random lookups through the table interface in this process, and
times `postmap -q` on the table (wall clock, Python start-up included).
Where Debian's /usr/sbin/postmap exists, it builds and queries the same
table (with its own temporary config directory) and the ratios are printed.
Aims: build < 10 s, > 200,000 lookups/s, `postmap -q` < 150 ms.

Interface:
    run(workdir, entries=1_000_000, lookups=100_000) -> list[str]   report lines
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

DEBIAN_POSTMAP = "/usr/sbin/postmap"
OUR_POSTMAP = os.path.join(os.path.dirname(sys.executable), "postmap")


def _write_source(path: str, entries: int) -> None:
    with open(path, "w") as f:
        f.writelines(f"user{i}@example{i % 1000}.com\tmailbox{i}\n" for i in range(entries))


def _config_dir(workdir: str) -> str:
    config = os.path.join(workdir, "config")
    os.makedirs(config, exist_ok=True)
    with open(os.path.join(config, "main.cf"), "w") as f:
        f.write("default_database_type = hash\n")
    return config


def _wall(argv: list[str], repeat: int = 5) -> float:
    """_wall - the best wall time of ARGV over REPEAT runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def _in_process_lookups(source: str, entries: int, lookups: int) -> float:
    from pymaster.util.tables import create_table
    table = create_table(f"hash:{source}")
    keys = [f"user{i}@example{i % 1000}.com" for i in
            (random.randrange(entries) for _ in range(lookups))]
    table.lookup(keys[0])
    start = time.perf_counter()
    for key in keys:
        table.lookup(key)
    return lookups / (time.perf_counter() - start)


def run(workdir: str, entries: int = 1_000_000, lookups: int = 100_000) -> list[str]:
    """run - build, look up and query; the report lines."""
    os.makedirs(workdir, exist_ok=True)
    config = _config_dir(workdir)
    source = os.path.join(workdir, "bigtable")
    _write_source(source, entries)
    key = f"user{entries // 2}@example{(entries // 2) % 1000}.com"
    lines = []
    build = _wall([OUR_POSTMAP, "-c", config, f"hash:{source}"], repeat=1)
    rate = _in_process_lookups(source, entries, lookups)
    query = _wall([OUR_POSTMAP, "-c", config, "-q", key, f"hash:{source}"])
    lines.append(f"tables: pymaster postmap build of {entries} entries: {build:.2f} s")
    lines.append(f"tables: pymaster in-process lookups: {rate:,.0f}/s")
    lines.append(f"tables: pymaster postmap -q: {query * 1000:.0f} ms")
    if os.path.exists(DEBIAN_POSTMAP):
        debian_source = os.path.join(workdir, "bigtable-debian")
        if not os.path.exists(debian_source):
            os.link(source, debian_source)
        d_build = _wall([DEBIAN_POSTMAP, "-c", config, f"hash:{debian_source}"], repeat=1)
        d_query = _wall([DEBIAN_POSTMAP, "-c", config, "-q", key, f"hash:{debian_source}"])
        lines.append(f"tables: Postfix postmap build: {d_build:.2f} s "
                     f"(pymaster/Postfix time ratio {build / d_build:.2f})")
        lines.append(f"tables: Postfix postmap -q: {d_query * 1000:.0f} ms "
                     f"(pymaster/Postfix time ratio {query / d_query:.2f})")
    return lines


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run(tmp)))
