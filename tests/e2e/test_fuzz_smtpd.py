"""Hostile clients against the real master's smtpd: random bytes, slowloris, storms.

- A seeded random-byte session fuzzer: N sessions of random command lines,
  random bytes, overlong lines, NULs, bare CR and LF, pipelined garbage,
  truncated TLS and AUTH attempts, a few at a time. Each session gets
  well-formed replies and is ended by the server (QUIT, the hard error
  limit, a pipelining hang-up, or the end of its input); no smtpd logs a
  traceback, "fatal", "panic" or "session failed"; a normal client is served
  afterwards. The seed is printed (PYMASTER_FUZZ_SEED=N repeats a run).
- slowloris: hundreds of idle and byte-a-second connections from several
  loopback addresses while a normal client is served (that it is served is
  asserted, never how fast).
- memory after a connection storm (issue 17, item 5): the process tree's
  PSS before, during and after 500 idle connections; it must come back to
  within a tolerance of where it started once they have closed.

PYMASTER_SOAK=1 multiplies the sessions and connections (tests/fuzzing.py).
"""

from __future__ import annotations

import os
import random
import re
import resource
import selectors
import smtplib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from bench.sampler import tree_memory as bench_tree_memory
from tests.fuzzing import SOAK, scaled
from tests.support.instance import Instance
from tests.support.wait import wait_until

HOST = "mx.example.com"
PER_ADDRESS = 40            # below smtpd_client_connection_count_limit (50)
BAD_LOG = re.compile(r"Traceback|fatal:|panic:|session failed", re.M)
REPLY_LINE = re.compile(rb"[2-5]\d\d([ -].*)?")


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, wanted), hard))


def source_address(i: int) -> str:
    """source_address - 127.0.0.2, 127.0.0.3 …: PER_ADDRESS connections each."""
    return f"127.0.0.{2 + i // PER_ADDRESS}"


def connect(port: int, src: str, timeout: float = 30) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((src, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def assert_served(inst: Instance, token: str) -> None:
    """assert_served - a normal client's message is accepted and delivered."""
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=120) as client:
        client.ehlo("normal.example")
        refused = client.sendmail("sender@example.com", ["joe@localhost"],
                                  f"Subject: {token}\r\n\r\n{token}\r\n")
    assert refused == {}
    inst.maildir_message_with(inst.mailbox_dir / "localhost" / "joe", token, timeout=60)


def assert_clean_log(inst: Instance) -> None:
    bad = [line for line in inst.log_text().splitlines() if BAD_LOG.search(line)]
    assert not bad, "\n".join(bad[:20])


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    _raise_fd_limit(4096)
    tmp = tmp_path_factory.mktemp("fuzz-smtpd")
    with Instance(tmp, main_cf={
        "myhostname": HOST,
        "smtpd_hard_error_limit": "20",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_db": str(tmp / "sasldb"),
    }) as instance:
        yield instance


# -- the random-byte session fuzzer ------------------------------------------------

VERBS = [b"HELO", b"EHLO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT", b"RSET", b"NOOP",
         b"VRFY", b"ETRN", b"STARTTLS", b"AUTH", b"XCLIENT", b"XFORWARD", b"EXPN", b"HELP",
         b"QUIT"]
ARGS = [b"<a@b.example>", b"<>", b"<joe@localhost>", b"<\"q\\\"\"@x>", b"SIZE=9999999999",
        b"BODY=8BITMIME", b"NOTIFY=NEVER,SUCCESS", b"ORCPT=rfc822;x+2By", b"PLAIN", b"LOGIN",
        b"CRAM-MD5", b"=", b"*", b"LAST", b"10", b"NAME=x ADDR=1.2.3.4", b"@example.com",
        b"\x00", b"\xff\xfe", b"\xc3\xa9", b"%s", b"../../", b" " * 40]
# A TLS ClientHello's first bytes, cut short (a client that speaks TLS on port 25).
TLS_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(range(32))


def fuzz_chunks(rng: random.Random) -> tuple[str, list[bytes]]:
    """fuzz_chunks - one session's kind and what its client sends, in writes."""
    kind = rng.choice(["commands", "commands", "commands", "bytes", "long", "tls", "auth",
                       "pipelined", "data"])
    chunks: list[bytes] = []
    if kind == "tls":
        return kind, [TLS_HELLO[:rng.randrange(1, len(TLS_HELLO))]]
    if kind == "auth":
        return kind, [b"EHLO fuzz\r\n", b"AUTH " + rng.choice([b"PLAIN", b"LOGIN", b"CRAM-MD5"])
                      + b"\r\n", bytes(rng.randrange(256) for _ in range(rng.randrange(20)))]
    if kind == "pipelined":
        return kind, [b"".join(_random_line(rng) for _ in range(rng.randrange(2, 30)))]
    if kind == "long":
        return kind, [b"EHLO fuzz\r\n", b"NOOP " + b"x" * rng.choice([1000, 5000, 300000])
                      + rng.choice([b"\r\n", b"\n", b""]), b"NOOP\r\n", b"QUIT\r\n"]
    if kind == "data":
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(2000)))
        return kind, [b"EHLO fuzz\r\nMAIL FROM:<f@example.com>\r\nRCPT TO:<joe@localhost>\r\n",
                      b"DATA\r\n", body, rng.choice([b"\r\n.\r\n", b"\n.\n", b"\r.\r", b""]),
                      b"QUIT\r\n"]
    for _ in range(rng.randrange(1, 25)):
        chunks.append(_random_line(rng) if kind == "commands"
                      else bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
    return kind, chunks + [b"\r\nQUIT\r\n"]


def _random_line(rng: random.Random) -> bytes:
    words = [rng.choice(VERBS)] + [rng.choice(ARGS) for _ in range(rng.randrange(4))]
    if rng.random() < 0.2:
        words.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30))))
    end = rng.choice([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\x00\r\n"])
    return b" ".join(words) + end


def fuzz_session(port: int, seed: int, index: int) -> str:
    """fuzz_session - one random session; a description of what went wrong, or ""."""
    rng = random.Random(f"{seed}/{index}")
    kind, chunks = fuzz_chunks(rng)
    what = f"seed {seed} session {index} ({kind})"
    received = bytearray()
    with connect(port, "127.0.0.1", timeout=60) as sock:
        if kind != "pipelined":
            received += sock.recv(4096)     # the greeting: no pipelining before it
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)   # end of input: the server ends the session
        except OSError:
            pass                            # it hung up first (errors, pipelining)
        try:
            while data := sock.recv(65536):
                received += data
        except ConnectionResetError:
            pass
        except TimeoutError:
            return f"{what}: the server did not end the session; got {bytes(received[-300:])!r}"
    if not received.startswith(b"220 ") and not received.startswith(b"554 5.5.0"):
        return f"{what}: no greeting: {bytes(received[:300])!r}"
    lines = bytes(received).split(b"\r\n")
    if lines[-1] != b"":
        return f"{what}: a reply without CRLF: {lines[-1][:200]!r}"
    bad = [line for line in lines[:-1] if not REPLY_LINE.fullmatch(line)]
    if bad:
        return f"{what}: malformed replies {bad[:3]!r}"
    if kind == "commands" and len(lines) < 3:
        return f"{what}: one reply for {len(chunks)} lines: {bytes(received)!r}"
    return ""


def test_random_sessions_get_replies_and_smtpd_survives(inst):
    # One known seed in `make test`, a new one each soak run.
    seed = int(os.environ.get("PYMASTER_FUZZ_SEED")
               or (random.SystemRandom().randrange(10**9) if SOAK else 112767096))
    sessions = scaled(60)
    print(f"smtpd session fuzzer: seed {seed}, {sessions} sessions "
          f"(PYMASTER_FUZZ_SEED={seed} repeats it)")
    with ThreadPoolExecutor(max_workers=6) as pool:
        problems = [p for p in pool.map(lambda i: fuzz_session(inst.smtp_port, seed, i),
                                        range(sessions)) if p]
    assert not problems, f"seed {seed}:\n" + "\n".join(problems[:10])
    inst.wait_for_log(r"disconnect from", count=sessions)
    assert_clean_log(inst)
    assert_served(inst, f"after-fuzz-{seed}")
    assert_clean_log(inst)


# -- slowloris ----------------------------------------------------------------------

class Slowloris:
    """COUNT connections from several loopback addresses: half idle, half
    sending one byte of an EHLO line a second, until stopped (or LIMIT seconds)."""

    def __init__(self, port: int, count: int, limit: float = 300) -> None:
        self.socks = [connect(port, source_address(i)) for i in range(count)]
        for sock in self.socks:
            sock.setblocking(False)
        self.dripping = self.socks[::2]
        self.stop = threading.Event()
        self.limit = limit
        self.sent = 0
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        # Each connection drips only once greeted: bytes before the greeting
        # are pipelining, which smtpd_forbid_unauth_pipelining rightly cuts.
        line = b"EHLO slowloris.example\r\n"
        greeted: set[socket.socket] = set()
        deadline = time.monotonic() + self.limit
        for second in range(int(self.limit)):
            if self.stop.wait(1) or time.monotonic() > deadline:
                return
            byte = line[second % len(line):second % len(line) + 1]
            for sock in self.dripping:
                try:
                    if sock not in greeted:
                        if not sock.recv(65536):
                            continue        # closed: open_count says so
                        greeted.add(sock)
                    sock.send(byte)
                    self.sent += 1
                except OSError:
                    pass

    def open_count(self) -> int:
        """open_count - connections the server has not closed."""
        sel = selectors.DefaultSelector()
        for sock in self.socks:
            sel.register(sock, selectors.EVENT_READ)
        closed = 0
        for key, _ in sel.select(0):
            try:
                while key.fileobj.recv(65536):   # type: ignore[union-attr]
                    pass
                closed += 1
            except BlockingIOError:
                pass
            except OSError:
                closed += 1
        sel.close()
        return len(self.socks) - closed

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


def test_slowloris_does_not_starve_a_normal_client(inst):
    count = scaled(300)
    _raise_fd_limit(count + 1024)
    attack = Slowloris(inst.smtp_port, count)
    try:
        wait_until(lambda: len(smtpd_pids(inst)) >= -(-count // 100), 60,
                   "smtpd processes for every slow connection")
        wait_until(lambda: attack.sent >= 3 * len(attack.dripping), 60, "three bytes dripped")
        assert_served(inst, "served-during-slowloris")
        assert attack.open_count() == count     # nobody was cut off for the normal client
    finally:
        attack.close()
    print(f"slowloris: {count} connections from {-(-count // PER_ADDRESS)} addresses, "
          f"{attack.sent} bytes dripped; the normal client was served")
    assert_clean_log(inst)


# -- memory after a connection storm (item 5) --------------------------------------------

def process_tree(inst: Instance) -> list[psutil.Process]:
    master = psutil.Process(inst.master_pid())
    return [master, *master.children(recursive=True)]


def smtpd_pids(inst: Instance) -> list[int]:
    pids = []
    for proc in process_tree(inst):
        try:
            if proc.name().startswith("pymaster/smtpd") or "smtpd" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            pass
    return pids


def tree_memory(inst: Instance) -> tuple[int, int, int]:
    """tree_memory - (processes, RSS MB, PSS MB) of the master and its children."""
    n, rss, pss = bench_tree_memory(inst.master_pid() or 0)
    return n, rss >> 20, pss >> 20


def quick_session(port: int, src: str) -> None:
    with connect(port, src) as sock:
        sock.recv(1024)
        sock.sendall(b"QUIT\r\n")
        sock.recv(1024)


def test_memory_returns_after_a_connection_storm(tmp_path):
    count = scaled(500)
    _raise_fd_limit(count + 1024)
    with Instance(tmp_path, main_cf={"myhostname": HOST}) as inst:
        # The resting state: one smtpd, and anvil (a client outside mynetworks).
        quick_session(inst.smtp_port, "127.0.0.1")
        quick_session(inst.smtp_port, "127.0.0.2")
        wait_until(lambda: len(smtpd_pids(inst)) == 1, 30, "one smtpd at rest")
        before = tree_memory(inst)
        socks = [connect(inst.smtp_port, source_address(i)) for i in range(count)]
        try:
            for sock in socks:
                assert sock.recv(1024).startswith(b"220 ")
            during = tree_memory(inst)
        finally:
            for sock in socks:
                sock.close()
        # Idle again: the storm's processes have left; a new client is served
        # (and brings the resting smtpd back).
        wait_until(lambda: len(smtpd_pids(inst)) == 0 or tree_memory(inst)[2] <= before[2] + 12,
                   60, lambda: f"the storm's smtpd processes to leave: {tree_memory(inst)}")
        quick_session(inst.smtp_port, "127.0.0.1")
        tolerance = max(12, before[2] // 5)

        def back() -> tuple[int, int, int] | None:
            now = tree_memory(inst)
            return now if now[2] <= before[2] + tolerance and len(smtpd_pids(inst)) <= 1 else None
        after = wait_until(back, 60, lambda: f"tree PSS back within {tolerance} MB of "
                                             f"{before}: {tree_memory(inst)}")
        print(f"memory, {count}-connection storm (processes, RSS MB, PSS MB): before {before}, "
              f"during {during}, after {after}")
        assert during[0] > before[0]
        assert_clean_log(inst)
