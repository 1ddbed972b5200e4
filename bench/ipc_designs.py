#!/usr/bin/env python3
"""Prototype figures for taking the master off the data path (issue 15).

Three ways for one client to reach N workers that answer every request at
once, each measured for round trips per second and CPU per round trip in
the middle process (the "master") and in client plus workers together:

  broker   today's design: pymaster.master.broker.Broker in a middle
           process, a Python loop that moves every frame (ipc.Worker
           workers with one credit each).
  proxy    libzmq's own proxy (zmq.proxy, ROUTER in front, DEALER behind)
           in a thread of the middle process: no Python per request, but
           DEALER deals requests round-robin, so one can queue behind a
           busy worker (`hol` below shows it).
  direct   every worker binds its own endpoint and the client talks to it
           without a middle process, one request in flight per worker (what
           a lease gives: Postfix's one client per worker); the lease itself
           is not in the loop: it is paid once per lease, not per request.

  stream   as direct, but the requests travel over the accepted unix stream
           connection itself (4-byte length, JSON), no zeromq.

And the price of a lease handed out without the master, Postfix's way: the
workers share one listening unix socket (the master's, descriptor 3) and an
idle worker accepts; the accepted connection is the lease (its end of file
tells the client that the worker died, at once). `lease` measures a lease
per request, the worst case (Postfix's per-message connection): connect,
accept, the worker names its zeromq endpoint, one request over zeromq (a
socket per worker endpoint, kept by the client), close. A lease from a
Python lease desk in the master instead costs the master one brokered round
trip (the broker figures) per lease.

`head of line`: 2 workers, one of which sleeps HOLD seconds on a request;
20 requests follow; how many of them waited for the sleeper (broker and
direct: none; proxy: about half).

Benchmarks are not tests: nothing here asserts a figure.

    .venv/bin/python -m bench.ipc_designs [--seconds S] [--workers 1,4,16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import zmq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pymaster.util import ipc  # noqa: E402

IN_FLIGHT = 64
HOLD = 2.0


# -- the processes --------------------------------------------------------------

def run_middle(kind: str, directory: str) -> None:
    """run_middle - the broker loop or the libzmq proxy, until killed."""
    os.chdir(directory)
    if kind == "broker":
        from pymaster.master.broker import Broker
        broker = Broker("private", "svc")
        poller = zmq.Poller()
        poller.register(broker.frontend, zmq.POLLIN)
        poller.register(broker.backend, zmq.POLLIN)
        while True:
            events = dict(poller.poll())
            if broker.backend in events:
                broker.on_backend()
            if broker.frontend in events:
                broker.on_frontend()
    ctx = ipc.context()
    front, back = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    front.bind("ipc://private/svc")
    back.bind("ipc://private/.svc.workers")
    zmq.proxy(front, back)


def run_worker(kind: str, directory: str, index: int) -> None:
    """run_worker - answer every request at once (after its "hold" seconds, if any)."""
    os.chdir(directory)
    if kind in ("lease", "stream"):
        serve_leases(kind, index)
        return
    if kind == "broker":
        w = ipc.Worker("ipc://private/.svc.workers")
        w.ready(1)
        while True:
            client, header, payload = w.recv()
            if header.get("hold"):
                time.sleep(header["hold"])
            w.reply(client, {"status": "ok", "worker": index, "held": bool(header.get("hold"))})
    sock = ipc.context().socket(zmq.ROUTER if kind == "direct" else zmq.DEALER)
    if kind == "direct":
        sock.bind(f"ipc://private/.svc.{index}")
    else:
        sock.connect("ipc://private/.svc.workers")
    while True:
        frames = sock.recv_multipart()
        envelope, (header, _) = frames[:-1], ipc.unpack(frames[-1:])
        if header.get("hold"):
            time.sleep(header["hold"])
        sock.send_multipart([*envelope, *ipc.pack({"status": "ok", "worker": index,
                                                   "held": bool(header.get("hold"))})])


def serve_leases(kind: str, index: int) -> None:
    """serve_leases - accept a lease on the shared listening socket, serve its client, again."""
    import socket
    listener = socket.socket(fileno=int(os.environ["LISTEN_FD"]))
    sock = ipc.context().socket(zmq.ROUTER)
    name = f"private/.svc.{index}"
    sock.bind(f"ipc://{name}")
    while True:
        conn, _ = listener.accept()
        if kind == "stream":
            serve_stream(conn, index)
            continue
        conn.sendall(name.encode() + b"\n")
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(conn.fileno(), zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if sock in ready:
                frames = sock.recv_multipart()
                sock.send_multipart([*frames[:-1], *ipc.pack({"status": "ok", "worker": index})])
            if conn.fileno() in ready:
                break           # end of file: the lease is over
        conn.close()


def serve_stream(conn, index: int) -> None:
    """serve_stream - requests and replies on the lease connection itself."""
    f = conn.makefile("rb")
    while True:
        head = f.read(4)
        if len(head) < 4:
            break
        ipc.unpack([f.read(int.from_bytes(head, "big"))])
        reply = ipc.pack({"status": "ok", "worker": index})[0]
        conn.sendall(len(reply).to_bytes(4, "big") + reply)
    conn.close()


# -- the client -----------------------------------------------------------------

class Setup:
    """Middle process and workers of one design, started in a fresh directory."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind, self.workers = kind, workers
        self.dir = tempfile.mkdtemp(prefix="ipcd-", dir="/tmp")
        os.mkdir(os.path.join(self.dir, "private"))
        me = [sys.executable, "-m", "bench.ipc_designs"]
        self.procs: list[subprocess.Popen] = []
        self.listener = None
        if kind in ("broker", "proxy"):
            self.middle = self._start(me + ["--middle", kind, self.dir])
            self._wait(os.path.join(self.dir, "private", ".svc.workers"))
        elif kind in ("lease", "stream"):
            import socket
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(os.path.join(self.dir, "private", "svc"))
            self.listener.listen(100)
        for n in range(workers):
            self._start(me + ["--worker", kind, self.dir, str(n)])
        if kind in ("direct", "lease"):
            for n in range(workers):
                self._wait(os.path.join(self.dir, "private", f".svc.{n}"))
        time.sleep(0.3)       # workers connected and READY

    def _start(self, argv: list[str]) -> subprocess.Popen:
        if self.listener is not None:
            # The listening socket, inherited (the master passes it as descriptor 3).
            fd = self.listener.fileno()
            proc = subprocess.Popen(argv, cwd=str(ROOT), pass_fds=(fd,),
                                    env={**os.environ, "LISTEN_FD": str(fd)})
            self.procs.append(proc)
            return proc
        proc = subprocess.Popen(argv, cwd=str(ROOT))
        self.procs.append(proc)
        return proc

    @staticmethod
    def _wait(path: str) -> None:
        for _ in range(200):
            if os.path.exists(path):
                return
            time.sleep(0.02)
        raise RuntimeError(f"{path} never appeared")

    def cpu(self) -> tuple[float, float]:
        """cpu - CPU seconds so far of (the middle process, the workers)."""
        middle = workers = 0.0
        for proc in self.procs:
            t = psutil.Process(proc.pid).cpu_times()
            if self.kind in ("broker", "proxy") and proc is self.middle:
                middle += t.user + t.system
            else:
                workers += t.user + t.system
        return middle, workers

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def leases(setup: Setup, seconds: float) -> tuple[float, float]:
    """leases - (leases/s, us of client+workers CPU per lease), one request
    per lease, one lease at a time."""
    import socket
    path = os.path.join(setup.dir, "private", "svc")
    socks: dict[str, zmq.Socket] = {}
    request = [b"", *ipc.pack({"op": "ping"})]

    def one() -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        name = conn.makefile("rb").readline().strip().decode()
        sock = socks.get(name)
        if sock is None:
            sock = socks[name] = ipc.context().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(f"ipc://{setup.dir}/{name}")
        sock.send_multipart(request)
        sock.recv_multipart()
        conn.close()
    for _ in range(200):
        one()
    n, start, cpu0, own0 = 0, time.perf_counter(), setup.cpu(), own_cpu()
    while time.perf_counter() - start < seconds:
        one()
        n += 1
    elapsed = time.perf_counter() - start
    cpu1, own1 = setup.cpu(), own_cpu()
    for sock in socks.values():
        sock.close(0)
    return n / elapsed, (cpu1[1] - cpu0[1] + own1 - own0) / n * 1e6


def stream_round_trips(setup: Setup, seconds: float) -> tuple[float, float, float]:
    """stream_round_trips - as round_trips, over one kept lease per worker."""
    import selectors
    import socket
    path = os.path.join(setup.dir, "private", "svc")
    sel = selectors.DefaultSelector()
    body = ipc.pack({"op": "ping"})[0]
    request = len(body).to_bytes(4, "big") + body
    conns = []
    for _ in range(setup.workers):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        sel.register(conn, selectors.EVENT_READ, conn.makefile("rb"))
        conns.append(conn)
        conn.sendall(request)
    done, warm, start = 0, 200, None
    while True:
        for key, _ in sel.select(5):
            f = key.data
            ipc.unpack([f.read(int.from_bytes(f.read(4), "big"))])
            done += 1
            if done == warm:
                start, cpu0, own0 = time.perf_counter(), setup.cpu(), own_cpu()
            key.fileobj.sendall(request)
        if start is not None and time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    cpu1, own1 = setup.cpu(), own_cpu()
    n = done - warm
    for conn in conns:
        conn.close()
    return n / elapsed, 0.0, (cpu1[1] - cpu0[1] + own1 - own0) / n * 1e6


def sockets_for(setup: Setup) -> list:
    ctx = ipc.context()
    if setup.kind == "direct":
        socks = []
        for n in range(setup.workers):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(f"ipc://{setup.dir}/private/.svc.{n}")
            socks.append(s)
        return socks
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(f"ipc://{setup.dir}/private/svc")
    return [s]


def round_trips(setup: Setup, seconds: float) -> tuple[float, float, float]:
    """round_trips - (round trips/s, us of middle CPU and of client+workers CPU
    per round trip); IN_FLIGHT outstanding, or one per worker when direct."""
    socks = sockets_for(setup)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    per_sock = 1 if setup.kind == "direct" else IN_FLIGHT
    request = [b"", *ipc.pack({"op": "ping"})]
    for s in socks:
        for _ in range(per_sock):
            s.send_multipart(request)
    done, warm = 0, 200
    start = cpu0 = None
    while True:
        for s, _ in poller.poll(5000):
            s.recv_multipart()
            done += 1
            if done == warm:
                start, cpu0, own0 = time.perf_counter(), setup.cpu(), own_cpu()
            s.send_multipart(request)
        if start is not None and time.perf_counter() - start >= seconds:
            break
    elapsed = time.perf_counter() - start
    middle1, workers1 = setup.cpu()
    own1 = own_cpu()
    n = done - warm
    for s in socks:
        s.close(0)
    return (n / elapsed, (middle1 - cpu0[0]) / n * 1e6,
            (workers1 - cpu0[1] + own1 - own0) / n * 1e6)


def head_of_line(kind: str) -> int:
    """head_of_line - of 20 requests sent while one worker sleeps HOLD seconds
    on a request, how many are answered only after it wakes up."""
    setup = Setup(kind, 2)
    try:
        socks = sockets_for(setup)
        socks[0].send_multipart([b"", *ipc.pack({"op": "ping", "hold": HOLD})])
        time.sleep(0.2)
        woken = time.monotonic() + HOLD - 0.3
        free = socks[-1]    # direct: the client knows worker 0 is busy (its lease is)
        late = 0
        if kind == "direct":
            for _ in range(20):
                free.send_multipart([b"", *ipc.pack({"op": "ping"})])
                free.recv_multipart()
                late += time.monotonic() >= woken
            return late
        for _ in range(20):
            free.send_multipart([b"", *ipc.pack({"op": "ping"})])
        answered = 0
        while answered < 20:
            header, _ = ipc.unpack(free.recv_multipart()[1:])
            if header.get("held"):
                continue
            answered += 1
            late += time.monotonic() >= woken
        return late
    finally:
        setup.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", default="1,4,16")
    parser.add_argument("--middle", nargs=2)
    parser.add_argument("--worker", nargs=3)
    args = parser.parse_args()
    if args.middle:
        run_middle(*args.middle)
        return
    if args.worker:
        kind, directory, index = args.worker
        run_worker(kind, directory, int(index))
        return
    for kind in ("broker", "proxy", "direct", "stream"):
        for workers in (int(w) for w in args.workers.split(",")):
            setup = Setup(kind, workers)
            try:
                measure = stream_round_trips if kind == "stream" else round_trips
                rate, middle, rest = measure(setup, args.seconds)
            finally:
                setup.close()
            print(f"{kind:6} {workers:2} worker(s): {rate:8,.0f} round trips/s, "
                  f"middle {middle:6.1f} us, client+workers {rest:6.1f} us CPU per round trip")
    for workers in (1, 4):
        setup = Setup("lease", workers)
        try:
            rate, cpu = leases(setup, args.seconds)
        finally:
            setup.close()
        print(f"lease  {workers:2} worker(s): {rate:8,.0f} leases/s (one request each), "
              f"client+workers {cpu:6.1f} us CPU per lease and request")
    for kind in ("broker", "proxy", "direct"):
        print(f"{kind:6} head of line: {head_of_line(kind)} of 20 requests waited "
              f"behind a busy worker")


if __name__ == "__main__":
    main()
