"""services/postscreen: the pieces below the session, as tables of cases."""

from __future__ import annotations

import asyncio

import pytest

from pymaster.mail.config import load_config
from pymaster.master.cachefile import CacheFileError, sqlite_path
from services.postscreen import proxy, replies
from services.postscreen.cache import DISABLED, ClientCache, Stamps
from services.postscreen.dnsbl import Query
from services.postscreen.settings import Settings, parse_site


@pytest.mark.parametrize("seconds, text", [
    (0, "0"), (0.0013, "0"), (0.005, "0.01"), (0.31, "0.31"), (0.6, "0.6"), (0.1, "0.1"),
    (1.0, "1"), (1.64, "1.6"), (6.43, "6.4"), (12.7, "12"), (300.2, "300"),
])
def test_elapsed_time_as_postfix_prints_it(seconds, text):
    assert replies.elapsed(seconds) == text


def test_client_input_is_escaped_and_cut():
    assert replies.printable(b"EHLO x\r\n") == "EHLO x\\r\\n"
    assert replies.printable(b"\x01\\\t") == "\\001\\\\\\t"
    assert len(replies.printable(b"A" * 500)) == replies.TEXT_LIMIT


@pytest.mark.parametrize("text, domain, filt, weight", [
    ("zen.spamhaus.org", "zen.spamhaus.org", "", 1),
    ("zen.spamhaus.org*3", "zen.spamhaus.org", "", 3),
    ("b.barracudacentral.org=127.0.0.2*2", "b.barracudacentral.org", "127.0.0.2", 2),
    ("list.dnswl.org=127.0.[0..255].[1;2]*-2", "list.dnswl.org", "127.0.[0..255].[1;2]", -2),
    ("Example.ORG.", "example.org", "", 1),
])
def test_dnsbl_sites(text, domain, filt, weight):
    site = parse_site(text)
    assert (site.domain, site.filter_text, site.weight) == (domain, filt, weight)


def test_a_site_filter_picks_its_answers():
    site = parse_site("list.dnswl.org=127.0.[0..255].[2;3]*-5")
    assert site.matches("127.0.10.2") and site.matches("127.0.9.3")
    assert not site.matches("127.0.10.1")
    assert parse_site("zen.example").matches("127.0.0.99")


@pytest.mark.parametrize("text", ["zen.example*x", "zen.example=127.0.0.[2", "a b"])
def test_malformed_sites(text):
    with pytest.raises(ValueError):
        parse_site(text)


@pytest.mark.parametrize("line, addrs", [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 51234 25",
     ("192.0.2.1", "51234", "198.51.100.2", "25")),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 587", ("2001:db8::1", "1", "2001:db8::2", "587")),
    (b"PROXY UNKNOWN", None),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2", None),
])
def test_proxy_lines(line, addrs):
    assert proxy.parse(line) == addrs


@pytest.mark.parametrize("line", [
    b"EHLO x", b"PROXY TCP4 192.0.2.1 198.51.100.2 51234", b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 0 25", b"PROXY TCP4 192.0.2.1 192.0.2.2 1 65536",
    b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2", b"PROXY TCP4 300.0.2.1 192.0.2.2 1 2",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 \xff",
])
def test_malformed_proxy_lines(line):
    with pytest.raises(proxy.ProxyError):
        proxy.parse(line)


def test_cache_values_are_postfixs_five_stamps():
    assert Stamps(10, 20, DISABLED, DISABLED, 0).text() == "10;20;1;1;0"
    assert Stamps.parse("10;20;1;1;0") == Stamps(10, 20, 1, 1, 0)
    assert Stamps.parse("10;20") is None and Stamps.parse("a;b;c;d;e") is None


@pytest.mark.parametrize("spec, path", [
    ("", None), ("btree:/var/lib/postfix/psc", "/var/lib/postfix/psc.sqlite"),
    ("proxy:btree:/var/lib/postfix/psc", "/var/lib/postfix/psc.sqlite"),
])
def test_cache_path(spec, path):
    assert sqlite_path("postscreen_cache_map", spec) == path


@pytest.mark.parametrize("spec", ["btree:relative", "regexp:/x", "nocolon"])
def test_bad_cache_maps(spec):
    with pytest.raises(CacheFileError, match="^postscreen_cache_map: "):
        sqlite_path("postscreen_cache_map", spec)


def test_the_cache_keeps_and_cleans(tmp_path):
    cache = ClientCache(str(tmp_path / "psc.sqlite"))
    cache.put("192.0.2.1", Stamps(1000, 1000, 1, 1, 1))
    cache.put("192.0.2.2", Stamps(5000, 5000, 1, 1, 1))
    assert cache.get("192.0.2.1") == Stamps(1000, 1000, 1, 1, 1)
    assert cache.get("192.0.2.3") is None
    # Retention 100 s at time 2000: the first expired 1000 s ago, the second not yet.
    assert cache.cleanup(2000, 100) == (1, 1)
    assert cache.get("192.0.2.1") is None
    other = ClientCache(str(tmp_path / "psc.sqlite"))     # another postscreen process
    assert other.get("192.0.2.2") == Stamps(5000, 5000, 1, 1, 1)
    cache.close()
    other.close()


@pytest.mark.parametrize("ttls, expected", [
    ([300, 120], 120),          # the smallest answer's TTL
    ([5], 60),                  # no shorter than postscreen_dnsbl_min_ttl
    ([86400], 3600),            # no longer than postscreen_dnsbl_max_ttl
    ([None], 3600),             # nobody said: the maximum
])
def test_a_dnsbl_result_holds_for_its_ttl(tmp_path, ttls, expected):
    (tmp_path / "main.cf").write_text("postscreen_dnsbl_sites = a.example b.example\n")
    settings = Settings.from_config(load_config(str(tmp_path)))

    async def scored() -> int:
        query = Query(settings, "ipc://unused", None)
        for i, ttl in enumerate(ttls):
            done = asyncio.get_running_loop().create_future()
            done.set_result(([], ttl))
            query.tasks[f"site{i}.example"] = done
        return query.ttl()
    assert asyncio.run(scored()) == expected
