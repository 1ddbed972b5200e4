"""scache: the shared connection cache's tables, its server loop and its client."""

from __future__ import annotations

import os
import re
import socket
import threading

import pytest

from pymaster.mail.config import load_config
from pymaster.mail.scache_client import ScacheClient
from services.scache import ConnectionCache, Server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def connection() -> tuple[socket.socket, socket.socket]:
    """connection - (the end a cache would hold, the "server's" end)."""
    return socket.socketpair()


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


@pytest.fixture
def cache():
    c = ConnectionCache(ttl_limit=2.0, clock=Clock())
    yield c
    c.close_all()


class TestTables:
    def test_an_endpoint_is_found_once(self, cache):
        ours, peer = connection()
        fd = ours.detach()
        assert cache.save_endp("smtp:192.0.2.1:25:none:", {"uses": 1}, fd, 2)
        assert cache.find_endp("smtp:192.0.2.1:25:none:") == ({"uses": 1}, fd)
        assert cache.find_endp("smtp:192.0.2.1:25:none:") is None
        os.close(fd)
        peer.close()

    def test_a_destination_finds_its_endpoint(self, cache):
        ours, peer = connection()
        fd = ours.detach()
        cache.save_endp("E", {"addr": "192.0.2.1"}, fd, 2)
        assert cache.save_dest("smtp:example.org", {}, "E", 2)
        assert cache.find_dest("smtp:example.org") == ({}, "E", {"addr": "192.0.2.1"}, fd)
        # The mapping stays, the connection is gone: a miss.
        assert cache.find_dest("smtp:example.org") is None
        assert (cache.counters.dest_hits, cache.counters.dest_miss) == (1, 1)
        os.close(fd)
        peer.close()

    def test_ttl_is_cut_to_the_limit_and_expiry_closes(self, cache):
        ours, peer = connection()
        fd = ours.detach()
        cache.save_endp("E", {}, fd, 300)
        cache.clock.now += 2.5                  # past connection_cache_ttl_limit (2s)
        cache.expire()
        assert not is_open(fd) and cache.empty()
        peer.settimeout(1)
        assert peer.recv(10) == b""             # the server sees the end
        peer.close()

    def test_a_zero_ttl_is_refused_and_the_descriptor_closed(self, cache):
        ours, peer = connection()
        fd = ours.detach()
        assert not cache.save_endp("E", {}, fd, 0)
        assert not is_open(fd)
        peer.close()

    def test_a_connection_the_server_ended_is_not_handed_out(self, cache):
        dead, dead_peer = connection()
        live, live_peer = connection()
        cache.save_endp("E", {"n": 1}, live.detach(), 2)
        cache.save_endp("E", {"n": 2}, dead.detach(), 2)
        dead_peer.sendall(b"421 4.4.2 idle too long\r\n")
        props, fd = cache.find_endp("E")
        assert props == {"n": 1}
        os.close(fd)
        dead_peer.close()
        live_peer.close()

    def test_statistics_lines(self, cache):
        assert cache.statistics() == []         # nobody asked: nothing logged
        ours, peer = connection()
        cache.save_endp("E", {}, ours.detach(), 2)
        cache.save_dest("D", {}, "E", 2)
        os.close(cache.find_dest("D")[3])
        assert cache.find_dest("D") is None
        cache.find_endp("X")
        lines = cache.statistics()
        assert re.fullmatch(r"statistics: start interval \w{3} [ \d]\d \d\d:\d\d:\d\d", lines[0])
        assert lines[1:] == ["statistics: domain lookup hits=1 miss=1 success=50%",
                             "statistics: address lookup hits=0 miss=1 success=0%",
                             "statistics: max simultaneous domains=1 addresses=1 connection=1"]
        peer.close()

    def test_requests(self, cache):
        ours, peer = connection()
        reply, give = cache.handle({"op": "save_endp", "label": "E", "props": {"a": 1},
                                    "ttl": 2}, [ours.detach()])
        assert reply == {"status": "ok"} and give == []
        assert cache.handle({"op": "save_dest", "label": "D", "endp_label": "E",
                             "ttl": 2}, [])[0] == {"status": "ok"}
        reply, give = cache.handle({"op": "find_dest", "label": "D"}, [])
        assert reply == {"status": "ok", "props": {}, "endp_label": "E",
                         "endp_props": {"a": 1}} and len(give) == 1
        os.close(give[0])
        assert cache.handle({"op": "find_endp", "label": "E"}, [])[0] == \
            {"status": "fail", "reason": "not found"}
        assert cache.handle({"op": "save_endp", "label": "E", "ttl": 2}, [])[0]["status"] \
            == "fail"
        assert cache.handle({"op": "bogus"}, [])[0]["status"] == "error"
        peer.close()


class FakeService:
    """What Server asks of its service: the parameters, stop flags, the master."""

    def __init__(self, cfg, alive_r: int) -> None:
        self.cfg = cfg
        self.stopping = False
        self.busy = False
        self.alive_r = alive_r

    def master_gone(self) -> bool:
        return os.read(self.alive_r, 1) == b""


@pytest.fixture
def server(tmp_path):
    (tmp_path / "main.cf").write_text("connection_cache_ttl_limit = 30s\n")
    cfg = load_config(str(tmp_path))
    path = str(tmp_path / "scache")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(5)
    listener.setblocking(False)
    alive_r, alive_w = os.pipe()
    svc = FakeService(cfg, alive_r)
    srv = Server(svc, ConnectionCache(30.0), listener, alive_fd=alive_r)  # type: ignore[arg-type]
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield path, srv
    os.close(alive_w)                   # the master goes: the server ends
    thread.join(10)
    assert not thread.is_alive()
    listener.close()
    os.close(alive_r)


def test_a_connection_saved_by_one_client_serves_another(server):
    path, srv = server
    first, second = ScacheClient(path, 5), ScacheClient(path, 5)
    ours, remote = connection()
    try:
        assert first.save_endp("smtp:192.0.2.1:25:none:", {"helo": "a"}, ours.fileno(), 10)
        ours.close()                    # scache holds its own copy
        assert first.save_dest("smtp:example.org", {}, "smtp:192.0.2.1:25:none:", 10)
        found = second.find_dest("smtp:example.org")
        assert found is not None
        props, endp, endp_props, fd = found
        assert (endp, endp_props) == ("smtp:192.0.2.1:25:none:", {"helo": "a"})
        with socket.socket(fileno=fd) as taken:
            taken.sendall(b"RSET\r\n")
            remote.settimeout(5)
            assert remote.recv(10) == b"RSET\r\n"
        assert second.find_endp("smtp:192.0.2.1:25:none:") is None
    finally:
        first.close()
        second.close()
        remote.close()


def test_without_scache_the_client_says_not_found_and_waits(tmp_path):
    client = ScacheClient(str(tmp_path / "missing"), 5)
    ours, remote = connection()
    assert client.find_dest("smtp:example.org") is None
    assert not client.available()
    assert not client.save_endp("E", {}, ours.fileno(), 2)
    ours.close()
    remote.close()


def test_a_client_reconnects_when_scache_was_restarted(server):
    path, srv = server
    client = ScacheClient(path, 5)
    assert client.find_endp("X") is None and client.available()
    # scache drops the client (as a restarted scache would have lost it).
    for sock in list(srv.clients):
        srv.selector.unregister(sock)
        srv.clients.discard(sock)
        sock.close()
    assert client.find_endp("X") is None
    assert client.available()
    client.close()
