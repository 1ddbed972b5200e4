"""pymaster.master.broker's routing path: frames pass through exactly as pymaster.util.ipc
lays them out, whatever their size or number, in both directions.

The broker runs in the test's thread; the client and the worker are raw zmq
sockets driven by hand from the same thread, so every frame on the wire is
visible to the test.
"""

from __future__ import annotations

import pytest
import zmq

from pymaster.util import ipc
from pymaster.master.broker import Broker
from tests.support.brokerpump import pump

PAYLOADS = [
    [],
    [b""],
    [b"x" * 10, b"", b"y"],
    [bytes(range(256)) * 1024],            # large: above zmq's copy threshold
]


@pytest.fixture
def broker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "private").mkdir()
    b = Broker("private", "svc")
    yield b
    b.close()


@pytest.fixture
def peers(broker):
    """peers - (client, worker): a DEALER on each side of BROKER; the worker
    has the identity a worker with pid 4242 has and has said READY 1."""
    ctx = zmq.Context.instance()
    client = ctx.socket(zmq.DEALER)
    worker = ctx.socket(zmq.DEALER)
    worker.setsockopt(zmq.IDENTITY, b"4242")
    for sock, ep in ((client, "ipc://private/svc"), (worker, "ipc://private/.svc.workers")):
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(ep)
    worker.send_multipart([b"", ipc.READY, b"1"])
    pump(broker, lambda: broker.credits)
    yield client, worker
    client.close()
    worker.close()


def receive(broker: Broker, sock: zmq.Socket) -> list[bytes]:
    box: list = []

    def arrived() -> bool:
        if sock.poll(0):
            box.append(sock.recv_multipart())
        return bool(box)
    pump(broker, arrived)
    return box[0]


@pytest.mark.parametrize("payload", PAYLOADS, ids=["none", "empty", "three", "large"])
def test_a_request_and_its_reply_cross_the_broker_frame_for_frame(broker, peers, payload):
    client, worker = peers
    header = ipc.pack({"op": "deliver", "n": 1})[0]
    client.send_multipart([b"", header, *payload])
    client_id, empty, *request = receive(broker, worker)[1:]
    assert (empty, request) == (b"", [header, *payload])
    reply = ipc.pack({"status": "ok"}, payload)
    worker.send_multipart([b"", client_id, b"", *reply])
    assert receive(broker, client) == [b"", *reply]
    assert broker.credits == {b"4242": 1}          # the reply returned the credit


def test_requests_wait_in_order_until_credit_returns(broker, peers):
    client, worker = peers
    for n in range(3):
        client.send_multipart([b"", *ipc.pack({"n": n})])
    pump(broker, lambda: broker.requests == 1 and len(broker.pending) == 2)
    seen = []
    for _ in range(3):
        _, client_id, _, header = receive(broker, worker)
        seen.append(ipc.unpack([header])[0]["n"])
        worker.send_multipart([b"", client_id, b"", *ipc.pack({"ok": 1})])
    assert seen == [0, 1, 2]
    assert [receive(broker, client) for _ in range(3)] == [[b"", b'{"ok":1}']] * 3


def test_a_short_request_is_dropped_and_the_next_one_served(broker, peers):
    client, worker = peers
    client.send_multipart([b""])                   # no header: nothing to route
    client.send_multipart([b"", *ipc.pack({"op": "x"})])
    assert receive(broker, worker)[3:] == [b'{"op":"x"}']
    assert not broker.pending


def test_a_dead_workers_request_is_answered_with_an_error(broker, peers):
    client, worker = peers
    client.send_multipart([b"", *ipc.pack({"op": "x", "id": 7})])
    receive(broker, worker)
    broker.forget(4242)
    _, header = receive(broker, client)
    assert ipc.unpack([header])[0] == {"status": "error", "id": 7,
                                       "reason": "lost connection with svc service"}


def test_bye_is_answered_and_ends_the_credit(broker, peers):
    client, worker = peers
    worker.send_multipart([b"", ipc.BYE])
    assert receive(broker, worker) == [b"", ipc.BYE]
    assert broker.credits == {} and b"4242" in broker.retired
