"""dnsblog: DNS block list lookups for postscreen, as Postfix's dnsblog(8).

postscreen asks one request per DNSBL site and client, all at once, so a
slow list delays a client by the slowest answer, not the sum:

    {"op": "query", "domain": "zen.example", "address": "192.0.2.1", "id": N}
        -> {"status": "ok", "domain": D, "address": A, "id": N,
            "answers": ["127.0.0.2", ...], "ttl": 300}
                                                [] when not listed; ttl: how long
                                                the answer holds (None: unknown)

The answers are every A record of the reversed address under the domain;
postscreen applies the site's reply filter and weight itself. A listed
client is logged as `addr 192.0.2.1 listed by domain zen.example as
127.0.0.2`; a DNS failure as a warning, answered as not listed (a list
that cannot be asked lists nobody). `dnsblog_reply_delay` delays each
reply, for tests of postscreen_dnsbl_timeout.

Interface: main(), pre_jail(svc), run(svc), make_handler(cfg)
"""

from __future__ import annotations

import ipaddress
import time

from pymaster.master import service
from pymaster.util import dns, log


def query(cfg, domain: str, address: str) -> tuple[list[str], int | None]:
    """query - the A records that list ADDRESS under DOMAIN ([] when none)
    and their TTL (None: unknown, or the lookup failed)."""
    name = dns.dnsbl_query(address, domain)
    try:
        answers, ttl = dns.lookup_with_ttl(cfg, name, "A")
    except dns.DnsError as e:
        log.warning(f"dnsblog_query: lookup error for DNS query {name}: {e.reason}")
        return [], None
    if answers:
        log.info(f"addr {address} listed by domain {domain} as {' '.join(answers)}")
    return answers, ttl


def make_handler(cfg) -> service.Handler:
    """make_handler - the request handler of the service."""
    delay = float(cfg.time("dnsblog_reply_delay"))

    def handle(header: dict, payload: list) -> tuple[dict, list]:
        domain = str(header.get("domain", "")).strip().rstrip(".").lower()
        address = str(header.get("address", ""))
        try:
            ipaddress.ip_address(address)
        except ValueError:
            return {"status": "bad", "reason": f"bad address: {address!r}"}, []
        if not domain:
            return {"status": "bad", "reason": "no DNSBL domain"}, []
        answers, ttl = query(cfg, domain, address)
        if delay > 0:
            time.sleep(delay)
        return {"status": "ok", "domain": domain, "address": address,
                "id": header.get("id"), "answers": answers, "ttl": ttl}, []
    return handle


def pre_jail(svc: service.Service) -> service.Handler:
    """pre_jail - the resolver reads resolv.conf before the jail hides it."""
    dns.resolver_for(svc.cfg)
    return make_handler(svc.cfg)


def run(svc: service.Service) -> None:
    svc.serve_requests(svc.enter_jail(pre_jail))


def main() -> None:
    service.main("dnsblog", run)
