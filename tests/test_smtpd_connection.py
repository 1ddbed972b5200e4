"""services/smtpd/connection.py: each wait for input gets smtpd_timeout from
its own start, whatever the connection's one timer was armed for before."""

from __future__ import annotations

import asyncio

import pytest

from services.smtpd.connection import Connection, ConnectionLost
from tests.test_fuzz_session import FakeTransport


def connection() -> Connection:
    conn = Connection()
    conn.connection_made(FakeTransport())
    return conn


def run(coro):
    async def guarded():
        return await asyncio.wait_for(coro, 20)     # a hang fails instead of blocking
    return asyncio.run(guarded())


def test_a_wait_without_input_times_out():
    async def go():
        with pytest.raises(asyncio.TimeoutError):
            await connection().wait_data(0.05)
    run(go())


def test_input_ends_the_wait():
    async def go():
        conn = connection()
        asyncio.get_running_loop().call_later(0.01, conn.data_received, b"NOOP\r\n")
        await conn.wait_data(30)
        return bytes(conn.buf)
    assert run(go()) == b"NOOP\r\n"


def test_input_keeps_coming_for_longer_than_one_timeout():
    """Ten waits of 0.5 s each, input every 0.05 s: 0.5 s in all, and no
    wait ever lasts its timeout, so none times out."""
    async def go():
        conn = connection()
        loop = asyncio.get_running_loop()
        for _ in range(10):
            loop.call_later(0.05, conn.data_received, b"x")
            await conn.wait_data(0.5)
        return len(conn.buf)
    assert run(go()) == 10


def test_a_short_wait_after_a_long_one_times_out():
    """The timer armed for the long wait's deadline must not delay the
    short wait's."""
    async def go():
        conn = connection()
        asyncio.get_running_loop().call_later(0.01, conn.data_received, b"x")
        await conn.wait_data(3600)
        with pytest.raises(asyncio.TimeoutError):
            await conn.wait_data(0.05)
    run(go())


def test_end_of_input_ends_the_wait_as_a_lost_connection():
    async def go():
        conn = connection()
        asyncio.get_running_loop().call_later(0.01, conn.eof_received)
        with pytest.raises(ConnectionLost):
            await conn.wait_data(30)
    run(go())


def test_a_closed_connection_keeps_no_timer():
    """A session's end leaves nothing scheduled that holds the connection."""
    async def go():
        conn = connection()
        asyncio.get_running_loop().call_later(0.01, conn.data_received, b"x")
        await conn.wait_data(3600)
        conn.close()
        return conn._timer
    assert run(go()) is None
