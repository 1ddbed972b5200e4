"""services/smtpd/netlist.py: the kept answers are the library list's answers."""

from __future__ import annotations

from pymaster.mail import netlist as library
from services.smtpd import netlist
from services.smtpd.netlist import NetList

ENTRIES = ["127.0.0.0/8", "[::1]/128", "!192.0.2.1", "192.0.2.0/24", ".example.com", "host.test"]
CLIENTS = [("127.0.0.1", "localhost"), ("::1", "unknown"), ("192.0.2.1", "unknown"),
           ("192.0.2.7", "unknown"), ("198.51.100.1", "mx.example.com"),
           ("198.51.100.2", "HOST.test"), ("198.51.100.3", "unknown"), ("unknown", "unknown"),
           ("fe80::1%eth0", "unknown")]


def test_answers_match_the_library_list_asked_twice():
    kept, plain = NetList(ENTRIES), library.NetList(ENTRIES)
    for _ in range(2):
        assert [kept.match(a, n) for a, n in CLIENTS] == [plain.match(a, n) for a, n in CLIENTS]


def test_an_empty_list_matches_nobody():
    assert not NetList([]).match("127.0.0.1", "localhost")


def test_answers_stay_right_past_the_bound(monkeypatch):
    monkeypatch.setattr(netlist, "KEPT_ANSWERS", 3)
    kept = NetList(["192.0.2.0/24"])
    for _ in range(3):
        for i in range(10):
            assert kept.match(f"192.0.2.{i}")
            assert not kept.match(f"198.51.100.{i}")


def test_a_list_with_a_table_asks_the_table_each_time(tmp_path):
    """A table may change while smtpd runs: its answers are not kept."""
    table = tmp_path / "clients"
    table.write_text("192.0.2.1 OK\n")
    kept = NetList([f"texthash:{table}"])
    assert kept.match("192.0.2.1")
    assert not kept._fixed
