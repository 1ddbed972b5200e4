"""Serving a Broker's sockets in the test's own thread, as the master would.

Interface:
    pump(broker, until, timeout=20)    serve until UNTIL() is true, or fail
"""

from __future__ import annotations

import time

import zmq

from pymaster.master.broker import Broker


def pump(broker: Broker, until, timeout: float = 20) -> None:
    """pump - serve the broker's sockets until UNTIL() is true."""
    poller = zmq.Poller()
    poller.register(broker.frontend, zmq.POLLIN)
    poller.register(broker.backend, zmq.POLLIN)
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "broker pump timed out"
        events = dict(poller.poll(20))
        if broker.backend in events:
            broker.on_backend()
        if broker.frontend in events:
            broker.on_frontend()
