"""A request handler served on a zeromq endpoint from a thread, for unit
tests that talk to one service's code without a master (the master's broker
stands aside: the test binds the endpoint itself)."""

from __future__ import annotations

import threading

import zmq

from pymaster.util import ipc


class ServedHandler:
    """HANDLER(header, payload) -> (header, payload), answering at ENDPOINT."""

    def __init__(self, endpoint: str, handler) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.bind(endpoint)
        self.handler = handler
        self.requests = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(20):
                continue
            client, empty, *frames = self.sock.recv_multipart()
            header, payload = ipc.unpack(frames)
            self.requests += 1
            reply, reply_payload = self.handler(header, payload)
            self.sock.send_multipart([client, empty, *ipc.pack(reply, reply_payload)])

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close(0)
