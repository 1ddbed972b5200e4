"""pymaster/master/handoff.py: a client connection handed to a pass service."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pymaster.master import handoff
from pymaster.master.mastercf import parse_master_cf


def test_a_pass_service_listens_on_a_stream_socket():
    entries, errors = parse_master_cf("smtpd pass - - y - - smtpd\n"
                                      "dnsblog unix - - y - 0 dnsblog\n", "master.cf")
    assert not errors
    smtpd, dnsblog = entries
    assert smtpd.stream_listener
    # A request service listens on a stream socket too, for leases (pymaster.util.ipc).
    assert dnsblog.stream_listener


@pytest.fixture
def service(tmp_path):
    """service - a listening unix socket as the master opens for a pass service."""
    path = str(tmp_path / "smtpd")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(5)
    yield path, sock
    sock.close()


def test_the_connection_and_its_attributes_arrive(service):
    path, listener = service
    client, server_side = socket.socketpair()
    attrs = {"client_address": "192.0.2.1", "client_port": 4321,
             "server_address": "192.0.2.25", "server_port": "25"}
    handoff.send(path, server_side, attrs, timeout=5)
    server_side.close()                 # the receiver's copy keeps it open

    async def receive():
        conn, _ = listener.accept()
        return await handoff.receive(asyncio.get_running_loop(), conn, timeout=5)

    passed, got = asyncio.run(receive())
    assert got == {"client_address": "192.0.2.1", "client_port": "4321",
                   "server_address": "192.0.2.25", "server_port": "25"}
    passed.setblocking(True)
    passed.sendall(b"220 hello\r\n")
    assert client.recv(100) == b"220 hello\r\n"
    passed.close()
    client.close()


def test_a_message_without_a_connection_is_refused(service):
    path, listener = service
    from pymaster.util import fdpass
    with fdpass.connect(path, 5) as sender:
        fdpass.send(sender, {"op": "connection"})

    async def receive():
        conn, _ = listener.accept()
        return await handoff.receive(asyncio.get_running_loop(), conn, timeout=5)

    with pytest.raises(handoff.HandoffError):
        asyncio.run(receive())


def test_a_silent_sender_times_out(service):
    path, listener = service
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sender.connect(path)

    async def receive():
        conn, _ = listener.accept()
        return await handoff.receive(asyncio.get_running_loop(), conn, timeout=0.2)

    with pytest.raises(handoff.HandoffError, match="timeout"):
        asyncio.run(receive())
    sender.close()
