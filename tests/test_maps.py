"""Lists of tables and Postfix's lookup orders (pymaster.mail.maps)."""

import pytest

from pymaster.mail.config import Config
from pymaster.mail.maps import (Maps, access_lookup, address_prefix_keys, alias_lookup,
                           canonical_lookup, domain_keys, is_local_domain, split_extension,
                           virtual_lookup)
from pymaster.util.tables import TableError


def cfg(**values):
    base = {"myhostname": "mail.example.com", "mydomain": "example.com",
            "mydestination": "$myhostname, localhost, example.com"}
    base.update(values)
    return Config("/nonexistent", base)


class RecordingTable:
    """An exact-key (or pattern) table that records the keys it is asked."""

    def __init__(self, answers=None, fixed=True):
        self.answers, self.fixed, self.asked = answers or {}, fixed, []
        self.spec = "test:recording"

    def lookup(self, key):
        self.asked.append(key)
        return self.answers.get(key.lower())


def maps_of(*tables, config=None):
    maps = Maps.from_specs([], config)
    maps.tables = list(tables)
    return maps


class TestMaps:
    def test_searched_in_order_first_answer_wins(self):
        maps = Maps.from_specs(["inline:{a=first}", "inline:{a=second, b=only}"])
        assert maps.lookup("a") == "first"
        assert maps.lookup("b") == "only"
        assert maps.lookup("c") is None

    def test_from_a_parameter(self):
        maps = Maps(cfg(virtual_alias_maps="inline:{x=y} static:z"), "virtual_alias_maps")
        assert maps and maps.lookup("x") == "y" and maps.lookup("q") == "z"
        assert not Maps(cfg(), "virtual_alias_maps")

    def test_failure_stops_the_search(self):
        with pytest.raises(TableError):
            Maps.from_specs(["fail:x", "static:ok"]).lookup("a")

    def test_partial_keys_skip_pattern_tables(self):
        pattern, exact = RecordingTable(fixed=False), RecordingTable()
        maps = maps_of(pattern, exact)
        maps.lookup("full")
        maps.lookup("partial", partial=True)
        assert pattern.asked == ["full"]
        assert exact.asked == ["full", "partial"]


class TestKeyPieces:
    def test_domain_keys_parent_style(self):
        assert domain_keys("a.b.example.com", True) == [
            "a.b.example.com", "b.example.com", "example.com", "com"]

    def test_domain_keys_dot_style(self):
        assert domain_keys("a.b.example.com", False) == [
            "a.b.example.com", ".b.example.com", ".example.com", ".com"]

    def test_address_prefixes(self):
        assert address_prefix_keys("1.2.3.4") == ["1.2.3.4", "1.2.3", "1.2", "1"]
        assert address_prefix_keys("2001:db8::1") == ["2001:db8::1", "2001:db8:", "2001:db8",
                                                      "2001"]

    def test_split_extension(self):
        c = cfg(recipient_delimiter="+-")
        assert split_extension("user+foo", c) == ("user", "+foo")
        assert split_extension("user-foo+bar", c) == ("user", "-foo+bar")
        assert split_extension("owner-list", c) == ("owner-list", "")
        assert split_extension("list-request", c) == ("list-request", "")
        assert split_extension("+foo", c) == ("+foo", "")
        assert split_extension("user+foo", cfg()) == ("user+foo", "")


class TestAccess:
    def test_address_order_with_extension(self):
        table = RecordingTable()
        access_lookup(maps_of(table, config=cfg(recipient_delimiter="+")),
                      "user+foo@mail.example.com", "recipient")
        assert table.asked == ["user+foo@mail.example.com", "user@mail.example.com",
                               "mail.example.com", "example.com", "com", "user+foo@", "user@"]

    def test_dot_style_when_parent_matching_is_off(self):
        table = RecordingTable()
        config = cfg(parent_domain_matches_subdomains="relay_domains")
        access_lookup(maps_of(table, config=config), "u@a.example.com", "sender")
        assert table.asked == ["u@a.example.com", "a.example.com", ".example.com", ".com",
                               "u@"]

    def test_first_match_in_order(self):
        maps = Maps.from_specs(["inline:{example.com=REJECT, user@=OK}"])
        assert access_lookup(maps, "user@sub.example.com", "sender") == "REJECT"
        assert access_lookup(maps, "user@other.org", "sender") == "OK"
        assert access_lookup(maps, "x@other.org", "sender") is None

    def test_client_name_then_address(self):
        table = RecordingTable()
        access_lookup(maps_of(table), ("mx.example.com", "192.0.2.1"), "client")
        assert table.asked == ["mx.example.com", "example.com", "com",
                               "192.0.2.1", "192.0.2", "192.0", "192"]

    def test_client_forms(self):
        maps = Maps.from_specs(["inline:{192.0.2=REJECT, 2001:db8=OK}"])
        assert access_lookup(maps, "unknown[192.0.2.7]", "client") == "REJECT"
        assert access_lookup(maps, "2001:db8::5", "client_address") == "OK"
        assert access_lookup(maps, "192.0.3.1", "client") is None

    def test_cidr_gets_only_the_full_address(self, tmp_path):
        path = tmp_path / "c"
        path.write_text("192.0.2.0/24 REJECT\n")
        maps = Maps.from_specs([f"cidr:{path}"])
        assert access_lookup(maps, ("host.example", "192.0.2.9"), "client") == "REJECT"

    def test_helo_domain(self):
        maps = Maps.from_specs(["inline:{example.com=REJECT}"])
        assert access_lookup(maps, "host.example.com", "helo") == "REJECT"


class TestVirtual:
    def test_order_for_a_local_domain(self):
        table = RecordingTable()
        virtual_lookup(maps_of(table), "user+foo@example.com", cfg(recipient_delimiter="+"))
        assert table.asked == ["user+foo@example.com", "user@example.com", "user+foo", "user",
                               "@example.com"]

    def test_order_for_a_remote_domain(self):
        table = RecordingTable()
        virtual_lookup(maps_of(table), "user@example.org", cfg())
        assert table.asked == ["user@example.org", "@example.org"]

    def test_unmatched_extension_is_propagated(self):
        config = cfg(recipient_delimiter="+")
        maps = Maps.from_specs(["inline:{user@example.org=a@x.example, {b@example.org=c}}"])
        assert virtual_lookup(maps, "user+foo@example.org", config) == "a+foo@x.example"
        config = cfg(recipient_delimiter="+", propagate_unmatched_extensions="canonical")
        assert virtual_lookup(maps, "user+foo@example.org", config) == "a@x.example"
        assert canonical_lookup(maps, "user+foo@example.org", config) == "a+foo@x.example"

    def test_matched_extension_is_not_added_twice(self):
        maps = Maps.from_specs(["inline:{user+foo@example.org=special@x}"])
        assert virtual_lookup(maps, "user+foo@example.org", cfg(recipient_delimiter="+")) == \
            "special@x"

    def test_catch_all_and_domain_rewrite(self):
        maps = Maps.from_specs(["inline:{@example.org=@example.net, @example.info=all@x}"])
        assert virtual_lookup(maps, "Joe@example.org", cfg()) == "Joe@example.net"
        assert virtual_lookup(maps, "joe@example.info", cfg()) == "all@x"

    def test_several_results(self):
        maps = Maps.from_specs(["inline:{{a@example.org=b@x, c@y}}"])
        assert virtual_lookup(maps, "a+z@example.org", cfg(recipient_delimiter="+")) == \
            "b+z@x, c+z@y"

    def test_local_domain(self):
        config = cfg(mydestination="$myhostname, inline:{tabled.example=1}")
        assert is_local_domain("mail.example.com", config)
        assert is_local_domain("MAIL.example.com.", config)
        assert is_local_domain("tabled.example", config)
        assert not is_local_domain("example.org", config)


class TestAliases:
    def test_name_with_extension_then_name(self):
        table = RecordingTable({"user": "someone"})
        assert alias_lookup(maps_of(table), "user+foo", cfg(recipient_delimiter="+")) == \
            "someone"
        assert table.asked == ["user+foo", "user"]

    def test_extension_propagated_only_when_asked(self):
        maps = Maps.from_specs(["inline:{user=other}"])
        config = cfg(recipient_delimiter="+", propagate_unmatched_extensions="alias")
        assert alias_lookup(maps, "user+foo", config) == "other+foo"
        assert alias_lookup(maps, "nobody", config) is None
