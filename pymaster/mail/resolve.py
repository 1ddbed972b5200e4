"""Recipient resolution: the "resolve" half of Postfix's trivial-rewrite.

A Resolver maps a canonical (internal-form) recipient to where it goes:
an address class, a transport, a next hop, and the recipient as delivered.
smtpd uses it for reject_unauth_destination and the unknown-recipient
checks, cleanup to decide on virtual alias expansion, and qmgr to pick the
delivery agent. It is built once per process and Config (`resolver_for`);
its tables are opened once and reopen themselves when their files change.

Address classes (ADDRESS_CLASS_README), tried in this order:
  local            domain in mydestination, or [ip] of an address in
                   inet_interfaces/proxy_interfaces    -> local_transport
  virtual_alias    domain in virtual_alias_domains     -> error transport
                   ("User unknown in virtual alias table") unless expanded
  virtual_mailbox  domain in virtual_mailbox_domains   -> virtual_transport
  relay            domain in relay_domains             -> relay_transport
  default          anything else                       -> default_transport
relocated_maps (relocated(5)) overrides them all: the error transport with
"5.1.6 User has moved to NEW".
Next hop: the transport parameter's `:nexthop`, else (relay and default)
relayhost, else the recipient domain (for local: $myhostname).
transport_maps override both, per transport(5): `user+ext@domain`,
`user@domain`, `domain`, parent domains, `*`; an empty transport keeps the
class's transport, an empty next hop resets it to the recipient domain, and
an entry that is empty on both sides changes nothing.

Sender-dependent routes (when the caller gives the envelope sender):
sender_dependent_default_transport_maps replaces default_transport for the
default class, and sender_dependent_relayhost_maps replaces relayhost for
the relay and default classes. Both are searched by the sender, the sender
without its address extension, then @domain; the null sender by
empty_address_*_maps_lookup_key. DUNNO (or an empty result) keeps the
global setting.

Address probes: Postfix routes the verify service's probes with their own
parameters, so that an administrator can verify recipients through another
path than their mail takes. `Resolver(cfg, probe=True)` (or
`resolver_for(cfg, probe=True)`) reads every routing parameter as
address_verify_NAME instead of NAME: local_transport, virtual_transport,
relay_transport, default_transport, relayhost, transport_maps and both
sender-dependent maps. Their defaults are $NAME, so probes go where mail
goes unless the administrator says otherwise. Address classes, relocated_maps
and the routing operators are the same for both.

Routing operators: an address whose local part, after local domains are
stripped, still holds `@`, `%` (allow_percent_hack) or `!` (swap_bangpath)
is *routed* (`user%other@ours`, `"user@other"@ours`, `other!user@ours`):
the resolver follows it, as Postfix does, and sets the ROUTED flag so that
reject_unauth_destination never relays such mail.

Interface:
    Resolver(cfg, probe=False) / resolver_for(cfg, probe=False)
    Resolver.resolve(addr, sender=None) -> Resolution(transport, nexthop, recipient,
        address_class, flags)      sender None: no sender-dependent routes
    Resolver.is_local_domain(domain) -> bool
    Resolver.is_relay_allowed_destination(domain) -> bool  (local, virtual or relay_domains)
    Resolver.domain_class(domain) -> str
    (domain lists and the local class: pymaster.mail.domains)
    flags: ROUTED, ERROR (bad address syntax), FAIL (a table lookup failed:
           the caller defers, never bounces), FINAL (local or virtual class),
           RELOCATED (relocated_maps matched)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple

from pymaster.mail.addr import domain_literal_address, is_valid_hostname, split_address
from pymaster.mail.config import Config
from pymaster.mail.domains import (
    DomainList,
    LookupFailed,
    bare_ip,
    local_domains_for,
    parent_matching,
)
from pymaster.mail.maps import Maps, virtual_lookup
from pymaster.util import log
from pymaster.util.tables import TableError, TableUnavailable

if TYPE_CHECKING:
    pass

LOCAL = "local"
VIRTUAL_ALIAS = "virtual_alias"
VIRTUAL_MAILBOX = "virtual_mailbox"
RELAY = "relay"
DEFAULT = "default"
FINAL_CLASSES = (LOCAL, VIRTUAL_ALIAS, VIRTUAL_MAILBOX)

ROUTED = "routed"
ERROR = "error"
FAIL = "fail"
FINAL = "final"
RELOCATED = "relocated"     # relocated_maps matched: error transport, "User has moved"

VIRTUAL_ALIAS_UNKNOWN = "5.1.1 User unknown in virtual alias table"

# The parameters a Resolver takes its routes from; a probe resolver reads
# each as PROBE_PREFIX + name (postconf(5) address_verify_*).
ROUTE_PARAMS = ("local_transport", "virtual_transport", "relay_transport",
                "default_transport", "relayhost", "transport_maps",
                "sender_dependent_relayhost_maps", "sender_dependent_default_transport_maps")
PROBE_PREFIX = "address_verify_"
# The key that stands for the null sender in each sender-dependent table.
NULL_SENDER_KEYS = {
    "sender_dependent_relayhost_maps": "empty_address_relayhost_maps_lookup_key",
    "sender_dependent_default_transport_maps":
        "empty_address_default_transport_maps_lookup_key"}
DUNNO = "DUNNO"
# The last answer is kept this long (Postfix's resolve_clnt keeps it 30 s):
# the interval at which a file table looks for a rebuilt file, so postmap
# reaches the resolver about as soon as it did without the cache.
CACHE_TIME = 1.0
# Table types that log nothing per lookup (a remote table may warn at every
# one): with any other type in the routes, every answer is looked up afresh.
QUIET_TYPES = frozenset({"hash", "btree", "cdb", "texthash", "regexp", "pcre", "cidr",
                         "static", "inline", "environ", "unix"})


class Resolution(NamedTuple):
    transport: str
    nexthop: str
    recipient: str
    address_class: str
    flags: frozenset = frozenset()

    @property
    def routed(self) -> bool:
        return ROUTED in self.flags

    @property
    def final(self) -> bool:
        return self.address_class in FINAL_CLASSES


def split_transport(value: str) -> tuple[str, str]:
    """split_transport - "smtp:[host]:25" -> ("smtp", "[host]:25")."""
    transport, _, nexthop = value.strip().partition(":")
    return transport.strip(), nexthop.strip()


class Resolver:
    """Resolve recipients for one configuration (PROBE: with the address_verify_* routes)."""

    def __init__(self, cfg: Config, probe: bool = False) -> None:
        self.cfg = cfg
        self.probe = probe
        self.params = {name: PROBE_PREFIX + name if probe else name for name in ROUTE_PARAMS}
        self.myhostname = cfg.get("myhostname").lower()
        self.local_domains = local_domains_for(cfg)
        self.virtual_alias_domains = DomainList(cfg, "virtual_alias_domains")
        self.virtual_mailbox_domains = DomainList(cfg, "virtual_mailbox_domains")
        self.relay_domains = DomainList(cfg, "relay_domains")
        self.relayhost = cfg.get(self.params["relayhost"]).strip()
        self.swap_bang = cfg.bool("swap_bangpath")
        self.percent_hack = cfg.bool("allow_percent_hack")
        self.resolve_null_domain = cfg.bool("resolve_null_domain")
        self.resolve_numeric_domain = cfg.bool("resolve_numeric_domain")
        self.delimiters = cfg.get("recipient_delimiter")
        self.transport_parent = parent_matching(cfg, "transport_maps")
        self._transport_maps = None
        self._relocated_maps = None
        self._sender_maps: dict[str, object] = {}
        # One-entry cache of the last answer: qmgr asks for the same
        # recipient for each message of a bulk load, as Postfix's qmgr does
        # of trivial-rewrite through its one-entry resolve_clnt cache.
        self._cacheable = self._quiet_tables()
        self._last: tuple[str, str | None, float, Resolution] | None = None
        self._warnings = 0          # a count, not a flag: smtpd may resolve in threads
        try:
            self._relocated_table()     # opened now, before any jail
        except (TableError, LookupFailed) as e:
            log.warning(f"relocated_maps: {e}")
        for name in NULL_SENDER_KEYS:
            try:
                self._sender_table(name)    # likewise
            except (TableError, LookupFailed) as e:
                log.warning(f"{self.params[name]}: {e}")

    # -- domain classes ----------------------------------------------------
    def local_addresses(self) -> set[str]:
        return self.local_domains.addresses()

    def is_local_domain(self, domain: str) -> bool:
        """is_local_domain - DOMAIN is mydestination or [our address]."""
        return self.local_domains.match(domain)

    def domain_class(self, domain: str) -> str:
        """domain_class - the address class of DOMAIN (may raise on a table failure)."""
        if self.is_local_domain(domain):
            return LOCAL
        domain = domain.lower().rstrip(".")
        if self.virtual_alias_domains.match(domain):
            return VIRTUAL_ALIAS
        if self.virtual_mailbox_domains.match(domain):
            return VIRTUAL_MAILBOX
        if self.relay_domains.match(domain):
            return RELAY
        return DEFAULT

    def is_relay_allowed_destination(self, domain: str) -> bool:
        """is_relay_allowed_destination - local, virtual or relay_domains."""
        return self.domain_class(domain) != DEFAULT

    # -- resolving ---------------------------------------------------------
    def resolve(self, addr: str, sender: str | None = None) -> Resolution:
        """resolve - where internal-form ADDR goes; never raises for bad input.

        SENDER (the envelope sender, "" for the null sender) enables the
        sender-dependent routes; None leaves them out."""
        last, now = self._last, time.monotonic()
        if last is not None and last[0] == addr and last[1] == sender and now < last[2]:
            return last[3]
        warnings = self._warnings
        try:
            res = self._resolve(addr, sender)
        except (TableError, LookupFailed) as e:
            if isinstance(e, TableUnavailable):
                log.warning(e.warning)      # "mysql:/x is unavailable. unsupported ..."
            log.warning(f"resolve {addr}: table lookup failed: {e}")
            return Resolution("", "", addr, DEFAULT, frozenset({FAIL}))
        # An answer that logged a warning is asked again, so the line repeats.
        if self._cacheable and self._warnings == warnings:
            self._last = (addr, sender, now + CACHE_TIME, res)
        return res

    def _quiet_tables(self) -> bool:
        """_quiet_tables - whether every table in the routes and domain lists
        is of a type that logs nothing per lookup (the cache may be used)."""
        specs = [spec for name in ("transport_maps", "relocated_maps", *NULL_SENDER_KEYS)
                 for spec in self.cfg.list(self.params.get(name, name))]
        for domains in (self.local_domains.mydestination, self.virtual_alias_domains,
                        self.virtual_mailbox_domains, self.relay_domains):
            # Entries as the list matches them: /file contents included.
            specs += [e.lstrip("!") for e in domains.entries
                      if ":" in e and not e.lstrip("!").startswith("[")]
        return all(spec.partition(":")[0] in QUIET_TYPES for spec in specs)

    def _resolve(self, addr: str, sender: str | None) -> Resolution:
        flags: set[str] = set()
        if not addr:
            addr = f"{self.cfg.get('empty_address_recipient')}@{self.myhostname}"
        if addr.endswith("@") and not self.resolve_null_domain:
            flags.add(ERROR)    # "user@": a domain that is there but empty
        local, domain, stripped = self._strip_local_domains(addr, flags)
        domain = (domain or stripped or self.myhostname).lower()
        if _routed(local, self.swap_bang, self.percent_hack):
            flags.add(ROUTED)
        recipient = f"{local}@{domain}"
        if not self._valid_domain(domain):
            flags.add(ERROR)
        aclass = self.domain_class(domain)
        transport, nexthop = self._class_route(aclass, domain, sender)
        if aclass in FINAL_CLASSES:
            flags.add(FINAL)
        transport, nexthop = self._transport_override(recipient, domain, transport, nexthop)
        moved = self._relocated(recipient)
        if moved is not None:
            transport, nexthop = self.cfg.get("error_service_name"), moved
            flags.add(RELOCATED)
        return Resolution(transport, nexthop, recipient, aclass, frozenset(flags))

    # -- relocated_maps ------------------------------------------------------
    def _relocated_table(self):
        if self._relocated_maps is None and self.cfg.get("relocated_maps").strip():
            self._relocated_maps = Maps(self.cfg, "relocated_maps")
        return self._relocated_maps

    def _relocated(self, recipient: str) -> str | None:
        """_relocated - "5.1.6 User has moved to NEW" for a relocated(5) user.

        As Postfix's trivial-rewrite does it, so that smtpd rejects the
        recipient and queued mail bounces through the error transport; keys:
        user@domain, user (local domains), @domain; no extension carried."""
        maps = self._relocated_table()
        if maps is None:
            return None
        value = virtual_lookup(maps, recipient, self.cfg, propagate="relocated")
        return None if value is None else f"5.1.6 User has moved to {value.strip()}"

    def _strip_local_domains(self, addr: str, flags: set[str]) -> tuple[str, str, str]:
        """_strip_local_domains - follow `user@a@ours`, `user%a@ours`, `a!user@ours`.

        Returns (local part, domain, last local domain stripped): the domain
        is empty when the address ends up local without one."""
        stripped = ""
        local, domain = split_address(addr)
        for _ in range(100):    # each round removes one operator: no loop forever
            domain = domain.rstrip(".")
            if domain and not self.is_local_domain(domain):
                return local, domain, stripped
            if domain:
                stripped = domain
            if "@" in local:
                flags.add(ROUTED)
                local, domain = split_address(local)
            elif self.swap_bang and "!" in local:
                flags.add(ROUTED)
                site, _, user = local.partition("!")
                local, domain = user, site
            elif self.percent_hack and "%" in local:
                flags.add(ROUTED)
                local, _, domain = local.rpartition("%")
            else:
                return local, "", stripped
        return local, domain, stripped

    def _valid_domain(self, domain: str) -> bool:
        if domain_literal_address(domain) is not None:
            return True
        if bare_ip(domain) is not None and not self.resolve_numeric_domain:
            return False
        return is_valid_hostname(domain)

    def _class_route(self, aclass: str, domain: str, sender: str | None) -> tuple[str, str]:
        """_class_route - the transport and next hop of an address class."""
        if aclass == VIRTUAL_ALIAS:
            return self.cfg.get("error_service_name"), VIRTUAL_ALIAS_UNKNOWN
        param_name = {LOCAL: "local_transport", VIRTUAL_MAILBOX: "virtual_transport",
                      RELAY: "relay_transport", DEFAULT: "default_transport"}[aclass]
        value = self.cfg.get(self.params[param_name])
        if aclass == DEFAULT:
            value = self._sender_route("sender_dependent_default_transport_maps",
                                       sender) or value
        transport, nexthop = split_transport(value)
        if not nexthop:
            if aclass == LOCAL:
                nexthop = self.myhostname
            elif aclass in (RELAY, DEFAULT):
                nexthop = self._sender_route("sender_dependent_relayhost_maps", sender) \
                    or self.relayhost or domain
            else:
                nexthop = domain
        return transport, nexthop

    # -- sender-dependent routes ---------------------------------------------
    def _sender_table(self, name: str):
        """_sender_table - the Maps of sender-dependent table NAME, None when unset."""
        if name not in self._sender_maps:
            param_name = self.params[name]
            maps = None
            if self.cfg.get(param_name).strip():
                maps = Maps(self.cfg, param_name)
            self._sender_maps[name] = maps
        return self._sender_maps[name]

    def _sender_route(self, name: str, sender: str | None) -> str:
        """_sender_route - table NAME's value for SENDER; "" for none or DUNNO."""
        maps = self._sender_table(name) if sender is not None else None
        if maps is None or sender is None:
            return ""
        value = None
        for i, key in enumerate(self._sender_keys(name, sender)):
            value = maps.lookup(key, partial=i > 0)
            if value is not None:
                break
        if value is None:
            return ""
        value = value.strip()
        if not value:
            log.warning(f"{self.params[name]}: ignoring null lookup result for {sender}")
            self._warnings += 1
        return "" if value.upper() == DUNNO else value

    def _sender_keys(self, name: str, sender: str) -> list[str]:
        """_sender_keys - sender, sender without extension, @domain (null: its key)."""
        if not sender:
            return [self.cfg.get(NULL_SENDER_KEYS[name])]
        local, domain = split_address(sender.lower())
        keys = [sender.lower()]
        base = strip_extension(local, self.delimiters)
        if domain and base != local:
            keys.append(f"{base}@{domain}")
        if domain:
            keys.append(f"@{domain}")
        return keys

    # -- transport_maps ------------------------------------------------------
    def transport_maps(self):
        if self._transport_maps is None:
            self._transport_maps = Maps(self.cfg, self.params["transport_maps"])
        return self._transport_maps

    def _transport_override(self, recipient: str, domain: str,
                            transport: str, nexthop: str) -> tuple[str, str]:
        if not self.cfg.get(self.params["transport_maps"]).strip():
            return transport, nexthop
        value = self._transport_lookup(recipient, domain)
        if value is None:
            return transport, nexthop
        new_transport, new_nexthop = split_transport(value)
        if not new_transport and not new_nexthop:
            return transport, nexthop
        if new_transport and not new_nexthop:
            return new_transport, domain
        return new_transport or transport, new_nexthop

    def _transport_lookup(self, recipient: str, domain: str) -> str | None:
        """_transport_lookup - transport(5) search order for RECIPIENT."""
        maps = self.transport_maps()
        for i, key in enumerate(self._transport_keys(recipient, domain)):
            # Pattern tables (regexp, pcre) see only the full address.
            value = maps.lookup(key, partial=i > 0)
            if value is not None:
                return value
        return None

    def _transport_keys(self, recipient: str, domain: str) -> list[str]:
        local, _ = split_address(recipient)
        keys = [recipient.lower()]
        base = strip_extension(local, self.delimiters)
        if base != local:
            keys.append(f"{base}@{domain}".lower())
        keys.append(domain)
        labels = domain.split(".")
        for i in range(1, len(labels)):
            parent = ".".join(labels[i:])
            keys.append(parent if self.transport_parent else "." + parent)
        keys.append("*")
        return keys


def strip_extension(local: str, delimiters: str) -> str:
    """strip_extension - `user+ext` -> `user` for any recipient_delimiter character."""
    if not delimiters:
        return local
    for i, c in enumerate(local):
        if c in delimiters and i > 0:
            return local[:i]
    return local


def _routed(local: str, swap_bang: bool, percent_hack: bool) -> bool:
    return "@" in local or (swap_bang and "!" in local) or (percent_hack and "%" in local)


def resolver_for(cfg: Config, probe: bool = False) -> Resolver:
    """resolver_for - the Resolver of CFG (PROBE: for address probes), built
    once per process and Config."""
    return cfg.derived(Resolver, probe)
