"""The verify cache kept in a writable table (services/verify/tablecache.py):
Postfix's entry format, the verify rules over an lmdb: and a memcache: table,
and a memcached that goes away."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pymaster.mail.config import default_config, load_config
from pymaster.mail.verify_client import BOUNCE, OK, TODO
from pymaster.util.tables import create_table
from services.verify import make_handler, open_cache
from services.verify.cache import CacheError, Entry, VerifyCache
from services.verify.policy import IN_PROGRESS, Settings, Verifier
from pymaster.master.cachefile import in_table
from services.verify.tablecache import TableCache, decode, encode
from tests.support.memcached import Memcached, available

DEFAULTS = Settings.from_config(default_config())
T0 = 1_700_000_000
DAY = 86400


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def verifier(cache) -> tuple[Verifier, Clock, list[str]]:
    clock, sent = Clock(), []
    v = Verifier(replace(DEFAULTS, cleanup_interval=DAY // 2), cache,
                 lambda a: sent.append(a) or True, clock)
    return v, clock, sent


@pytest.mark.parametrize("spec, expected", [
    ("lmdb:/var/lib/postfix/verify_cache", True),
    ("proxy:lmdb:/var/lib/postfix/verify_cache", True),
    ("memcache:/etc/postfix/verify.cf", True),
    ("btree:/var/lib/postfix/verify_cache", False),
    ("proxy:btree:/var/lib/postfix/verify_cache", False),
    ("", False),
])
def test_which_maps_live_in_a_table(spec, expected):
    assert in_table(spec) is expected


def test_entries_in_postfix_format():
    entry = Entry(BOUNCE, 0, T0, "5.1.1 unknown user: \"x\": with colons")
    assert encode(entry) == f"2:0:{T0}:5.1.1 unknown user: \"x\": with colons"
    assert decode(encode(entry)) == entry
    assert decode("9:0:0:x") is None and decode("garbage") is None


@pytest.fixture
def lmdb_cache(tmp_path):
    pytest.importorskip("lmdb")
    return TableCache(create_table(f"lmdb:{tmp_path / 'verify_cache'}", create=True,
                                   fold=False))


def test_verify_rules_over_lmdb(lmdb_cache):
    v, clock, sent = verifier(lmdb_cache)
    assert v.query("Joe@Example.com") == (TODO, IN_PROGRESS)
    assert sent == ["joe@example.com"]
    v.update("joe@example.com", OK, "deliverable")
    assert v.query("joe@example.com") == (OK, "deliverable")
    v.update("bad@example.com", BOUNCE, "unknown user")
    clock.now += 3 * DAY + 1
    assert v.cleanup_due() == (1, 1)    # the bounce expired; joe (31 days) stays
    assert lmdb_cache.get("bad@example.com") is None
    assert lmdb_cache.meta("last_cleanup") == str(int(clock.now))


def test_open_cache_creates_an_lmdb_map(tmp_path):
    pytest.importorskip("lmdb")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"address_verify_map = lmdb:{tmp_path}/data/verify_cache\n"
                                 f"mail_owner = {__import__('getpass').getuser()}\n")
    cache = open_cache(load_config(str(etc)))
    assert isinstance(cache, TableCache)
    assert (tmp_path / "data" / "verify_cache.lmdb").exists()
    assert isinstance(open_cache(load_config(str(etc)).with_overrides(
        {"address_verify_map": f"btree:{tmp_path}/x"})), VerifyCache)


@pytest.mark.skipif(bool(available()), reason=available() or "ok")
class TestMemcache:
    def cache(self, tmp_path, server) -> TableCache:
        cf = tmp_path / "verify.cf"
        cf.write_text(f"memcache = {server}\nkey_format = verify:%s\nmax_try = 1\n")
        return TableCache(create_table(f"memcache:{cf}", fold=False))

    def test_two_verifiers_share_answers(self, tmp_path):
        with Memcached() as mc:
            first, _, sent_first = verifier(self.cache(tmp_path, mc.server))
            second, _, sent_second = verifier(self.cache(tmp_path, mc.server))
            first.query("joe@example.com")
            first.update("joe@example.com", OK, "deliverable")
            assert second.query("joe@example.com") == (OK, "deliverable")
            assert (sent_first, sent_second) == (["joe@example.com"], [])

    def test_cleanup_without_a_backup_is_skipped_not_failed(self, tmp_path):
        with Memcached() as mc:
            v, clock, _ = verifier(self.cache(tmp_path, mc.server))
            clock.now += DAY
            assert v.cleanup_due() == (0, 0)

    def test_a_cache_that_is_down_answers_an_error(self, tmp_path):
        mc = Memcached()                    # never started: nothing listens
        cache = self.cache(tmp_path, mc.server)
        v, _, _ = verifier(cache)           # start-up survives it
        with pytest.raises(CacheError):
            cache.get("joe@example.com")
        reply, _ = make_handler(v)({"op": "query", "address": "joe@example.com"}, [])
        assert reply["status"] == "error" and "Connection refused" in reply["reason"]
