"""`make bench`: throughput, CPU and memory figures for pymaster.

The main table (bench/matrix.py) runs the loads users run (discard, a
virtual and a local Maildir, relay to smtp-sink; 1 KB and 100 KB; 1, 10 and
50 sessions; one and 20 messages per connection) on pymaster and, where it
is installed and we are root, on Debian's Postfix in the same run, 3 rounds
in alternating order, medians. Then the smtpd storm (bench/storm.py), the
queue tools on 100,000 queued messages (bench/queue.py), and the per-area
figures (agent, master, tables, dbtables: mysql/pgsql/ldap lookups directly
and through proxymap, kvtables: lmdb and memcache). Everything printed goes
to bench/results/latest.md as well, except for an --only run. Benchmarks are not tests: nothing here
asserts a figure. Every load is bounded in count and in time.

The default run takes about 25 minutes on 2 cores (estimated from a whole
run at --scale 0.3, 8 minutes, the table 5.4 of them);
--quick (make bench BENCH=quick) runs only the table's "Done when" rows
(discard, virtual Maildir and relay at 10 and 50 sessions, 1 KB, one
message per connection, 3 rounds) and nothing else: about 3 minutes on 2
cores.

    .venv/bin/python -m bench.run [--quick] [--rounds N] [--scale X]
                                  [--only SECTION] [--no-postfix]
                                  [--queue-messages N] [--output PATH]

The older single-load sections are still there by name: --only smtp
(--messages, --sessions, --kind) and --only smtp_client; --only memory
(--messages, --sessions) prints the PSS of every process, idle and at the
peak of a load to discard (bench/memory.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.instance import Instance, free_port  # noqa: E402

SMTP_SOURCE = shutil.which("smtp-source")
DEBIAN_POSTFIX = "/usr/sbin/postfix"
LOAD_TIMEOUT = 300


def process_tree_cpu(pid: int) -> float:
    """process_tree_cpu - CPU seconds of PID, its live children and its reaped ones."""
    try:
        master = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0.0
    t = master.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in master.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def cpu_by_program(pid: int) -> dict[str, float]:
    """cpu_by_program - CPU seconds of PID's live process tree, by program name.

    A program's name is the first word of its title (`pymaster/smtpd`,
    `smtpd`, `master`); processes that exited are counted under `(exited)`,
    from the master's reaped-children totals."""
    try:
        master = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return {}
    t = master.cpu_times()
    totals = {"master": t.user + t.system, "(exited)": t.children_user + t.children_system}
    for child in master.children(recursive=True):
        try:
            c = child.cpu_times()
            title = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        name = (title[0].split() or ["?"])[0] if title else child.name()
        name = name.rsplit("/", 1)[-1]
        totals[name] = totals.get(name, 0.0) + c.user + c.system
    return totals


def process_tree_rss(pid: int) -> int:
    """process_tree_rss - resident bytes of PID and its children."""
    try:
        master = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return 0
    total = master.memory_info().rss
    for child in master.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def wait_delivered(count_fn, want: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = count_fn()
    while got < want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = count_fn()
    return got


def maildir_count(path: Path) -> int:
    new = path / "new"
    try:
        return sum(1 for _ in os.scandir(new))
    except FileNotFoundError:
        return 0


def log_count(path: Path, needle: str) -> int:
    try:
        with open(path, "rb") as f:
            return f.read().count(needle.encode())
    except FileNotFoundError:
        return 0


def smtp_load(port: int, messages: int, sessions: int, rcpt: str) -> float:
    """smtp_load - smtp-source MESSAGES of 1 KB over SESSIONS; seconds taken."""
    start = time.monotonic()
    subprocess.run([SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", "1024",
                    "-f", "bench@example.com", "-t", rcpt, f"127.0.0.1:{port}"],
                   check=False, timeout=LOAD_TIMEOUT, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


BENCH_MAIN_CF = {
    "myhostname": "bench.example.com",
    "mydestination": "",
    "virtual_mailbox_domains": "localhost",
    "virtual_mailbox_maps": "static:bench/",
    "virtual_uid_maps": "static:65534",
    "virtual_gid_maps": "static:65534",
    "transport_maps": "inline:{ discard.example=discard: }",
    "smtpd_recipient_restrictions": "permit_mynetworks, reject",
    "message_size_limit": "10240000",
}


class PostfixInstance:
    """Debian's Postfix in a temporary config and queue directory."""

    def __init__(self, tmp: Path, settings: dict[str, str]) -> None:
        self.tmp = tmp
        self.config_dir = tmp / "etc"
        self.queue_dir = tmp / "spool"
        self.maillog = tmp / "maillog"
        self.mailbox_dir = tmp / "mailboxes"
        self.port = free_port()
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir()
        self.mailbox_dir.mkdir()
        os.chmod(self.mailbox_dir, 0o777)
        for parent in [tmp, *tmp.parents]:
            if parent != Path("/"):
                os.chmod(parent, parent.stat().st_mode | 0o011)
        main = dict(settings)
        main.update({
            "queue_directory": str(self.queue_dir),
            "data_directory": str(tmp / "data"),
            "maillog_file": str(self.maillog),
            # Postfix refuses a maillog_file outside these prefixes.
            "maillog_file_prefixes": str(tmp),
            "compatibility_level": "3.6",
            "virtual_mailbox_base": str(self.mailbox_dir),
            "alias_maps": "",
            "alias_database": "",
        })
        text = "".join(f"{k} = {v}\n" for k, v in main.items())
        (self.config_dir / "main.cf").write_text(text)
        master = Path("/usr/share/postfix/master.cf.dist").read_text()
        master = master.replace("smtp      inet  n       -       y       -       -       smtpd",
                                f"127.0.0.1:{self.port} inet n - n - - smtpd")
        master += "\npostlog   unix-dgram n  -       n       -       1       postlogd\n"
        (self.config_dir / "master.cf").write_text(master)

    def run(self, *args: str) -> None:
        subprocess.run([DEBIAN_POSTFIX, "-c", str(self.config_dir), *args], check=False,
                       capture_output=True, timeout=60)

    def master_pid(self) -> int:
        return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])


def run_smtp(name: str, inst, port: int, args, rcpt: str, count_fn) -> dict:
    pid = inst.master_pid()
    cpu0 = process_tree_cpu(pid)
    by_program0 = cpu_by_program(pid)
    start = time.monotonic()
    smtp_load(port, args.messages, args.sessions, rcpt)
    accepted = time.monotonic() - start
    got = wait_delivered(count_fn, args.messages, LOAD_TIMEOUT)
    delivered = time.monotonic() - start
    cpu = process_tree_cpu(pid) - cpu0
    by_program = cpu_by_program(pid)
    rss = process_tree_rss(pid)
    per_msg = {prog: (secs - by_program0.get(prog, 0.0)) / max(got, 1) * 1000
               for prog, secs in by_program.items()}
    return {"name": name, "accepted_per_s": args.messages / accepted,
            "delivered": got, "delivered_per_s": got / delivered if delivered else 0,
            "cpu_per_1000": cpu / max(got, 1) * 1000, "rss_mb": rss / 1e6,
            "ms_per_msg": {k: v for k, v in per_msg.items() if v >= 0.005}}


def bench_smtp(args) -> list[str]:
    if not SMTP_SOURCE:
        return ["smtp: skipped (smtp-source from Debian's postfix package is not installed)"]
    lines = []
    for kind, rcpt in (("discard", "user@discard.example"), ("maildir", "user@localhost")):
        if args.kind and kind != args.kind:
            continue
        results = []
        with tempfile.TemporaryDirectory(prefix="pymaster-bench-") as tmp:
            inst = Instance(Path(tmp), main_cf=BENCH_MAIN_CF)
            with inst:
                if kind == "discard":
                    count = lambda: log_count(inst.maillog, "status=sent")  # noqa: E731
                else:
                    count = lambda: maildir_count(inst.mailbox_dir / "bench")  # noqa: E731
                results.append(run_smtp("pymaster", inst, inst.smtp_port, args, rcpt, count))
        if os.path.exists(DEBIAN_POSTFIX) and os.geteuid() == 0 and not args.no_postfix:
            with tempfile.TemporaryDirectory(prefix="postfix-bench-") as tmp:
                pf = PostfixInstance(Path(tmp), BENCH_MAIN_CF)
                pf.run("start")
                try:
                    _wait_port(pf.port)
                    if kind == "discard":
                        count = lambda: log_count(pf.maillog, "status=sent")  # noqa: E731
                    else:
                        count = lambda: maildir_count(pf.mailbox_dir / "bench")  # noqa: E731
                    results.append(run_smtp("postfix", pf, pf.port, args, rcpt, count))
                finally:
                    pf.run("stop")
        lines.extend(_format_smtp(kind, args, results))
    return lines


def _wait_port(port: int, timeout: float = 30) -> None:
    import socket
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)


def _format_smtp(kind: str, args, results: list[dict]) -> list[str]:
    out = [f"smtp -> {kind}: {args.messages} messages of 1 KB over {args.sessions} sessions"]
    for r in results:
        out.append(f"  {r['name']:9} accepted {r['accepted_per_s']:8.1f} msg/s  "
                   f"delivered {r['delivered']:6d} at {r['delivered_per_s']:8.1f} msg/s  "
                   f"CPU {r['cpu_per_1000']:6.2f} s/1000 msgs  RSS {r['rss_mb']:7.1f} MB")
        split = sorted(r["ms_per_msg"].items(), key=lambda kv: -kv[1])
        out.append("    CPU ms/msg by program: "
                   + ", ".join(f"{prog} {ms:.2f}" for prog, ms in split))
    if len(results) == 2 and results[1]["delivered_per_s"]:
        out.append(f"  ratio pymaster/postfix delivered msg/s: "
                   f"{results[0]['delivered_per_s'] / results[1]['delivered_per_s']:.2f}")
    return out


def bench_modules(names: list[str]) -> list[str]:
    """bench_modules - the figures of the per-area benchmark modules in bench/."""
    lines = []
    for name in names:
        module = __import__(f"bench.{name}", fromlist=["run"])
        with tempfile.TemporaryDirectory(prefix=f"pymaster-{name}-") as tmp:
            lines.extend(module.run(Path(tmp)))
    return lines


def bench_queue(args) -> list[str]:
    """bench_queue - the queue section at --queue-messages, beside Postfix unless --no-postfix."""
    from bench import queue
    with tempfile.TemporaryDirectory(prefix="pymaster-queue-") as tmp:
        return queue.run(Path(tmp), args.queue_messages, postfix=not args.no_postfix)


def bench_matrix(args) -> list[str]:
    """bench_matrix - the main table, CPU by program and user/system, as markdown."""
    from bench import matrix, report
    cells = matrix.QUICK if args.quick else matrix.FULL
    with tempfile.TemporaryDirectory(prefix="pmb-") as tmp:
        results = matrix.run(Path(tmp), cells, rounds=args.rounds, scale=args.scale,
                             postfix=not args.no_postfix,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    return (report.matrix_table(results) + [""] + report.cpu_table(results) + [""]
            + report.kernel_table(results))


def bench_memory(args) -> list[str]:
    """bench_memory - PSS per process, idle and under --sessions to discard."""
    from bench import memory
    with tempfile.TemporaryDirectory(prefix="pmb-memory-") as tmp:
        return memory.run(Path(tmp), args.messages, args.sessions)


def bench_storm(args) -> list[str]:
    from bench import storm
    with tempfile.TemporaryDirectory(prefix="pmb-storm-") as tmp:
        return storm.run(Path(tmp), postfix=not args.no_postfix)


def sections(args) -> dict:
    """sections - name -> function returning the section's lines, in running order."""
    table = {"matrix": lambda: bench_matrix(args)}
    if not args.quick:
        table["storm"] = lambda: bench_storm(args)
        table["queue"] = lambda: bench_queue(args)
        for name in ("agent", "master", "tables", "dbtables", "kvtables"):
            table[name] = (lambda n=name: bench_modules([n]))
    if args.only:
        table["smtp"] = lambda: bench_smtp(args)
        table["smtp_client"] = lambda: bench_modules(["smtp_client"])
        table["memory"] = lambda: bench_memory(args)
    return table


def main() -> None:
    from bench import report
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="only the main table's Done-when rows (discard, virtual, relay; "
                             "10 and 50 sessions; 1 KB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="matrix: multiply every cell's message count")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--only", default="")
    parser.add_argument("--kind", default="", choices=("", "discard", "maildir"),
                        help="smtp: only this destination")
    parser.add_argument("--no-postfix", action="store_true",
                        help="skip the side-by-side runs of Debian's Postfix")
    parser.add_argument("--queue-messages", type=int, default=100_000,
                        help="queue: deferred messages in the queue that is listed and deleted")
    parser.add_argument("--output", default="",
                        help="where the report goes (default bench/results/latest.md; "
                             "an --only run writes none unless asked)")
    args = parser.parse_args()
    lines = report.heading(args.rounds, args.quick)
    print("\n".join(lines), flush=True)
    for name, fn in sections(args).items():
        if args.only and name != args.only:
            continue
        started = time.monotonic()
        out = [f"## {name}", ""]
        try:
            out += fn()
        except Exception as e:  # one broken benchmark must not hide the others
            out.append(f"  {name}: failed: {type(e).__name__}: {e}")
        out += ["", f"({name}: {time.monotonic() - started:.0f} s)", ""]
        print("\n".join(out), flush=True)
        lines += out
    lines.append(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
                 "(other work on the machine shares its cores with both mail systems).")
    # A partial run must not replace the whole report of the last full one.
    output = args.output or ("" if args.only else str(ROOT / "bench" / "results" / "latest.md"))
    if output:
        report.write(Path(output), lines)
        print(f"written to {output}", flush=True)


if __name__ == "__main__":
    main()
