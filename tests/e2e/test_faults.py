"""The fault suite: kill -9 of every program under load, and a full queue disk.

TestKill: messages with unique tokens from concurrent SMTP sessions (and
some through sendmail, maildrop and pickup) to three destinations: a
virtual Maildir, a loopback SMTP sink through smtp, and discard. While the
load runs, every program gets SIGKILL at a seeded random moment: smtpd,
cleanup (several times: item 2's window), qmgr, virtual, smtp, discard,
bounce, pickup, and the master, after which the children must leave, the
port must come free and `postfix start` starts it again. Then every token
that got 250 must be delivered, nothing may stay in the queue or land in
corrupt/. A duplicate is allowed only where a client retried after a DATA
that ended without 250 (451 after the commit), or for a delivery in
flight when its agent or qmgr died; both are counted and printed.

TestFullDisk: the queue on a small tmpfs (root only). smtpd must answer
`452 4.3.1 Insufficient system storage` before it accepts a message it
has no room for (queue_minfree), never 250 and then lose it; after the
space returns, everything accepted is delivered.

Sizes: PYMASTER_FAULT_SCALE (default 1: 1,000 messages, each program
killed once, cleanup three times) multiplies the messages and the rounds
of kills; `make soak` sets it. PYMASTER_FAULT_SEED fixes the seed; the seed
and the counts are printed in pytest's terminal summary (tests/conftest.py),
with or without -s, and stand in every assertion message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from tests.support.faultload import (
    Load,
    Sink,
    corrupt_files,
    discard_tokens,
    listening,
    maildir_tokens,
    queue_files,
)
from tests.support.instance import Instance, _alive, free_port, is_root
from tests.support.wait import poll, wait_until

SCALE = max(1, int(os.environ.get("PYMASTER_FAULT_SCALE", "1") or 1))
MESSAGES = 1000 * SCALE
SESSIONS = 8
PICKUP_EVERY = 25
# (program, kills per round); the master last in a round's sort order is by chance.
VICTIMS = [("smtpd", 1), ("cleanup", 3), ("qmgr", 1), ("virtual", 1), ("smtp", 1),
           ("discard", 1), ("bounce", 1), ("pickup", 1), ("master", 1)]
SINK_DOMAIN = "sink.example"
BOUNCE_DOMAIN = "bounce.example"        # error: its bounce (to the sink) carries the token
SENDER = f"load@{SINK_DOMAIN}"
DISCARD_DOMAIN = "discard.example"
QUICK_RETRY = {"minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
               "queue_run_delay": "1s", "ipc_timeout": "5s"}


DEFAULT_SEED = 171065794


def fault_seed() -> int:
    """fault_seed - PYMASTER_FAULT_SEED, else a fixed seed in `make test` (the
    same kill moments every run) and a random one under `make soak`."""
    raw = os.environ.get("PYMASTER_FAULT_SEED")
    if raw:
        return int(raw)
    return random.SystemRandom().randrange(1 << 32) if SCALE > 1 else DEFAULT_SEED


def report(request, line: str) -> None:
    """report - LINE in pytest's terminal summary, whatever the capture mode."""
    request.node.user_properties.append(("fault suite", line))


def programs(master_pid: int, program: str | None = None) -> list[psutil.Process]:
    """programs - the master's live children (those running PROGRAM)."""
    try:
        kids = psutil.Process(master_pid).children()
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in kids:
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            title = " ".join(p.cmdline())
        except psutil.NoSuchProcess:
            continue
        if program is None or title.startswith(f"pymaster/{program} "):
            out.append(p)
    return out


class Killer:
    """Kills each victim at its seeded share of the load's progress."""

    def __init__(self, inst: Instance, load: Load, seed: int, rounds: int) -> None:
        self.inst, self.load = inst, load
        self.rng = random.Random(seed)
        total = len(load.todo)
        plan = [(self.rng.uniform(0.05, 0.9) * total, name)
                for _ in range(rounds) for name, times in VICTIMS for _ in range(times)]
        self.plan = sorted(plan)
        self.killed: Counter[str] = Counter()
        self.absent: Counter[str] = Counter()      # never running when its turn came
        self.problems: list[str] = []
        self.moments: list[str] = []                # "name@progress" as it happened
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        for at, name in self.plan:
            poll(lambda at=at: self.load.finished() >= at, timeout=600, interval=0.1)
            try:
                self._kill(name)
            except Exception as e:      # noqa: BLE001 - reported, never silent
                self.problems.append(f"killing {name}: {type(e).__name__}: {e}")

    def _kill(self, name: str) -> None:
        master = self.inst.master_pid()
        if master is None:
            self.problems.append(f"no master pid when {name}'s turn came")
            return
        self.moments.append(f"{name}@{self.load.finished()}")
        if name == "master":
            self._kill_master(master)
            return
        # A program started on demand may not be running this very moment.
        found = poll(lambda: programs(master, name), timeout=10, interval=0.05)
        if not found:
            self.absent[name] += 1
            return
        victim = self.rng.choice(found)
        try:
            victim.send_signal(signal.SIGKILL)
            self.killed[name] += 1
        except psutil.NoSuchProcess:
            self.absent[name] += 1

    def _kill_master(self, master: int) -> None:
        family = [p.pid for p in programs(master)]
        os.kill(master, signal.SIGKILL)
        self.killed["master"] += 1
        poll(lambda: not _alive(master), timeout=10)
        # Issue 15 item 5: every child notices the master is gone and exits.
        poll(lambda: not any(_alive(p) for p in family), timeout=30)
        left = [p for p in family if _alive(p)]
        if left:
            titles = []
            for pid in left:
                try:
                    titles.append(" ".join(psutil.Process(pid).cmdline()))
                except psutil.NoSuchProcess:
                    pass
            self.problems.append(f"children still alive 30s after the master died: {titles}")
            for pid in left:        # so that the port comes free and the run can go on
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not poll(lambda: not listening(self.inst.smtp_port), timeout=30):
            self.problems.append("the SMTP port stayed busy after the master died")
        done = self.inst.postfix("start")
        if done.returncode != 0:
            self.problems.append(f"postfix start after kill -9 of the master: "
                                 f"{done.stderr.decode()[-500:]}")
            return
        self.inst.wait_for_port(self.inst.smtp_port, timeout=60)


@pytest.fixture
def sink():
    server = Sink(free_port()).start()
    yield server
    server.stop()


def kill_instance(tmp_path: Path, sink: Sink) -> Instance:
    transport = tmp_path / "transport"
    transport.write_text(f"{SINK_DOMAIN} smtp:[127.0.0.1]:{sink.server_address[1]}\n"
                         f"{DISCARD_DOMAIN} discard:\n"
                         f"{BOUNCE_DOMAIN} error:5.1.1 mailbox unavailable\n")
    return Instance(tmp_path, main_cf={
        "myhostname": "mx.faults.example",
        "transport_maps": f"texthash:{transport}",
        "smtp_helo_name": "mx.faults.example",
        # The error: transport's mail must be accepted to make its bounce
        # (smtpd refuses it at RCPT otherwise, as Postfix's does).
        "smtpd_reject_unlisted_recipient": "no",
        **QUICK_RETRY,
    })


def settle(inst: Instance, timeout: float) -> list[str]:
    """settle - wait for an empty queue (flushing now and then); what is left."""
    def empty() -> bool:
        if queue_files(inst.queue_dir):
            inst.postfix("flush")
            return False
        return True
    poll(empty, timeout=timeout, interval=1.0)
    return queue_files(inst.queue_dir)


class TestKill:
    def test_kill_9_of_every_program_under_load(self, tmp_path, sink, request):
        seed = fault_seed()
        report(request, f"kill -9: seed {seed} (PYMASTER_FAULT_SEED={seed} repeats it), "
                        f"{MESSAGES} messages, scale {SCALE}")
        recipients = [f"user{n}@localhost" for n in range(4)] + \
            [f"rcpt@{SINK_DOMAIN}", f"rcpt@{DISCARD_DOMAIN}", f"rcpt@{BOUNCE_DOMAIN}"]
        started = time.monotonic()
        with kill_instance(tmp_path, sink) as inst:
            load = Load(inst, f"{seed & 0xffffffff:08x}", SESSIONS, MESSAGES, recipients,
                        pickup_every=PICKUP_EVERY, sender=SENDER)
            killer = Killer(inst, load, seed, SCALE)
            killer.start()
            load.run(deadline=time.monotonic() + 120 * SCALE)
            killer.thread.join(120)
            left = settle(inst, timeout=120)
            time.sleep(1)       # a delivery reported just now is in its mailbox too
            delivered = maildir_tokens(inst.mailbox_dir) + sink.tokens + \
                discard_tokens(inst.log_text(), DISCARD_DOMAIN)
            corrupt = corrupt_files(inst.queue_dir)
            unfinished = queue_files(inst.queue_dir, complete=False)
        # discard leaves no trace but its log line, which a killed master's
        # postlogd may never write: such a token is unverified, not lost.
        unlogged = sorted(t for t in load.accepted if not delivered[t]
                          and load.rcpt_of[t].endswith("@" + DISCARD_DOMAIN))
        lost = sorted(t for t in load.accepted if not delivered[t] and t not in unlogged)
        dups = {t: n - 1 for t, n in delivered.items() if n > 1}
        retried = {t: d for t, d in dups.items() if load.ambiguous[t]}
        in_flight = {t: d for t, d in dups.items() if not load.ambiguous[t]}
        unknown = sorted(t for t in delivered if t not in load.rcpt_of)
        summary = (f"fault suite: accepted {len(load.accepted)}, delivered "
                   f"{sum(1 for t in load.accepted if delivered[t])}, lost {len(lost)}, "
                   f"discarded unlogged {len(unlogged)}, "
                   f"duplicated {sum(dups.values())} "
                   f"(after a 451/cut DATA {sum(retried.values())}, "
                   f"in flight at a kill {sum(in_flight.values())}), corrupt {len(corrupt)}, "
                   f"left in queue {len(left)} (unfinished, never 250: {len(unfinished)}), "
                   f"given up {len(load.given_up)}, "
                   f"DATA without 250 {sum(load.ambiguous.values())} "
                   f"(delivered anyway {sum(1 for t in load.ambiguous if delivered[t])}); "
                   f"killed {dict(killer.killed)}, not running {dict(killer.absent)}; "
                   f"{time.monotonic() - started:.0f}s; seed {seed}")
        report(request, summary)
        report(request, f"kill -9 replies: {dict(load.replies.most_common())}; "
                        f"kills at messages done: {' '.join(killer.moments)}")
        for p in killer.problems:
            report(request, f"kill -9 problem: {p}")
        assert not killer.problems, f"{killer.problems}\n{summary}"
        by_domain = Counter(load.rcpt_of[t].split("@")[1] for t in lost)
        assert not lost, f"lost {lost[:10]}, by destination {dict(by_domain)}\n{summary}"
        assert not corrupt and not left, f"corrupt {corrupt} left {left[:10]}\n{summary}"
        assert not unknown, f"tokens never sent: {unknown[:5]}\n{summary}"
        # A delivery in flight at a kill may repeat: at most one per agent
        # process that could hold one (in flight) per kill of qmgr, an agent or the master.
        delivery_kills = sum(killer.killed[n] for n in ("qmgr", "virtual", "smtp", "discard",
                                                        "master"))
        assert len(in_flight) <= delivery_kills * SESSIONS, f"{in_flight}\n{summary}"
        assert len(load.accepted) + len(load.given_up) == MESSAGES, summary
        assert len(load.given_up) <= MESSAGES // 100, summary


class TestMasterDeath:
    def test_an_open_session_neither_keeps_the_port_nor_outlives_the_master(self, tmp_path):
        """Issue 15 item 5: a client that keeps its session open used to keep
        smtpd, and the listening port, after kill -9 of the master."""
        import smtplib
        inst = Instance(tmp_path, main_cf={"myhostname": "mx.faults.example"}).start()
        try:
            conn = smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60)
            conn.ehlo("client.faults.example")
            master = inst.master_pid()
            smtpd = [p.pid for p in programs(master, "smtpd")]
            assert smtpd
            os.kill(master, signal.SIGKILL)
            wait_until(lambda: not listening(inst.smtp_port), 30, "the port to come free")
            assert conn.noop()[0] == 250            # the session in progress goes on a while
            wait_until(lambda: not any(_alive(p) for p in smtpd), 60, "smtpd to end")
            assert inst.postfix("start").returncode == 0
            inst.wait_for_port(inst.smtp_port)
        finally:
            inst.stop()


# -- the queue file system full ----------------------------------------------

TMPFS_SIZE = 8 * 1024 * 1024
SIZE_LIMIT = 100_000
MINFREE = 2 * 1024 * 1024
FILLER = ("x" * 76 + "\r\n") * 600          # about 47 KB a message


@pytest.fixture
def tmpfs_queue(tmp_path):
    if not is_root():
        pytest.skip("mounting a tmpfs for the queue needs root")
    spool = tmp_path / "spool"
    spool.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=755",
                           "tmpfs", str(spool)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield spool
    subprocess.run(["umount", "-l", str(spool)], capture_output=True)


class TestFullDisk:
    def test_452_before_acceptance_and_everything_accepted_delivered(self, tmp_path,
                                                                     tmpfs_queue, request):
        import smtplib
        mailboxes = tmp_path / "mailboxes"
        mailboxes.mkdir()
        os.chmod(mailboxes, 0o1777)
        inst = Instance(tmp_path, main_cf={
            "myhostname": "mx.faults.example", "virtual_mailbox_base": str(mailboxes),
            "queue_minfree": str(MINFREE), "message_size_limit": str(SIZE_LIMIT),
            # Nothing leaves the queue until the space is back.
            "defer_transports": "virtual", **QUICK_RETRY})
        accepted: list[str] = []
        refusals: list[str] = []
        with inst:
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as conn:
                for n in range(400):        # 8 MB / 47 KB: the disk fills long before
                    token = f"FULL-{n}"
                    code, text = conn.mail("fill@faults.example")
                    if code != 250:
                        refusals.append(f"MAIL {code} {text.decode()}")
                        break
                    conn.rcpt(f"user{n % 3}@localhost")
                    msg = f"Subject: {token}\r\n\r\n{token}\r\n{FILLER}".encode()
                    try:
                        code, text = conn.data(msg)
                    except smtplib.SMTPDataError as e:
                        code, text = e.smtp_code, e.smtp_error
                    if code != 250:
                        refusals.append(f"DATA {code} {text.decode()}")
                        conn.rset()
                        continue
                    accepted.append(token)
            free = os.statvfs(tmpfs_queue).f_bavail * os.statvfs(tmpfs_queue).f_frsize
            report(request, f"full disk: accepted {len(accepted)} before the refusal, "
                            f"then {refusals[-1] if refusals else 'nothing refused'}; "
                            f"{free} bytes free")
            assert refusals and refusals[-1].startswith(
                "MAIL 452 4.3.1 Insufficient system storage"), refusals
            assert not [r for r in refusals[:-1]], refusals
            inst.wait_for_log(r"warning: not enough free space in mail queue")
            # The space returns: the queue drains, and every 250 is a delivery.
            inst.command("postconf", "-c", str(inst.config_dir), "-e", "defer_transports =")
            inst.postfix("reload")
            inst.wait_for_log(r"reload -- version")
            left = settle(inst, timeout=120)
            got = maildir_tokens_full(mailboxes)
            lost = [t for t in accepted if got[t] < 1]
            twice = [t for t in accepted if got[t] > 1]
            summary = (f"fault suite (full disk): accepted {len(accepted)}, "
                       f"delivered {len(accepted) - len(lost)}, lost {len(lost)}, "
                       f"duplicated {len(twice)}, corrupt {len(corrupt_files(inst.queue_dir))}")
            report(request, summary)
            assert not lost and not twice and not left, summary
            assert not corrupt_files(inst.queue_dir), summary
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as conn:
                assert conn.mail("again@faults.example")[0] == 250


def maildir_tokens_full(base: Path) -> Counter[str]:
    import re
    found: Counter[str] = Counter()
    for root, _, files in os.walk(base):
        for f in files:
            for t in set(re.findall(rb"FULL-\d+", Path(root, f).read_bytes())):
                found[t.decode()] += 1
    return found
