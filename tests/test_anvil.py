"""anvil's counting: connections open, events per time unit, the statistics lines."""

from services.anvil import Anvil


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_connection_count_and_rate():
    clock = Clock()
    anvil = Anvil(60, clock)
    assert anvil.handle({"op": "connect", "ident": "smtp:192.0.2.1"}) == \
        {"status": "ok", "rate": 1, "count": 1}
    assert anvil.handle({"op": "connect", "ident": "smtp:192.0.2.1"})["count"] == 2
    assert anvil.handle({"op": "disconnect", "ident": "smtp:192.0.2.1"})["count"] == 1
    assert anvil.handle({"op": "connect", "ident": "smtp:192.0.2.1"})["rate"] == 3


def test_rates_reset_after_the_time_unit():
    clock = Clock()
    anvil = Anvil(60, clock)
    for n in (1, 2, 3):
        assert anvil.handle({"op": "message", "ident": "smtp:192.0.2.1"})["rate"] == n
    clock.now += 60
    assert anvil.handle({"op": "message", "ident": "smtp:192.0.2.1"})["rate"] == 1


def test_clients_are_counted_apart():
    anvil = Anvil(60, Clock())
    anvil.handle({"op": "recipient", "ident": "smtp:192.0.2.1"})
    assert anvil.handle({"op": "recipient", "ident": "smtp:192.0.2.2"})["rate"] == 1


def test_statistics_lines():
    anvil = Anvil(60, Clock())
    anvil.handle({"op": "connect", "ident": "smtp:192.0.2.1"})
    lines = anvil.statistics()
    assert lines[0].startswith("statistics: max connection rate 1/60s for (smtp:192.0.2.1) at ")
    assert lines[1].startswith("statistics: max connection count 1 for (smtp:192.0.2.1) at ")
    assert lines[2].startswith("statistics: max cache size 1 at ")
    assert anvil.statistics() == []


def test_bad_requests():
    anvil = Anvil(60, Clock())
    assert anvil.handle({"op": "connect"})["status"] == "error"
    assert anvil.handle({"op": "frobnicate", "ident": "x"})["status"] == "error"
