"""services/dnsblog.py: one DNSBL lookup per request, against a loopback DNS server."""

from __future__ import annotations

import re

import pytest

from pymaster.mail.config import load_config
from pymaster.util import log
from services.dnsblog import make_handler
from tests.support.dnsserver import DnsServer

ZONE = {"2.2.0.192.zen.example": {"A": ["127.0.0.2", "127.0.0.10"]},
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example":
            {"A": ["127.0.0.3"]}}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(ZONE) as server:
        yield server


@pytest.fixture
def handle(tmp_path, dns):
    (tmp_path / "main.cf").write_text(f"dns_nameservers = {dns.nameserver}\n"
                                      f"maillog_file = {tmp_path / 'maillog'}\n")
    cfg = load_config(str(tmp_path))
    log.setup("dnsblog", cfg)
    yield make_handler(cfg)
    log.close()


def ask(handle, address: str, domain: str = "zen.example") -> dict:
    reply, payload = handle({"op": "query", "domain": domain, "address": address, "id": 7}, [])
    assert payload == []
    return reply


def test_a_listed_address_gets_every_answer_and_a_log_line(handle, tmp_path):
    reply = ask(handle, "192.0.2.2")
    answers = reply.pop("answers")
    assert reply.pop("ttl") == 60           # the loopback server's TTL
    assert reply == {"status": "ok", "domain": "zen.example", "address": "192.0.2.2", "id": 7}
    assert sorted(answers) == ["127.0.0.10", "127.0.0.2"]
    assert re.search(r"postfix/dnsblog\[\d+\]: addr 192\.0\.2\.2 listed by domain zen\.example "
                     r"as 127\.0\.0\.(2 127\.0\.0\.10|10 127\.0\.0\.2)$",
                     (tmp_path / "maillog").read_text(), re.M)


def test_ipv6_is_asked_by_nibbles(handle):
    assert ask(handle, "2001:db8::1")["answers"] == ["127.0.0.3"]


def test_an_unlisted_address(handle):
    reply = ask(handle, "192.0.2.3")
    assert reply["answers"] == [] and reply["ttl"] is None     # no SOA: no negative TTL


@pytest.mark.parametrize("address, domain", [("not-an-ip", "zen.example"), ("192.0.2.2", "")])
def test_bad_requests(handle, address, domain):
    assert ask(handle, address, domain)["status"] == "bad"
