"""postscreen_cache_map in a writable table (services/postscreen/cache.py
TableClientCache, pymaster/master/cachefile.py in_table/open_table): the
rows of lmdb: and memcache: caches, their cleanup, and a table that fails."""

from __future__ import annotations

import getpass

import pytest

from pymaster.mail.config import load_config
from pymaster.master import cachefile
from pymaster.util.tables import create_table
from services.postscreen import open_cache
from services.postscreen.cache import ClientCache, Stamps, TableClientCache
from tests.support.memcached import Memcached, available


def config(tmp_path, cache_map: str):
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "main.cf").write_text(f"postscreen_cache_map = {cache_map}\n"
                                 f"mail_owner = {getpass.getuser()}\n")
    return load_config(str(etc))


def test_lmdb_cache_keeps_cleans_and_is_postfixs(tmp_path):
    pytest.importorskip("lmdb")
    cfg = config(tmp_path, f"lmdb:{tmp_path}/data/psc_cache")
    cache = open_cache(cfg)
    assert isinstance(cache, TableClientCache)
    cache.put("192.0.2.1", Stamps(1000, 1000, 1, 1, 1))
    cache.put("192.0.2.2", Stamps(5000, 5000, 1, 1, 1))
    # A shared map may hold Postfix's cleanup stamp: it is no client.
    cache.table.update(cachefile_key := "_LAST_CACHE_CLEANUP_COMPLETED_", "1")
    assert cache.get("192.0.2.1") == Stamps(1000, 1000, 1, 1, 1)
    assert cache.cleanup(2000, 100) == (1, 1)
    assert cache.get("192.0.2.1") is None
    # The file holds Postfix's values, for any reader of the table.
    plain = create_table(f"lmdb:{tmp_path}/data/psc_cache", fold=False)
    assert plain.lookup("192.0.2.2") == "5000;5000;1;1;1"
    assert plain.lookup(cachefile_key) == "1"


def test_btree_stays_in_sqlite(tmp_path):
    cache = open_cache(config(tmp_path, f"btree:{tmp_path}/data/psc_cache"))
    assert isinstance(cache, ClientCache)
    assert cachefile.in_table("proxy:lmdb:/x") and not cachefile.in_table("btree:/x")


@pytest.mark.skipif(bool(available()), reason=available() or "ok")
def test_memcache_cache_is_shared_and_survives_a_dead_server(tmp_path):
    with Memcached() as mc:
        cf = tmp_path / "psc.cf"
        cf.write_text(f"memcache = {mc.server}\nkey_format = psc:%s\nmax_try = 1\n")
        one = open_cache(config(tmp_path, f"memcache:{cf}"))
        two = open_cache(config(tmp_path, f"memcache:{cf}"))
        one.put("2001:db8::1", Stamps(9000, 9000, 1, 1, 1))
        assert two.get("2001:db8::1") == Stamps(9000, 9000, 1, 1, 1)
        assert b"9000;9000;1;1;1" in mc.get("psc:2001:db8::1")
        # Without a backup the entries cannot be listed: nothing is cleaned.
        assert two.cleanup(10 ** 10, 0) == (0, 0)
        mc.stop()
        assert one.get("2001:db8::1") is None     # tested again, never a crash
        one.put("2001:db8::1", Stamps())
