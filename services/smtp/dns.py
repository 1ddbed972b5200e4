"""Finding the hosts and addresses of a next hop (MX and address lookups).

For a domain the client looks up MX records (RFC 5321 5.1): sorted by
preference, equal preferences shuffled, each exchanger's addresses in turn;
a domain without MX records is its own mail host (its A/AAAA records). A
single MX record "0 ." is RFC 7505's null MX: the domain takes no mail,
and the recipients bounce. When this host is itself one of the exchangers,
only the better ones are kept ("mail for X loops back to myself" when none
is). `[host]`, `inet:` and `unix:` destinations skip MX lookups.

smtp_host_lookup says how host names become addresses: `dns` (A and AAAA
queries), `native` (getaddrinfo: /etc/hosts, nsswitch), or both in order.
disable_dns_lookups = yes means no MX lookups and native host lookups.
inet_protocols limits the address families; IPv4 addresses come first.

Name servers: /etc/resolv.conf (read before the process enters its jail),
or pymaster's dns_nameservers parameter, ADDRESS or [ADDRESS]:PORT, which
tests point at a DNS server on loopback.

DNSSEC (smtp_dns_support_level = dnssec, for DANE): as Postfix, the client
does not validate itself; it asks its (validating, local) resolver with the
DO bit and the AD flag set, and trusts a record set as "secure" only when
the answer carries the AD flag (RFC 6840 5.7). Each Host notes whether its
address records were secure (.secure) and, when it came from an MX lookup,
whether the MX record set was (.mx_secure; None without an MX lookup).

Errors come back as DnsError with Postfix's reason text and a DSN code:
    Host or domain name not found. Name service error for name=x.example
        type=MX: Host not found                    (5.4.4, bounce)
    ... type=MX: Host not found, try again         (4.4.3, defer)
    Domain x.example does not accept mail (nullMX) (5.1.10, bounce)
    mail for x.example loops back to myself        (5.4.6, bounce)

The resolvers, DnsError and the AD-flag test are the shared DNS layer's
(pymaster.util.dns); this module keeps what is the client's own: MX
selection, host ordering and Postfix's reason texts.

Interface:
    Host(name, addr, port, pref=0, unix=False, secure=False, mx_secure=None):
        .namaddr "name[addr]", .relay
    HostLookup(settings, cfg, nameservers=None).hosts(dest) -> list[Host]
    DnsError(reason, dsn): .soft                 pymaster.util.dns's, raised here
    dnssec_enabled(cfg, settings) -> bool        *_dns_support_level = dnssec
    load_record_types()         load what a chrooted process cannot load later
    order_mx(records) -> list[(pref, name)] sorted, ties shuffled
"""

from __future__ import annotations

import ipaddress
import random
import socket
from dataclasses import dataclass
from itertools import groupby

import dns.exception
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from pymaster.mail.config import Config
from pymaster.mail.domains import interface_addresses
from pymaster.util.dns import DnsError, is_secure, make_resolver
from services.smtp.nexthop import Destination
from services.smtp.settings import Settings

NOT_FOUND = "Host not found"
TRY_AGAIN = "Host not found, try again"
NO_DATA = "Host found but no data record of requested type"
RESOLVER_LIFETIME = 20.0    # seconds per lookup, retries included


@dataclass(frozen=True)
class Host:
    name: str
    addr: str        # an IP address, or the socket path of a unix destination
    port: int
    pref: int = 0
    unix: bool = False
    secure: bool = False              # the address records were DNSSEC-validated
    mx_secure: bool | None = None     # the MX record set was; None: no MX lookup

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]"

    @property
    def relay(self) -> str:
        """relay - the `relay=` field of the status line."""
        return self.namaddr if self.unix else f"{self.namaddr}:{self.port}"


def name_error(name: str, rrtype: str, text: str) -> DnsError:
    """name_error - Postfix's "Name service error" reason for NAME."""
    dsn = "4.4.3" if text == TRY_AGAIN else "5.4.4"
    return DnsError(f"Host or domain name not found. Name service error for "
                    f"name={name} type={rrtype}: {text}", dsn)


def dnssec_enabled(cfg: Config, settings: Settings) -> bool:
    """dnssec_enabled - *_dns_support_level = dnssec (postconf(5))."""
    return cfg.get(settings.param("_dns_support_level")).strip().lower() == "dnssec"


def order_mx(records: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """order_mx - by preference; hosts of equal preference in random order."""
    out: list[tuple[int, str]] = []
    for _, group in groupby(sorted(records, key=lambda r: r[0]), key=lambda r: r[0]):
        same = list(group)
        random.shuffle(same)
        out.extend(same)
    return out


def load_record_types() -> None:
    """load_record_types - import dnspython's lazily loaded parts now.

    dnspython imports the module of each record type (and the IDNA codec)
    on first use; inside a chroot there is no Python library to import
    from, so every type the client meets is loaded at start."""
    for rrtype, text in (("MX", "10 mx.example."), ("A", "192.0.2.1"),
                         ("AAAA", "2001:db8::1"), ("CNAME", "x.example."),
                         ("TXT", '"x"'), ("SOA", "a. b. 1 2 3 4 5"), ("PTR", "x."),
                         ("TLSA", "3 1 1 " + "00" * 32)):
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rrtype), text)
    dns.message.make_query(dns.name.from_text("münchen.example"), "MX").to_wire()


class HostLookup:
    """MX and address lookups for one client process."""

    def __init__(self, settings: Settings, cfg: Config,
                 resolver: dns.resolver.Resolver | None = None) -> None:
        self.settings = settings
        self.cfg = cfg
        self.dnssec = dnssec_enabled(cfg, settings)
        self.resolver = resolver or make_resolver(cfg.list("dns_nameservers"), self.dnssec,
                                                  RESOLVER_LIFETIME)
        lookup = settings.host_lookup
        self.methods = ["native"] if settings.disable_dns else \
            [m for m in lookup if m in ("dns", "native")] or ["dns"]
        protocols = settings.inet_protocols
        self.families = [f for f, name in ((socket.AF_INET, "ipv4"), (socket.AF_INET6, "ipv6"))
                         if "all" in protocols or name in protocols] or [socket.AF_INET]
        self._own: set[str] | None = None

    # -- the entry point ---------------------------------------------------
    def hosts(self, dest: Destination) -> list[Host]:
        """hosts - the addresses to try for DEST, best first; raises DnsError."""
        if dest.unix:
            return [Host(self.cfg.get("myhostname"), dest.host, 0, unix=True)]
        if dest.literal:
            return [Host(dest.literal, dest.literal, dest.port)]
        if dest.mx and not self.settings.disable_dns:
            return self._mx_hosts(dest)
        return self._host_addresses(dest.host, dest.port, 0)

    # -- MX ----------------------------------------------------------------
    def _mx_hosts(self, dest: Destination) -> list[Host]:
        found = self._mx_records(dest.host)
        if found is None:       # no MX: the domain is its own mail host
            return self._host_addresses(dest.host, dest.port, 0)
        records, mx_secure = found
        if len(records) == 1 and records[0][1] in ("", "."):
            raise DnsError(f"Domain {dest.host} does not accept mail (nullMX)", "5.1.10")
        hosts: list[Host] = []
        error: DnsError | None = None
        for pref, name in order_mx([r for r in records if r[1] not in ("", ".")]):
            try:
                hosts.extend(self._host_addresses(name, dest.port, pref, mx_secure))
            except DnsError as e:
                # A temporary failure of one exchanger outweighs a permanent one.
                if error is None or (e.soft and not error.soft):
                    error = e
        if not hosts:
            raise error or name_error(dest.host, "MX", NO_DATA)
        return self._without_self(dest.host, hosts)

    def _mx_records(self, domain: str) -> tuple[list[tuple[int, str]], bool] | None:
        """_mx_records - (preference, exchanger) pairs and whether the set was
        secure; None when there is no MX."""
        try:
            answer = self._query(domain, "MX")
        except dns.resolver.NoAnswer:
            return None
        records = [(r.preference, r.exchange.to_text(omit_final_dot=True) or ".")
                   for r in answer]
        return records, self.dnssec and is_secure(answer)

    def _without_self(self, domain: str, hosts: list[Host]) -> list[Host]:
        """_without_self - drop exchangers as good as or worse than this host."""
        own = self.own_addresses()
        mine = [h.pref for h in hosts if h.addr in own]
        if not mine:
            return hosts
        kept = [h for h in hosts if h.pref < min(mine)]
        if not kept:
            raise DnsError(f"mail for {domain} loops back to myself", "5.4.6")
        return kept

    def own_addresses(self) -> set[str]:
        """own_addresses - this host's interface addresses, found once."""
        if self._own is None:
            self._own = interface_addresses(self.cfg)
        return self._own

    # -- addresses ---------------------------------------------------------
    def _host_addresses(self, name: str, port: int, pref: int,
                        mx_secure: bool | None = None) -> list[Host]:
        error: DnsError | None = None
        for method in self.methods:
            try:
                addrs = self._dns_addresses(name) if method == "dns" \
                    else [(a, False) for a in self._native_addresses(name)]
            except DnsError as e:
                error = e
                continue
            if self.settings.randomize_addresses:
                random.shuffle(addrs)
            addrs.sort(key=lambda a: ":" in a[0])        # IPv4 first
            return [Host(name, a, port, pref, secure=secure, mx_secure=mx_secure)
                    for a, secure in addrs]
        raise error or name_error(name, "A", NOT_FOUND)

    def _dns_addresses(self, name: str) -> list[tuple[str, bool]]:
        """_dns_addresses - (address, secure) pairs: A and/or AAAA records."""
        addrs: list[tuple[str, bool]] = []
        error: DnsError | None = None
        for family in self.families:
            rrtype = "A" if family == socket.AF_INET else "AAAA"
            try:
                answer = self._query(name, rrtype)
                secure = self.dnssec and is_secure(answer)
                addrs.extend((r.address, secure) for r in answer)
            except dns.resolver.NoAnswer:
                error = error or name_error(name, rrtype, NO_DATA)
            except DnsError as e:
                error = e if error is None or e.soft else error
        if not addrs:
            raise error or name_error(name, "A", NOT_FOUND)
        return addrs

    def _native_addresses(self, name: str) -> list[str]:
        addrs: list[str] = []
        for family in self.families:
            try:
                infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
            except socket.gaierror as e:
                if e.errno in (socket.EAI_AGAIN,):
                    raise name_error(name, "A", TRY_AGAIN) from None
                continue
            for info in infos:
                addr = str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
                if addr not in addrs:
                    addrs.append(addr)
        if not addrs:
            raise name_error(name, "A", NOT_FOUND)
        return addrs

    def _query(self, name: str, rrtype: str):
        """_query - the answer for NAME/RRTYPE; NoAnswer passes through."""
        qname = dns.name.from_text(name)
        try:
            return self.resolver.resolve(qname, rrtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise name_error(name, rrtype, NOT_FOUND) from None
        except dns.resolver.NoAnswer:
            raise
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.exception.DNSException, OSError):
            raise name_error(name, rrtype, TRY_AGAIN) from None
