"""bench/matrix.py, sampler.py, report.py: the main table of make bench.

The figures are not tested (benchmarks are not tests); what is: the table
holds every cell the issue names and the quick subset its Done-when rows,
message counts fill whole connections, the log counter counts each
delivery once across reads, the sampler finds CPU and memory in a real
process tree (exited children included), and the report renders.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import matrix, report
from bench.matrix import Cell, CellResult, Run, System
from bench.sampler import Sampler, Usage, tree_memory


def test_the_full_table_has_every_cell_and_quick_the_done_when_rows():
    assert len(matrix.FULL) == 4 * 2 * 3 * 2 and len(set(matrix.FULL)) == len(matrix.FULL)
    assert {c.load for c in matrix.QUICK} == {"discard", "virtual", "relay"}
    assert {(c.size, c.sessions, c.per_connection) for c in matrix.QUICK} == \
        {(1024, 10, 1), (1024, 50, 1)}


@pytest.mark.parametrize("cell", matrix.FULL)
def test_messages_fill_whole_connections(cell):
    n = matrix.cell_messages(cell)
    assert n > 0 and n % (cell.sessions * cell.per_connection) == 0
    assert matrix.cell_messages(cell, 0.0001) == cell.sessions * cell.per_connection


def test_the_log_counter_counts_a_line_split_between_reads(tmp_path):
    log = tmp_path / "maillog"
    log.write_bytes(b"old status=sent\n")
    system = System("x", 0, 0, log, [])
    system.mark()
    with log.open("ab") as f:
        f.write(b"a status=se")
        f.flush()
        assert system.delivered() == 0
        f.write(b"nt\nb status=sent\nstatus=sent")
        f.flush()
        assert system.delivered() == 3
        f.write(b"\n")
        f.flush()
        assert system.delivered() == 3


def test_the_sampler_sees_a_busy_child_and_one_that_exited():
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys, time\n"
                               "sys.stdin.readline()\n"
                               f"subprocess.run([sys.executable, '-c', {busy!r}])\n"
                               "print('done', flush=True)\n"
                               "time.sleep(30)\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        sampler = Sampler(parent.pid)
        sampler.start()
        parent.stdin.write("go\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "done\n"     # the busy child has exited
        usage = sampler.stop()
        assert usage.cpu_total >= 0.4, usage.cpu
        assert 0 < usage.kernel < usage.cpu_total      # the child's loop is mostly user time
        assert usage.peak_rss > 0 and usage.peak_pss > 0
        assert tree_memory(parent.pid)[0] == 1
    finally:
        parent.kill()
        parent.wait()


def test_the_report_renders_medians_and_ratios():
    cell = Cell("discard", 1024, 10, 1)
    result = CellResult(cell, 100)
    for mta, seconds in (("pymaster", 2.0), ("postfix", 1.0)):
        result.runs[mta] = [Run(100, 100, seconds * k,
                                Usage({"smtpd": 0.1 * k}, 2 << 20, 1 << 20, kernel=0.025 * k * seconds))
                            for k in (1, 2, 3)]
    table = report.matrix_table([result])
    assert table[2] == ("| discard | 1 KB | 10 | 1 | 100 | 25 | 50 | 0.50 | 2.00 | 2.00 | 1.00 "
                        "| 2 / 1 | 2 / 1 |")
    assert "smtpd 2.00" in report.cpu_table([result])[-1]
    assert report.kernel_table([result])[-1] == ("| discard 1 KB, 10 session(s), 1/conn "
                                                 "| 1.00 | 1.50 | 0.67 | 1.00 | 0.50 | 2.00 |")
    assert report.heading(3, quick=True)[0] == "# pymaster benchmark (quick)"
