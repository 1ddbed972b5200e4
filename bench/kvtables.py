"""lmdb: and memcache: table benchmark (not a test): `python -m bench.kvtables`.

lmdb: builds a 100,000-entry table with our postmap and with Debian's
(where installed), times `postmap -q` of each on it, and does 50,000
lookups and 2,000 in-place updates through the table interface in this
process (CPU and wall per operation: each lookup takes and drops an fcntl
lock, each update commits and syncs). memcache: 10,000 lookups against a
memcached started on loopback (tests/support/memcached.py), client CPU and
round-trip wall time per lookup.

Interface:
    run(workdir, entries=100_000) -> list[str]   report lines
"""

from __future__ import annotations

import os
import sys
import time

from bench.tables import DEBIAN_POSTMAP, OUR_POSTMAP, _config_dir, _wall, _write_source


def _per_op(fn, count: int) -> tuple[float, float]:
    """_per_op - (CPU, wall) microseconds per call of FN(i) over COUNT calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        fn(i)
    return (1e6 * (time.process_time() - cpu) / count,
            1e6 * (time.perf_counter() - wall) / count)


def _lmdb(workdir: str, entries: int) -> list[str]:
    from pymaster.util.tables import create_table
    config = _config_dir(workdir)
    source = os.path.join(workdir, "lmdbtable")
    _write_source(source, entries)
    key = f"user{entries // 2}@example{(entries // 2) % 1000}.com"
    build = _wall([OUR_POSTMAP, "-c", config, f"lmdb:{source}"], repeat=1)
    query = _wall([OUR_POSTMAP, "-c", config, "-q", key, f"lmdb:{source}"])
    lines = [f"lmdb: pymaster postmap build of {entries} entries: {build:.2f} s, "
             f"postmap -q: {query * 1000:.0f} ms"]
    if os.path.exists(DEBIAN_POSTMAP):
        theirs = source + "-debian"
        os.link(source, theirs)
        d_build = _wall([DEBIAN_POSTMAP, "-c", config, f"lmdb:{theirs}"], repeat=1)
        d_query = _wall([DEBIAN_POSTMAP, "-c", config, "-q", key, f"lmdb:{theirs}"])
        lines.append(f"lmdb: Postfix postmap build: {d_build:.2f} s (ratio {build / d_build:.2f}), "
                     f"postmap -q: {d_query * 1000:.0f} ms (ratio {query / d_query:.2f})")
    table = create_table(f"lmdb:{source}")
    cpu, wall = _per_op(lambda i: table.lookup(f"user{i}@example{i % 1000}.com"), 50_000)
    lines.append(f"lmdb: in-process lookups: {cpu:.1f} us CPU, {wall:.1f} us wall each")
    cpu, wall = _per_op(lambda i: table.update(f"new{i}", "value"), 2_000)
    lines.append(f"lmdb: in-process updates: {cpu:.1f} us CPU, {wall:.1f} us wall each")
    return lines


def _memcache(workdir: str) -> list[str]:
    from pymaster.util.tables import create_table
    from tests.support.memcached import Memcached, available
    if available():
        return [f"memcache: skipped: {available()}"]
    with Memcached() as mc:
        cf = os.path.join(workdir, "memcache.cf")
        with open(cf, "w") as f:
            f.write(f"memcache = {mc.server}\n")
        table = create_table(f"memcache:{cf}")
        for i in range(1000):
            table.update(f"user{i}@example.com", f"mailbox{i}")
        cpu, wall = _per_op(lambda i: table.lookup(f"user{i % 1200}@example.com"), 10_000)
    return [f"memcache: lookups: {cpu:.1f} us client CPU, {wall:.1f} us wall each"]


def run(workdir: str, entries: int = 100_000) -> list[str]:
    """run - the lmdb: and memcache: figures, as report lines."""
    os.makedirs(workdir, exist_ok=True)
    return _lmdb(workdir, entries) + _memcache(workdir)


if __name__ == "__main__":
    import tempfile
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run(tmp)))
