"""smtp's connection caching: when a session is kept, and two clients (as two
smtp processes would) sharing one connection through a real scache server."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from pymaster.mail import delivery
from pymaster.mail.config import Config
from pymaster.mail.scache_client import ScacheClient
from services.scache import ConnectionCache, Server
from services.smtp.deliver import Client
from services.smtp.settings import Settings
from tests.support.smtpscript import ScriptServer
from tests.test_smtp_deliver import logged, queue_message, request, spool  # noqa: F401

# A spool to queue into and the log captured, as for the other smtp tests.
pytestmark = pytest.mark.usefixtures("spool", "logged")


def client_for(tmp_path, shared: ScacheClient | None = None, **values) -> Client:
    settings = {"myhostname": "client.example", "inet_interfaces": "loopback-only",
                "smtp_connect_timeout": "5s", "smtp_tls_security_level": "none"}
    settings.update({k: str(v) for k, v in values.items()})
    cfg = Config(str(tmp_path), settings)
    return Client(cfg, Settings.from_config(cfg), shared=shared)


def send(client: Client, nexthop: str, backlog: bool | None = None,
         cache_lookup: bool | None = None) -> str:
    req = request(queue_message(["a@example.com"]), nexthop)
    req.backlog, req.cache_lookup = backlog, cache_lookup
    status = delivery.Status(req)
    client.deliver(req, status)
    return status.results[0]["status"]


class TestWhenKept:
    def test_on_demand_keeps_only_while_qmgr_has_a_backlog(self, tmp_path):
        with ScriptServer() as server:
            client = client_for(tmp_path, smtp_connection_cache_on_demand="yes")
            hop = f"[127.0.0.1]:{server.port}"
            assert send(client, hop, backlog=False) == "sent"
            assert send(client, hop, backlog=True) == "sent"     # kept afterwards
            assert send(client, hop, backlog=False) == "sent"    # reused, then closed
            assert send(client, hop, backlog=False) == "sent"
            client.close()
        assert server.connections == 3

    def test_on_demand_looks_in_the_cache_only_when_qmgr_says_it_may_hold_one(self, tmp_path):
        with ScriptServer() as server:
            client = client_for(tmp_path, smtp_connection_cache_on_demand="yes")
            hop = f"[127.0.0.1]:{server.port}"
            assert send(client, hop, backlog=True, cache_lookup=False) == "sent"   # kept
            assert send(client, hop, backlog=True, cache_lookup=False) == "sent"   # not found
            assert send(client, hop, backlog=False, cache_lookup=True) == "sent"   # reused
            client.close()
        assert server.connections == 2

    def test_listed_destinations_are_kept_without_a_backlog(self, tmp_path):
        with ScriptServer() as server:
            hop = f"[127.0.0.1]:{server.port}"
            client = client_for(tmp_path, smtp_connection_cache_on_demand="no",
                                smtp_connection_cache_destinations=hop)
            for _ in range(3):
                assert send(client, hop, backlog=False) == "sent"
            client.close()
        assert server.connections == 1

    def test_reuse_count_limit(self, tmp_path):
        with ScriptServer() as server:
            client = client_for(tmp_path, smtp_connection_reuse_count_limit=2)
            for _ in range(5):
                assert send(client, f"[127.0.0.1]:{server.port}") == "sent"
            client.close()
        assert server.connections == 3          # 2 + 2 + 1 transactions


@pytest.fixture
def scache(tmp_path):
    """A real scache server loop in a thread, on a socket in TMP_PATH."""
    path = str(tmp_path / "scache.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(5)
    listener.setblocking(False)
    alive_r, alive_w = os.pipe()

    class Svc:
        cfg = Config(str(tmp_path), {})
        stopping = busy = False

        def master_gone(self) -> bool:
            return os.read(alive_r, 1) == b""

    server = Server(Svc(), ConnectionCache(30.0), listener, alive_fd=alive_r)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield path, server
    os.close(alive_w)
    thread.join(10)
    listener.close()
    os.close(alive_r)


class TestShared:
    def test_a_session_saved_by_one_client_is_used_by_another(self, tmp_path, scache):
        path, server = scache
        with ScriptServer() as remote:
            hop = f"[127.0.0.1]:{remote.port}"
            one = client_for(tmp_path, ScacheClient(path, 5))
            two = client_for(tmp_path, ScacheClient(path, 5))
            assert send(one, hop) == "sent"
            assert len(one.cache) == 0          # given to scache, not kept here
            assert send(two, hop) == "sent"     # found by destination
            assert send(one, hop) == "sent"
            one.close()
            two.close()
        assert remote.connections == 1
        assert len(remote.messages) == 3
        assert remote.commands.count("RSET") == 2
        assert server.cache.counters.dest_hits == 2

    def test_a_session_is_found_by_address_for_another_destination(self, tmp_path, scache):
        path, server = scache
        with ScriptServer() as remote:
            one = client_for(tmp_path, ScacheClient(path, 5))
            two = client_for(tmp_path, ScacheClient(path, 5))
            assert send(one, f"[127.0.0.1]:{remote.port}") == "sent"
            # Another next hop naming the same server: found by endpoint.
            assert send(two, f"127.0.0.1:{remote.port}") == "sent"
            one.close()
            two.close()
        assert remote.connections == 1
        assert server.cache.counters.endp_hits == 1

    def test_a_dead_scache_leaves_the_process_its_own_cache(self, tmp_path):
        with ScriptServer() as remote:
            client = client_for(tmp_path, ScacheClient(str(tmp_path / "none"), 5))
            for _ in range(3):
                assert send(client, f"[127.0.0.1]:{remote.port}") == "sent"
            client.close()
        assert remote.connections == 1
