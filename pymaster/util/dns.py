"""The DNS layer every program that asks DNS shares (smtpd's lists and
checks, smtp's MX and TLSA lookups): building resolvers, lookups, and the
one DnsError.

Resolvers are built before the jail: dnspython reads
/etc/resolv.conf when the resolver is made, which a chrooted process can no
longer see. The parameter `dns_nameservers` (pymaster's own; empty by
default) replaces resolv.conf's servers with a list of `address[:port]`
entries, so tests can point every program at a DNS server on loopback.

Answers come back as plain Python values; "no such name" and "no record of
that type" are an empty list, a server failure or timeout raises DnsError
(the caller defers, never rejects, on a temporary failure).

DnsError carries a reason and an enhanced status code: 4.x.x is a temporary
failure (.soft), 5.x.x a permanent one (a program that bounces on "no such
host", as smtp does, raises it with a 5.x.x code).

DNSSEC: a resolver made with dnssec=True asks with the DO bit and the AD
flag, so that a validating resolver says in each answer whether it
validated it (is_secure).

Interface:
    make_resolver(servers, dnssec=False, lifetime=LOOKUP_LIFETIME) -> Resolver
                                                    servers: dns_nameservers' value or list
    resolver_for(cfg) -> dns.resolver.Resolver      cached per process
    is_secure(answer) -> bool                       the AD flag of the answer
    lookup(cfg, name, rdtype) -> list[str]          "A", "AAAA", "TXT", "MX", "NS", "PTR"
    lookup_with_ttl(cfg, name, rdtype) -> (list[str], ttl | None)
    mx_hosts(cfg, domain) -> list[str]              by preference; [] when none
    addresses(cfg, host) -> list[str]               A then AAAA
    reverse_name(address) -> str                    "2.0.192.in-addr.arpa"-style query name
    DnsError(reason, dsn=TEMPORARY): .reason .dsn .soft
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.flags
import dns.name
import dns.nameserver
import dns.rdatatype

# dnspython loads a record type's module when it first parses one; a program
# that has dropped privileges may no longer reach the library, so load now.
import dns.rdtypes.ANY.CNAME  # noqa: F401
import dns.rdtypes.ANY.MX  # noqa: F401
import dns.rdtypes.ANY.NS  # noqa: F401
import dns.rdtypes.ANY.PTR  # noqa: F401
import dns.rdtypes.ANY.SOA  # noqa: F401
import dns.rdtypes.ANY.TXT  # noqa: F401
import dns.rdtypes.IN.A  # noqa: F401
import dns.rdtypes.IN.AAAA  # noqa: F401
import dns.resolver
import dns.reversename

LOOKUP_LIFETIME = 10.0
_resolvers: dict[str, dns.resolver.Resolver] = {}


TEMPORARY = "4.4.3"         # RFC 3463: directory server failure
EDNS_PAYLOAD = 1232         # the DNS flag day 2020 buffer size


class DnsError(Exception):
    """A lookup that failed: temporarily (server failure, timeout, no server
    reachable; a 4.x.x DSN) or, where the caller says so, permanently."""

    def __init__(self, reason: str, dsn: str = TEMPORARY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn

    @property
    def soft(self) -> bool:
        """soft - a temporary failure: try again later."""
        return self.dsn.startswith("4")


def _servers(items: str | list[str]) -> list[tuple[str, int]]:
    """_servers - "127.0.0.1:5353, [::1]:53, 192.0.2.1" -> [(addr, port)]."""
    if isinstance(items, str):
        items = items.replace(",", " ").split()
    out = []
    for item in items:
        host, port = item, 53
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif item.count(":") == 1:
            host, _, p = item.partition(":")
            port = int(p)
        out.append((host, port))
    return out


def make_resolver(servers: str | list[str], dnssec: bool = False,
                  lifetime: float = LOOKUP_LIFETIME) -> dns.resolver.Resolver:
    """make_resolver - a resolver asking SERVERS (`dns_nameservers` entries),
    or resolv.conf's servers when there are none."""
    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port)
                                for host, port in _servers(servers)]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    resolver.lifetime = lifetime
    if dnssec:
        resolver.use_edns(0, dns.flags.DO, EDNS_PAYLOAD)
        resolver.flags = dns.flags.RD | dns.flags.AD
    return resolver


def resolver_for(cfg) -> dns.resolver.Resolver:
    """resolver_for - this process's resolver; `dns_nameservers` wins over resolv.conf."""
    override = cfg.get("dns_nameservers").strip() if cfg is not None else ""
    if override not in _resolvers:
        _resolvers[override] = make_resolver(override)
    return _resolvers[override]


def is_secure(answer) -> bool:
    """is_secure - did the resolver validate ANSWER (the AD flag, RFC 4035 3.2.3)?"""
    response = getattr(answer, "response", None)
    return bool(response is not None and response.flags & dns.flags.AD)


def lookup(cfg, name: str, rdtype: str) -> list[str]:
    """lookup - the records of NAME as text; [] for NXDOMAIN or no data."""
    return lookup_with_ttl(cfg, name, rdtype)[0]


def lookup_with_ttl(cfg, name: str, rdtype: str) -> tuple[list[str], int | None]:
    """lookup_with_ttl - lookup() and how long the answer may be kept: the
    records' TTL, or for no records the negative TTL of the zone's SOA
    (RFC 2308 section 5); None when the server gave none."""
    try:
        answer = resolver_for(cfg).resolve(dns.name.from_text(name), rdtype, search=False)
    except dns.resolver.NXDOMAIN as e:
        return [], _negative_ttl(e.response(e.qnames()[0]) if e.qnames() else None)
    except dns.resolver.NoAnswer as e:
        return [], _negative_ttl(e.kwargs.get("response"))
    except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.LifetimeTimeout) as e:
        raise DnsError(f"{name}/{rdtype}: {e}") from None
    except (dns.exception.DNSException, ValueError) as e:
        raise DnsError(f"{name}/{rdtype}: {e}") from None
    ttl = answer.rrset.ttl if answer.rrset is not None else None
    return [_text(rr, rdtype) for rr in answer], ttl


def _negative_ttl(response) -> int | None:
    """_negative_ttl - min(SOA TTL, SOA minimum) of a negative RESPONSE."""
    for rrset in getattr(response, "authority", None) or []:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return None


def _text(rr, rdtype: str) -> str:
    if rdtype == "TXT":
        return b"".join(rr.strings).decode("utf-8", "replace")
    if rdtype in ("MX",):
        return f"{rr.preference} {rr.exchange.to_text(omit_final_dot=True)}"
    if rdtype in ("NS", "PTR", "CNAME"):
        return rr.target.to_text(omit_final_dot=True)
    return rr.to_text()


def mx_hosts(cfg, domain: str) -> list[str]:
    """mx_hosts - DOMAIN's MX host names, lowest preference first."""
    records = []
    for text in lookup(cfg, domain, "MX"):
        pref, _, host = text.partition(" ")
        records.append((int(pref), host.lower()))
    return [host for _, host in sorted(records)]


def addresses(cfg, host: str) -> list[str]:
    """addresses - HOST's IPv4 then IPv6 addresses; [] when it has none."""
    return lookup(cfg, host, "A") + lookup(cfg, host, "AAAA")


def has_address_or_mx(cfg, domain: str) -> bool:
    """has_address_or_mx - DOMAIN has an MX, A or AAAA record (mail can find it)."""
    return bool(lookup(cfg, domain, "MX") or lookup(cfg, domain, "A") or
                lookup(cfg, domain, "AAAA"))


def reverse_name(address: str) -> str:
    """reverse_name - the in-addr.arpa / ip6.arpa name of ADDRESS, without the final dot."""
    return dns.reversename.from_address(str(ipaddress.ip_address(address))) \
        .to_text(omit_final_dot=True)


def dnsbl_query(address: str, domain: str) -> str:
    """dnsbl_query - "1.2.0.192.zen.example" for 192.0.2.1 (nibbles for IPv6)."""
    rev = reverse_name(address)
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if rev.endswith(suffix):
            rev = rev[: -len(suffix)]
    return f"{rev}.{domain}"
