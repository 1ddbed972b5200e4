"""smtpd's client limits (services/smtpd/limits.py): what anvil is told, and when.

As in Postfix, anvil hears nothing when no limit is set, nor about a client
in smtpd_client_event_limit_exceptions; a connection is one request (count
and rate come back together) and its end a one-way disconnect. The anvil
service itself is replaced by a recorder here; tests/e2e/test_anvil.py runs
the real one."""

import asyncio

import pytest

from pymaster.mail.config import load_config
from services.smtpd.limits import Limits
from services.smtpd.peer import Peer


class Recorder:
    """Stands in for the client of the anvil endpoint; remembers every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []

    async def request(self, header: dict, payload: list = []) -> dict:
        self.requests.append(("request", header))
        return {"status": "ok", "count": 1, "rate": 1}

    def notify(self, header: dict) -> None:
        self.requests.append(("one-way", header))

    def close(self) -> None:
        pass


def limits(tmp_path, monkeypatch, **settings) -> Limits | None:
    values = {"mynetworks": "127.0.0.0/8", **settings}
    (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "anvil").touch()       # master.cf has anvil
    monkeypatch.chdir(tmp_path)
    found = Limits.from_config(load_config(str(tmp_path)), "smtp")
    if found is not None:
        found.client = Recorder()
    return found


def session(lim: Limits, peer: Peer) -> None:
    async def run() -> None:
        assert await lim.connect(peer) is None
        await lim.disconnect(peer)
    asyncio.run(run())


STRANGER = Peer("client.example", "192.0.2.1")
NEIGHBOUR = Peer("localhost", "127.0.0.1")


def test_no_limit_set_means_no_anvil(tmp_path, monkeypatch):
    assert limits(tmp_path, monkeypatch, smtpd_client_connection_count_limit="0") is None


@pytest.mark.parametrize("name", ["connection", "message", "recipient", "new_tls_session",
                                  "auth"])
def test_any_rate_limit_brings_anvil_in(tmp_path, monkeypatch, name):
    assert limits(tmp_path, monkeypatch, smtpd_client_connection_count_limit="0",
                  **{f"smtpd_client_{name}_rate_limit": "5"}) is not None


def test_a_connection_is_one_request_and_a_one_way_disconnect(tmp_path, monkeypatch):
    lim = limits(tmp_path, monkeypatch)
    session(lim, STRANGER)
    assert lim.client.requests == [("request", {"op": "connect", "ident": "smtp:192.0.2.1"}),
                                   ("one-way", {"op": "disconnect", "ident": "smtp:192.0.2.1"})]


def test_an_exempt_client_is_not_counted(tmp_path, monkeypatch):
    lim = limits(tmp_path, monkeypatch, smtpd_client_message_rate_limit="1")
    session(lim, NEIGHBOUR)
    assert asyncio.run(lim.message(NEIGHBOUR)) is None
    assert lim.client.requests == []
