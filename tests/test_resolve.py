"""pymaster.mail.resolve: address class, transport and next hop of a recipient."""

import pytest

from pymaster.mail.config import Config
from pymaster.mail.resolve import (DEFAULT, ERROR, FAIL, LOCAL, RELAY, ROUTED, VIRTUAL_ALIAS,
                              VIRTUAL_MAILBOX, DomainList, Resolver, resolver_for,
                              split_transport, strip_extension)


def make_cfg(**values):
    base = {"myhostname": "mx.example.com", "mydomain": "example.com",
            "inet_interfaces": "loopback-only",
            "mydestination": "$myhostname, localhost.$mydomain, localhost, example.com",
            "relay_domains": "relay.example", "virtual_alias_domains": "alias.example",
            "virtual_mailbox_domains": "mbox.example"}
    base.update(values)
    return Config("/nonexistent", base)


# (address, transport, nexthop, recipient, class)
CASES = [
    ("user@mx.example.com", "local", "mx.example.com", "user@mx.example.com", LOCAL),
    ("user@localhost", "local", "mx.example.com", "user@localhost", LOCAL),
    ("user@LOCALHOST.", "local", "mx.example.com", "user@localhost", LOCAL),
    ("user@example.com", "local", "mx.example.com", "user@example.com", LOCAL),
    ("user", "local", "mx.example.com", "user@mx.example.com", LOCAL),
    ("user@[127.0.0.1]", "local", "mx.example.com", "user@[127.0.0.1]", LOCAL),
    ("user@alias.example", "error", "5.1.1 User unknown in virtual alias table",
     "user@alias.example", VIRTUAL_ALIAS),
    ("user@mbox.example", "virtual", "mbox.example", "user@mbox.example", VIRTUAL_MAILBOX),
    ("user@relay.example", "relay", "relay.example", "user@relay.example", RELAY),
    ("user@sub.relay.example", "relay", "sub.relay.example", "user@sub.relay.example", RELAY),
    ("user@elsewhere.example", "smtp", "elsewhere.example", "user@elsewhere.example", DEFAULT),
    ("user@[192.0.2.1]", "smtp", "[192.0.2.1]", "user@[192.0.2.1]", DEFAULT),
    ("", "local", "mx.example.com", "MAILER-DAEMON@mx.example.com", LOCAL),
]


@pytest.mark.parametrize("addr, transport, nexthop, recipient, aclass", CASES)
def test_resolve_default_routes(addr, transport, nexthop, recipient, aclass):
    r = Resolver(make_cfg()).resolve(addr)
    assert (r.transport, r.nexthop, r.recipient, r.address_class) == \
        (transport, nexthop, recipient, aclass)
    assert ROUTED not in r.flags


@pytest.mark.parametrize("addr, recipient", [
    ("user%other.example@mx.example.com", "user@other.example"),
    ("user@other.example@mx.example.com", "user@other.example"),   # "user@other"@ours
    ("other.example!user@mx.example.com", "user@other.example"),
    ("user%other.example@localhost", "user@other.example"),
    ("user%relay.example@mx.example.com", "user@relay.example"),
])
def test_routing_operators_in_a_local_address_are_flagged(addr, recipient):
    r = Resolver(make_cfg()).resolve(addr)
    assert r.recipient == recipient
    assert ROUTED in r.flags


def test_routed_through_our_domain_never_counts_as_final():
    r = Resolver(make_cfg()).resolve("user%other.example@mx.example.com")
    assert r.address_class == DEFAULT and not r.final


def test_routing_operator_in_a_remote_address_is_flagged_too():
    r = Resolver(make_cfg()).resolve("user%x@relay.example")
    assert r.address_class == RELAY and ROUTED in r.flags


def test_routing_operator_that_stays_local():
    r = Resolver(make_cfg()).resolve("user%localhost@mx.example.com")
    assert r.address_class == LOCAL and r.recipient == "user@localhost"
    assert ROUTED in r.flags


def test_percent_hack_and_bang_path_can_be_turned_off():
    r = Resolver(make_cfg(allow_percent_hack="no", swap_bangpath="no")).resolve(
        "a!user%other.example@mx.example.com")
    assert r.address_class == LOCAL and ROUTED not in r.flags


def test_relayhost_is_the_next_hop_for_remote_classes():
    res = Resolver(make_cfg(relayhost="[smarthost.example]:587"))
    assert res.resolve("u@elsewhere.example").nexthop == "[smarthost.example]:587"
    assert res.resolve("u@relay.example").nexthop == "[smarthost.example]:587"
    assert res.resolve("u@mx.example.com").nexthop == "mx.example.com"


def test_transport_parameter_next_hop_wins_over_relayhost():
    res = Resolver(make_cfg(relayhost="smarthost.example",
                            default_transport="smtp:[gw.example]",
                            local_transport="local"))
    assert res.resolve("u@elsewhere.example")[:2] == ("smtp", "[gw.example]")
    assert res.resolve("u@localhost")[:2] == ("local", "mx.example.com")


def test_domain_in_mydestination_is_local_even_if_also_relay():
    res = Resolver(make_cfg(relay_domains="example.com"))
    assert res.resolve("u@example.com").address_class == LOCAL


@pytest.mark.parametrize("domain, allowed", [
    ("mx.example.com", True), ("alias.example", True), ("mbox.example", True),
    ("relay.example", True), ("sub.relay.example", True), ("elsewhere.example", False),
    ("[127.0.0.1]", True), ("[192.0.2.1]", False),
])
def test_is_relay_allowed_destination(domain, allowed):
    assert Resolver(make_cfg()).is_relay_allowed_destination(domain) is allowed


def test_resolve_numeric_domain():
    assert Resolver(make_cfg()).resolve("u@127.0.0.1").address_class == DEFAULT
    assert ERROR in Resolver(make_cfg()).resolve("u@127.0.0.1").flags
    res = Resolver(make_cfg(resolve_numeric_domain="yes"))
    assert res.resolve("u@127.0.0.1").address_class == LOCAL


def test_bad_domain_syntax_is_flagged():
    assert ERROR in Resolver(make_cfg()).resolve("u@bad..example").flags
    assert ERROR in Resolver(make_cfg()).resolve("u@").flags
    assert ERROR not in Resolver(make_cfg(resolve_null_domain="yes")).resolve("u@").flags


@pytest.mark.parametrize("entries, domain, matches", [
    (["example.com"], "example.com", True),
    (["example.com"], "sub.example.com", False),       # mydestination: no parent matching
    ([".example.com"], "sub.example.com", True),
    ([".example.com"], "example.com", False),
    (["!bad.example.com", ".example.com"], "bad.example.com", False),
    (["EXAMPLE.com"], "example.COM", True),
])
def test_domain_list_matching(entries, domain, matches):
    assert DomainList(make_cfg(), "mydestination", entries).match(domain) is matches


def test_domain_list_from_a_file(tmp_path):
    f = tmp_path / "domains"
    f.write_text("# our domains\none.example two.example\nthree.example\n")
    dl = DomainList(make_cfg(), "mydestination", [str(f)])
    assert dl.match("two.example") and dl.match("three.example")
    assert not dl.match("four.example")


def test_parent_matching_follows_parent_domain_matches_subdomains():
    cfg = make_cfg(parent_domain_matches_subdomains="")
    assert Resolver(cfg).resolve("u@sub.relay.example").address_class == DEFAULT


@pytest.mark.parametrize("value, expected", [
    ("smtp:[host]:25", ("smtp", "[host]:25")),
    ("local", ("local", "")),
    (":[gw.example]", ("", "[gw.example]")),
    ("error:5.1.1 no such user", ("error", "5.1.1 no such user")),
])
def test_split_transport(value, expected):
    assert split_transport(value) == expected


def test_strip_extension():
    assert strip_extension("user+tag", "+") == "user"
    assert strip_extension("user-tag", "+-") == "user"
    assert strip_extension("+user", "+") == "+user"
    assert strip_extension("user+tag", "") == "user+tag"


def test_resolver_is_built_once_per_config():
    cfg = make_cfg()
    assert resolver_for(cfg) is resolver_for(cfg)


# -- transport_maps (needs pymaster.util.tables) ---------------------------------

TRANSPORT_TABLE = ("inline:{ special@elsewhere.example=slow:, user+x@elsewhere.example=ext:, "
                   "gw.example=:[gateway.example], internal.example=:, "
                   "transport.example=uucp:example, .sub.example=smtp:[sub-relay.example], "
                   "mx.example.com=lmtp:unix:private/dovecot }")


@pytest.fixture
def with_transport_maps():
    pytest.importorskip("pymaster.util.tables")
    pytest.importorskip("pymaster.mail.maps")
    return Resolver(make_cfg(transport_maps=TRANSPORT_TABLE, recipient_delimiter="+",
                             relayhost="smarthost.example"))


@pytest.mark.parametrize("addr, transport, nexthop", [
    ("special@elsewhere.example", "slow", "elsewhere.example"),    # empty nexthop: domain
    ("user+x@elsewhere.example", "ext", "elsewhere.example"),     # full address first
    ("user+y@elsewhere.example", "smtp", "smarthost.example"),    # no match: class default
    ("u@gw.example", "smtp", "[gateway.example]"),                # empty transport kept
    ("u@internal.example", "smtp", "smarthost.example"),          # ":" changes nothing
    ("u@transport.example", "uucp", "example"),
    ("u@a.sub.example", "smtp", "[sub-relay.example]"),           # .parent entry
    ("u@mx.example.com", "lmtp", "unix:private/dovecot"),         # overrides local too
])
def test_transport_maps(with_transport_maps, addr, transport, nexthop):
    r = with_transport_maps.resolve(addr)
    assert (r.transport, r.nexthop) == (transport, nexthop)


def test_transport_maps_wildcard():
    pytest.importorskip("pymaster.mail.maps")
    res = Resolver(make_cfg(transport_maps="inline:{ *=smtp:[outbound.example] }"))
    assert res.resolve("u@anywhere.example")[:2] == ("smtp", "[outbound.example]")


def test_domain_list_with_a_table():
    pytest.importorskip("pymaster.util.tables")
    res = Resolver(make_cfg(virtual_alias_domains="$virtual_alias_maps",
                            virtual_alias_maps="inline:{ valias.example=x, a@valias.example=b }",
                            virtual_mailbox_domains="inline:{ vbox.example=1 }"))
    assert res.resolve("a@valias.example").address_class == VIRTUAL_ALIAS
    assert res.resolve("a@vbox.example").address_class == VIRTUAL_MAILBOX


def test_transport_maps_pattern_tables_see_only_the_full_address(tmp_path):
    pytest.importorskip("pymaster.mail.maps")
    table = tmp_path / "transport.re"
    table.write_text("/^special@/ slow:\n/example/ fast:\n")
    res = Resolver(make_cfg(transport_maps=f"regexp:{table}"))
    assert res.resolve("special@elsewhere.example")[:2] == ("slow", "elsewhere.example")
    assert res.resolve("u@other.example")[:2] == ("fast", "other.example")
    assert res.resolve("u@other.test")[:2] == ("smtp", "other.test")


def test_a_failing_table_flags_fail_so_the_caller_defers():
    pytest.importorskip("pymaster.util.tables")
    r = Resolver(make_cfg(relay_domains="fail:broken")).resolve("u@elsewhere.example")
    assert FAIL in r.flags


# -- address probes: the address_verify_* routes ------------------------------

# (overrides, address, normal route, probe route)
PROBE_CASES = [
    ({"address_verify_local_transport": "probe-local"},
     "u@mx.example.com", ("local", "mx.example.com"), ("probe-local", "mx.example.com")),
    ({"address_verify_virtual_transport": "probe-virtual:[backend.example]"},
     "u@mbox.example", ("virtual", "mbox.example"), ("probe-virtual", "[backend.example]")),
    ({"address_verify_relay_transport": "probe-relay"},
     "u@relay.example", ("relay", "relay.example"), ("probe-relay", "relay.example")),
    ({"address_verify_default_transport": "probe-smtp"},
     "u@elsewhere.example", ("smtp", "elsewhere.example"), ("probe-smtp", "elsewhere.example")),
    ({"relayhost": "[smarthost.example]", "address_verify_relayhost": "[verifier.example]"},
     "u@elsewhere.example", ("smtp", "[smarthost.example]"), ("smtp", "[verifier.example]")),
    ({"address_verify_relayhost": "[verifier.example]"},
     "u@relay.example", ("relay", "relay.example"), ("relay", "[verifier.example]")),
    ({"address_verify_transport_maps": "inline:{ relay.example=smtp:[backend.example]:2525 }"},
     "u@relay.example", ("relay", "relay.example"), ("smtp", "[backend.example]:2525")),
]


@pytest.mark.parametrize("overrides, addr, normal, probe", PROBE_CASES)
def test_probes_take_the_address_verify_routes(overrides, addr, normal, probe):
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(**overrides)
    assert Resolver(cfg).resolve(addr)[:2] == normal
    assert Resolver(cfg, probe=True).resolve(addr)[:2] == probe


def test_probe_routes_default_to_the_normal_ones():
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(relayhost="[smarthost.example]", relay_transport="relay:[inside.example]",
                   transport_maps="inline:{ mbox.example=lmtp:[store.example] }")
    for addr in ("u@mx.example.com", "u@mbox.example", "u@relay.example", "u@elsewhere.example",
                 "u@alias.example"):
        assert Resolver(cfg, probe=True).resolve(addr) == Resolver(cfg).resolve(addr)


def test_probe_transport_maps_replace_the_normal_ones():
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(transport_maps="inline:{ relay.example=smtp:[normal.example] }",
                   address_verify_transport_maps="")
    assert Resolver(cfg).resolve("u@relay.example")[:2] == ("smtp", "[normal.example]")
    assert Resolver(cfg, probe=True).resolve("u@relay.example")[:2] == ("relay", "relay.example")


def test_resolver_for_keeps_a_probe_resolver_apart():
    cfg = make_cfg(address_verify_default_transport="probe-smtp")
    assert resolver_for(cfg, probe=True) is resolver_for(cfg, probe=True)
    assert resolver_for(cfg, probe=True) is not resolver_for(cfg)
    assert resolver_for(cfg, probe=True).resolve("u@elsewhere.example").transport == "probe-smtp"
    assert resolver_for(cfg).resolve("u@elsewhere.example").transport == "smtp"


# -- sender-dependent routes ------------------------------------------------------

SENDER_RELAYHOSTS = ("inline:{ boss@corp.example=[boss-relay.example], "
                     "@corp.example=[corp-relay.example], @plain.example=DUNNO, "
                     "<>=[bounce-relay.example] }")
SENDER_TRANSPORTS = "inline:{ @corp.example=corp-smtp:, @bulk.example=bulk:[bulk.example] }"


@pytest.fixture
def sender_dependent():
    pytest.importorskip("pymaster.mail.maps")
    return Resolver(make_cfg(relayhost="[smarthost.example]", recipient_delimiter="+",
                             sender_dependent_relayhost_maps=SENDER_RELAYHOSTS,
                             sender_dependent_default_transport_maps=SENDER_TRANSPORTS))


@pytest.mark.parametrize("sender, addr, route", [
    ("boss@corp.example", "u@elsewhere.example", ("corp-smtp", "[boss-relay.example]")),
    ("boss+x@corp.example", "u@elsewhere.example", ("corp-smtp", "[boss-relay.example]")),
    ("staff@corp.example", "u@elsewhere.example", ("corp-smtp", "[corp-relay.example]")),
    ("staff@corp.example", "u@relay.example", ("relay", "[corp-relay.example]")),
    ("staff@corp.example", "u@mx.example.com", ("local", "mx.example.com")),   # local: none
    ("a@plain.example", "u@elsewhere.example", ("smtp", "[smarthost.example]")),   # DUNNO
    ("a@other.example", "u@elsewhere.example", ("smtp", "[smarthost.example]")),   # no match
    ("a@bulk.example", "u@elsewhere.example", ("bulk", "[bulk.example]")),   # own next hop
    ("", "u@elsewhere.example", ("smtp", "[bounce-relay.example]")),    # null sender key
    (None, "u@elsewhere.example", ("smtp", "[smarthost.example]")),   # sender not given
])
def test_sender_dependent_routes(sender_dependent, sender, addr, route):
    assert sender_dependent.resolve(addr, sender)[:2] == route


def test_probes_take_the_address_verify_sender_dependent_maps():
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(
        sender_dependent_relayhost_maps="inline:{ @corp.example=[corp-relay.example] }",
        address_verify_sender_dependent_relayhost_maps="inline:{ <>=[verifier.example] }",
        address_verify_sender_dependent_default_transport_maps="inline:{ <>=probe-smtp: }")
    assert Resolver(cfg).resolve("u@elsewhere.example", "")[:2] == ("smtp", "elsewhere.example")
    assert Resolver(cfg, probe=True).resolve("u@elsewhere.example", "")[:2] == \
        ("probe-smtp", "[verifier.example]")
    assert Resolver(cfg, probe=True).resolve("u@elsewhere.example", "a@corp.example")[:2] == \
        ("smtp", "elsewhere.example")


def test_a_failing_sender_dependent_table_flags_fail():
    pytest.importorskip("pymaster.util.tables")
    r = Resolver(make_cfg(sender_dependent_relayhost_maps="fail:broken")).resolve(
        "u@elsewhere.example", "a@corp.example")
    assert FAIL in r.flags


# -- the one-entry cache of the last answer ------------------------------------

class CountingMaps:
    """transport_maps that count their lookups."""

    def __init__(self, value=None) -> None:
        self.value, self.lookups = value, 0

    def lookup(self, key, partial=False):
        self.lookups += 1
        return self.value


def counted(resolver, value=None):
    maps = resolver._transport_maps = CountingMaps(value)
    return maps


def test_the_last_answer_is_kept_for_the_same_recipient_and_sender():
    r = Resolver(make_cfg(transport_maps="inline:{ x.example=discard: }"))
    maps = counted(r)
    first = r.resolve("u@elsewhere.example", "a@corp.example")
    once = maps.lookups                     # u@…, the domain, its parent, `*`
    assert r.resolve("u@elsewhere.example", "a@corp.example") is first
    assert maps.lookups == once
    r.resolve("u@elsewhere.example", "b@corp.example")     # another sender
    r.resolve("v@elsewhere.example", "b@corp.example")     # another recipient
    assert maps.lookups == 3 * once


def test_the_kept_answer_expires(monkeypatch):
    import pymaster.mail.resolve as resolve
    r = Resolver(make_cfg(transport_maps="inline:{ x.example=discard: }"))
    maps = counted(r)
    now = [1000.0]
    monkeypatch.setattr(resolve.time, "monotonic", lambda: now[0])
    r.resolve("u@elsewhere.example")
    once = maps.lookups
    now[0] += resolve.CACHE_TIME - 0.01
    r.resolve("u@elsewhere.example")
    assert maps.lookups == once
    now[0] += 0.02
    r.resolve("u@elsewhere.example")
    assert maps.lookups == 2 * once


def test_failures_are_not_kept():
    r = Resolver(make_cfg(transport_maps="fail:broken"))
    assert FAIL in r.resolve("u@elsewhere.example").flags
    assert r._last is None


@pytest.mark.parametrize("settings", [
    {"transport_maps": "proxy:hash:/etc/postfix/transport"},
    {"relay_domains": "mysql:/etc/postfix/relay.cf"},
    {"sender_dependent_relayhost_maps": "socketmap:unix:/x:name"},
    {"transport_maps": "unionmap:{inline:{a=b}, ldap:/x.cf}"},
])
def test_tables_that_may_log_per_lookup_turn_the_cache_off(settings):
    # A remote table may warn at every lookup: each answer is asked afresh,
    # so the warnings repeat as they did without the cache.
    assert not Resolver(make_cfg(**settings))._cacheable


def test_an_answer_that_logged_a_warning_is_not_kept():
    pytest.importorskip("pymaster.mail.maps")
    r = Resolver(make_cfg(sender_dependent_relayhost_maps="inline:{ a@corp.example= }"))
    assert r._cacheable
    r.resolve("u@elsewhere.example", "a@corp.example")
    assert r._last is None
    r.resolve("u@elsewhere.example", "b@corp.example")
    assert r._last is not None
