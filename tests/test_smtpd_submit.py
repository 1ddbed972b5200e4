"""services.smtpd.submit.CleanupClient: smtpd's requests to cleanup from asyncio.

A zeromq ROUTER in the test's event loop stands in for the master's cleanup
endpoint; it answers what the test tells it to answer.
"""

from __future__ import annotations

import asyncio

import pytest
import zmq
import zmq.asyncio

from pymaster.util import ipc
from services.smtpd.submit import CleanupClient, SubmitError


@pytest.fixture
def endpoint(tmp_path):
    return f"ipc://{tmp_path}/cleanup"


async def answer(router: zmq.asyncio.Socket, count: int) -> list[dict]:
    """answer - take COUNT requests, then answer each with its own header."""
    held = []
    for _ in range(count):
        client, _, *message = await router.recv_multipart()
        header, _ = ipc.unpack(message)
        held.append((client, header))
    for client, header in held:
        await router.send_multipart([client, b"", *ipc.pack({"status": "ok", "echo": header})])
    return [header for _, header in held]


def run(endpoint: str, body) -> None:
    async def main():
        ctx = zmq.asyncio.Context.shadow(ipc.context())
        router = ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoint)
        client = CleanupClient(endpoint, timeout=5)
        try:
            await body(router, client)
        finally:
            client.close()
            router.close(0)
    asyncio.run(main())


class TestCleanupClient:
    def test_an_answer_comes_back_and_its_socket_is_used_again(self, endpoint):
        async def body(router, client):
            for n in range(2):
                served = asyncio.ensure_future(answer(router, 1))
                reply = await client.submit({"op": "reserve", "n": n}, [])
                assert reply == {"status": "ok", "echo": {"op": "reserve", "n": n}}
                await served
            assert len(client._idle) == 1
        run(endpoint, body)

    def test_every_socket_of_concurrent_requests_is_kept(self, endpoint):
        # A closed socket would make the next request a new connection, and
        # each new connection counts as a use toward cleanup's max_use.
        async def body(router, client):
            served = asyncio.ensure_future(answer(router, 20))
            replies = await asyncio.gather(*(client.submit({"n": n}, []) for n in range(20)))
            assert sorted(r["echo"]["n"] for r in replies) == list(range(20))
            await served
            assert len(client._idle) == 20
        run(endpoint, body)

    def test_a_request_without_an_answer_times_out_and_its_socket_is_dropped(self, endpoint):
        async def body(router, client):
            client.timeout = 0.2
            with pytest.raises(SubmitError, match=r"^timeout after 0.2s waiting for ipc://"):
                await client.submit({"op": "reserve"}, [])
            assert client._idle == []
        run(endpoint, body)
