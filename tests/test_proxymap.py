"""proxymap(8) and the proxy: client: approval by proxy_read_maps/proxy_write_maps,
the replies, and the client's mapping of them (found, not found, TableError)."""

import os

import pytest

from pymaster.mail.config import load_config
from pymaster.util import log
from pymaster.util.tables import TYPES, TableError, Table, create_table, open_table
from pymaster.util.tables import proxy
from services.proxymap import Proxymap, approved_tables
from tests.support.served import ServedHandler


@pytest.fixture
def tmp_path(short_tmp_path):
    """tmp_path - short: the spool's private/.PID-N must fit a socket address."""
    return short_tmp_path


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "spool" / "private").mkdir(parents=True)
    (tmp_path / "virtual").write_text("a@example.com  alice\n")
    (tmp_path / "etc" / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\n"
        f"virtual_alias_maps = proxy:texthash:{tmp_path}/virtual\n"
        f"address_verify_map = proxy:btree:{tmp_path}/verify\n")
    return load_config(str(tmp_path / "etc"))


@pytest.fixture
def warnings(monkeypatch):
    said = []
    monkeypatch.setattr(log, "warning", said.append)
    return said


class WritableTable(Table):
    """A table with updates, standing in for a database the write service keeps."""

    rows: dict = {}

    def lookup(self, key):
        return self.rows.get(key)

    def update(self, key, value):
        self.rows[key] = value

    def delete(self, key):
        return self.rows.pop(key, None) is not None


class TestApproval:
    def test_only_proxy_entries_count(self):
        assert approved_tables(["proxy:unix:passwd.byname", "hash:/etc/aliases",
                                "proxy:proxy:cdb:/x", "proxy:nocolon", "permit"]) == \
            {"unix:passwd.byname", "cdb:/x"}

    def test_default_read_maps_approve_the_default_local_recipient_maps(self, cfg):
        server = Proxymap(cfg, "proxymap", writer=False)
        assert "unix:passwd.byname" in server.approved
        assert any(spec.startswith("texthash:") for spec in server.approved)
        assert not any(spec.startswith("btree:") for spec in server.approved)

    def test_default_write_maps_approve_the_verify_cache_only(self, cfg):
        server = Proxymap(cfg, "proxywrite", writer=True)
        assert server.approved == {f"btree:{os.path.dirname(cfg.config_dir)}/verify"}


class TestServer:
    def test_found_and_not_found(self, cfg):
        server = Proxymap(cfg, "proxymap", writer=False)
        spec = cfg.get("virtual_alias_maps").removeprefix("proxy:")
        assert server.handle({"op": "lookup", "table": spec, "key": "a@example.com"}) == \
            {"status": "ok", "value": "alice"}
        assert server.handle({"op": "lookup", "table": spec, "key": "b@example.com"}) == \
            {"status": "noent"}
        assert server.handle({"op": "lookup", "table": "unix:passwd.byname",
                              "key": "root"})["value"].startswith("root:")

    def test_unapproved_table_is_refused_with_postfix_warning(self, cfg, warnings):
        server = Proxymap(cfg, "proxymap", writer=False)
        reply = server.handle({"op": "lookup", "table": "hash:/etc/shadow", "key": "root"})
        assert reply["status"] == "deny"
        assert reply["reason"] == 'proxymap service is not configured for table "hash:/etc/shadow"'
        assert warnings == ['request for unapproved table: "hash:/etc/shadow"']

    def test_read_service_refuses_updates(self, cfg, warnings):
        server = Proxymap(cfg, "proxymap", writer=False)
        reply = server.handle({"op": "update", "table": "unix:passwd.byname",
                               "key": "k", "value": "v"})
        assert reply["status"] == "deny" and warnings

    def test_write_service_refuses_read_maps(self, cfg, warnings):
        server = Proxymap(cfg, "proxywrite", writer=True)
        reply = server.handle({"op": "lookup", "table": "unix:passwd.byname", "key": "root"})
        assert reply["status"] == "deny"
        assert warnings == ['request for unapproved table: "unix:passwd.byname"']

    def test_failing_table_is_a_retry(self, cfg, tmp_path, warnings):
        (tmp_path / "etc" / "main.cf").write_text(
            f"virtual_alias_maps = proxy:hash:{tmp_path}/missing\n")
        server = Proxymap(load_config(str(tmp_path / "etc")), "proxymap", writer=False)
        reply = server.handle({"op": "lookup", "table": f"hash:{tmp_path}/missing", "key": "x"})
        assert reply["status"] == "retry" and "missing.db" in reply["reason"]

    def test_malformed_request(self, cfg):
        server = Proxymap(cfg, "proxymap", writer=False)
        assert server.handle({"op": "lookup", "table": "unix:passwd.byname"})["status"] == "bad"
        assert server.handle({"op": "sing", "table": "x:y", "key": "k"})["status"] == "bad"

    def test_updates_through_the_write_service(self, cfg, monkeypatch):
        server = Proxymap(cfg, "proxywrite", writer=True)
        server.approved.add("mem:rows")
        monkeypatch.setattr(server, "table", lambda spec, options: WritableTable("mem", "rows"))
        assert server.handle({"op": "update", "table": "mem:rows", "key": "k",
                              "value": "v"}) == {"status": "ok"}
        assert server.handle({"op": "lookup", "table": "mem:rows", "key": "k"})["value"] == "v"
        assert server.handle({"op": "delete", "table": "mem:rows", "key": "k"}) == {"status": "ok"}
        assert server.handle({"op": "delete", "table": "mem:rows", "key": "k"}) == \
            {"status": "noent"}

    def test_table_without_updates_is_a_retry(self, cfg, warnings):
        server = Proxymap(cfg, "proxywrite", writer=True)
        server.approved.add("unix:passwd.byname")
        reply = server.handle({"op": "update", "table": "unix:passwd.byname",
                               "key": "k", "value": "v"})
        assert reply["status"] == "retry" and "does not support updates" in reply["reason"]


class TestClient:
    @pytest.fixture
    def served(self, cfg):
        """A proxymap handler answering at the instance's private/proxymap."""
        server = Proxymap(cfg, "proxymap", writer=False)
        path = os.path.join(cfg.get("queue_directory"), "private", "proxymap")
        served = ServedHandler(path, lambda h, p: (server.handle(h), []))
        yield served
        proxy.close_clients()
        served.close()

    def test_lookups_go_to_the_service_over_one_connection(self, cfg, served):
        table = create_table(cfg.get("virtual_alias_maps"), cfg)
        assert isinstance(table, proxy.ProxyTable) and table.fixed
        assert table.lookup("a@example.com") == "alice"
        assert table.lookup("nobody@example.com") is None
        assert served.requests == 2
        assert len(proxy._clients()) == 1

    def test_denied_table_is_a_table_error(self, cfg, served):
        table = create_table("proxy:hash:/etc/shadow", cfg)
        with pytest.raises(TableError, match="not configured for table"):
            table.lookup("root")

    def test_no_service_opens_the_table_in_process(self, cfg, tmp_path):
        assert proxy.find_endpoint("proxymap", cfg.get("queue_directory")) is None
        table = create_table(cfg.get("virtual_alias_maps"), cfg)
        assert table.lookup("a@example.com") == "alice"

    def test_pattern_tables_stay_pattern_tables(self, cfg):
        assert not create_table("proxy:regexp:/nonexistent", cfg).fixed
        assert create_table("proxy:proxy:cdb:/nonexistent", cfg).spec == "proxy:cdb:/nonexistent"

    def test_cached_like_every_table(self, cfg):
        assert open_table("proxy:unix:passwd.byname", cfg) is \
            open_table("proxy:unix:passwd.byname", cfg)


def test_client_updates_go_to_the_write_service(cfg, monkeypatch):
    server = Proxymap(cfg, "proxywrite", writer=True)
    server.approved.add("mem:rows")
    rows = WritableTable("mem", "rows")
    rows.rows = {}
    monkeypatch.setattr(server, "table", lambda spec, options: rows)
    path = os.path.join(cfg.get("queue_directory"), "private", "proxywrite")
    served = ServedHandler(path, lambda h, p: (server.handle(h), []))
    monkeypatch.setitem(TYPES, "mem", "simple:StaticTable")    # a known type name
    try:
        table = proxy.ProxyTable("proxy", "mem:rows", cfg)
        table.update("k", "v")
        assert rows.rows == {"k": "v"}
        assert table.delete("k") is True and table.delete("k") is False
        assert served.requests == 3
    finally:
        proxy.close_clients()
        served.close()
