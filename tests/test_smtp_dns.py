"""services.smtp.dns: MX ordering, address fallback, null MX, errors as Postfix words them."""

import random

import pytest

from pymaster.mail.config import Config
from services.smtp.dns import DnsError, HostLookup, order_mx
from services.smtp.nexthop import parse_destinations
from services.smtp.settings import Settings
from tests.support.dnsserver import DnsServer

ZONE = {
    "example.com": {"MX": ["20 mx3.example.com.", "10 mx1.example.com.", "10 mx2.example.com."]},
    "mx1.example.com": {"A": ["192.0.2.1"]},
    "mx2.example.com": {"A": ["192.0.2.2"], "AAAA": ["2001:db8::2"]},
    "mx3.example.com": {"A": ["192.0.2.3"]},
    "nomx.example": {"A": ["192.0.2.9"]},
    "null.example": {"MX": ["0 ."]},
    "empty.example": {"TXT": ["v=spf1 -all"]},
    "broken.example": "SERVFAIL",
    "self.example": {"MX": ["10 me.self.example.", "20 other.self.example."]},
    "me.self.example": {"A": ["127.0.0.1"]},
    "other.self.example": {"A": ["192.0.2.20"]},
    "onlyself.example": {"MX": ["10 me.self.example."]},
    "halfbroken.example": {"MX": ["10 broken.example.", "20 mx1.example.com."]},
}


@pytest.fixture(scope="module")
def dns():
    with DnsServer(ZONE) as server:
        yield server


def lookup(tmp_path, dns, **values):
    settings = {"dns_nameservers": dns.nameserver, "inet_interfaces": "loopback-only",
                "myhostname": "client.example"}
    settings.update(values)
    cfg = Config(str(tmp_path), settings)
    return HostLookup(Settings.from_config(cfg), cfg)


def hosts(lk, text):
    return [(h.name, h.addr, h.port) for h in lk.hosts(parse_destinations(text, 25)[0])]


def test_order_mx_sorts_by_preference_and_shuffles_ties():
    random.seed(1)
    seen = set()
    for _ in range(50):
        ordered = order_mx([(20, "c"), (10, "a"), (10, "b"), (5, "z")])
        assert ordered[0] == (5, "z") and ordered[-1] == (20, "c")
        seen.add(tuple(ordered[1:3]))
    assert seen == {((10, "a"), (10, "b")), ((10, "b"), (10, "a"))}


def test_mx_hosts_in_preference_order_ipv4_first(tmp_path, dns):
    got = hosts(lookup(tmp_path, dns), "example.com")
    assert {got[0][0], got[1][0]} == {"mx1.example.com", "mx2.example.com"}
    assert got[-1] == ("mx3.example.com", "192.0.2.3", 25)
    mx2 = [h for h in got if h[0] == "mx2.example.com"]
    assert [a for _, a, _ in mx2] == ["192.0.2.2", "2001:db8::2"]


def test_inet_protocols_ipv4_leaves_out_aaaa(tmp_path, dns):
    got = hosts(lookup(tmp_path, dns, inet_protocols="ipv4"), "example.com")
    assert all(":" not in a for _, a, _ in got)


def test_a_domain_without_mx_is_its_own_mail_host(tmp_path, dns):
    assert hosts(lookup(tmp_path, dns), "nomx.example:2525") == \
        [("nomx.example", "192.0.2.9", 2525)]


def test_brackets_skip_the_mx_lookup(tmp_path, dns):
    assert hosts(lookup(tmp_path, dns), "[mx1.example.com]") == \
        [("mx1.example.com", "192.0.2.1", 25)]
    assert ("example.com", "MX") not in dns.queries[-2:]


def test_an_address_literal_needs_no_lookup(tmp_path, dns):
    assert hosts(lookup(tmp_path, dns), "[192.0.2.77]:26") == [("192.0.2.77", "192.0.2.77", 26)]


@pytest.mark.parametrize("domain, dsn, reason", [
    ("null.example", "5.1.10", "Domain null.example does not accept mail (nullMX)"),
    ("missing.example", "5.4.4", "Host or domain name not found. Name service error for "
                                 "name=missing.example type=MX: Host not found"),
    ("broken.example", "4.4.3", "Host or domain name not found. Name service error for "
                                "name=broken.example type=MX: Host not found, try again"),
    ("onlyself.example", "5.4.6", "mail for onlyself.example loops back to myself"),
])
def test_lookup_failures(tmp_path, dns, domain, dsn, reason):
    lk = lookup(tmp_path, dns)
    lk.resolver.lifetime = 2
    with pytest.raises(DnsError) as e:
        lk.hosts(parse_destinations(domain, 25)[0])
    assert (e.value.dsn, e.value.reason) == (dsn, reason)
    assert e.value.soft == dsn.startswith("4")


def test_no_address_records_at_all(tmp_path, dns):
    with pytest.raises(DnsError) as e:
        lookup(tmp_path, dns).hosts(parse_destinations("empty.example", 25)[0])
    assert e.value.dsn == "5.4.4"
    assert "name=empty.example type=A" in e.value.reason


def test_exchangers_not_better_than_this_host_are_dropped(tmp_path, dns):
    # self.example: this host is the best MX, so nothing is left.
    with pytest.raises(DnsError):
        lookup(tmp_path, dns).hosts(parse_destinations("self.example", 25)[0])


def test_one_broken_exchanger_does_not_hide_the_others(tmp_path, dns):
    lk = lookup(tmp_path, dns)
    lk.resolver.lifetime = 2
    assert hosts(lk, "halfbroken.example") == [("mx1.example.com", "192.0.2.1", 25)]


def test_native_lookups_use_the_system_resolver(tmp_path, dns):
    got = hosts(lookup(tmp_path, dns, smtp_host_lookup="native"), "[localhost]")
    assert ("localhost", "127.0.0.1", 25) in got
