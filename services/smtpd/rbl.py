"""DNS block and allow lists in smtpd restrictions (Postfix's reject_rbl_client family).

    reject_rbl_client zen.example[=FILTER]     the client address, reversed: 1.2.0.192.zen.example
    reject_rhsbl_client / _reverse_client / _helo / _sender / _recipient  dbl.example[=FILTER]
                                               a domain name: example.net.dbl.example
    permit_dnswl_client list.example[=FILTER]  permit a listed client address
    permit_rhswl_client list.example[=FILTER]  permit a listed client name

A name is listed when it has an A record matching FILTER (default: any
answer); FILTER is `=d.d.d.d` where each octet is a number, `[a..b]` or a
`[a;b;c]` choice (`=127.0.0.[2..11]`). The refusal is rbl_reply_maps'
answer for the list's domain, or default_rbl_reply, with $rbl_code
(maps_rbl_reject_code), $rbl_class, $rbl_what, $rbl_domain, $rbl_reason
(the name's TXT record), $client_address, $client_name, $helo_name,
$sender, $recipient expanded, and 5.7.1 added when the reply has no
enhanced status code. A DNS failure is no decision (a list that cannot be
asked lists no one).

Interface:
    RESTRICTIONS   entries for check.py's table
    DNS_RESTRICTIONS   all of them: each one asks DNS
    parse_filter(text) -> callable(address) -> bool   (pymaster.util.dnsbl)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymaster.mail.addr import split_address
from pymaster.util import log
from pymaster.util.dnsbl import parse_filter
from pymaster.util.tables import TableError
from services.smtpd import lazy
from services.smtpd.verdict import PERMIT, Context, Verdict, reply_with_code

if TYPE_CHECKING:       # check.py imports this module to build its table
    from services.smtpd.check import Checker

def _split_arg(arg: str) -> tuple[str, str]:
    domain, _, filt = arg.partition("=")
    return domain.lower().rstrip("."), filt


def listed(checker: Checker, query: str, filt: str) -> list[str] | None:
    """listed - the matching A records of QUERY, or None when it is not listed."""
    dns = lazy.dns()
    try:
        answers = dns.lookup(checker.cfg, query, "A")
    except dns.DnsError as e:
        log.warning(f"dnsblog_query: lookup error for DNS query {query}: {e}")
        return None
    if filt:
        try:
            matches = parse_filter(filt)
        except ValueError as e:
            log.warning(str(e))
            return None
        answers = [a for a in answers if matches(a)]
    return answers or None


def _reason(checker: Checker, query: str) -> str:
    dns = lazy.dns()
    try:
        return "; ".join(dns.lookup(checker.cfg, query, "TXT"))
    except dns.DnsError:
        return ""


def _refusal(checker: Checker, ctx: Context, domain: str, query: str, rbl_class: str,
             what: str) -> Verdict:
    """_refusal - the reply for a listed client, name or address."""
    template = None
    try:
        maps = checker.param_maps("rbl_reply_maps")
        if maps:
            template = maps.lookup(domain)
    except TableError as e:
        log.warning(f"rbl_reply_maps lookup problem for {domain}: {e}")
    if template is None:
        template = checker.cfg.raw("default_rbl_reply") or ""
    variables = {
        "rbl_code": str(checker.cfg.int("maps_rbl_reject_code")), "rbl_domain": domain,
        "rbl_class": rbl_class, "rbl_what": what, "rbl_reason": _reason(checker, query),
        "client_address": ctx.client_addr, "client_name": ctx.client_name,
        "reverse_client_name": ctx.reverse_client_name, "helo_name": ctx.helo or "",
        "sender": ctx.sender or "", "recipient": ctx.recipient or "",
    }
    variables["rbl_txt"] = variables["rbl_reason"]
    text = checker.cfg.with_overrides(variables).expand(template)
    return reply_with_code(text, checker.cfg.int("maps_rbl_reject_code"))


def reject_rbl_client(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    dns = lazy.dns()
    domain, filt = _split_arg(arg)
    try:
        query = dns.dnsbl_query(ctx.client_addr, domain)
    except ValueError:
        return None
    if listed(checker, query, filt) is None:
        return None
    return _refusal(checker, ctx, domain, query, "Client host", ctx.client_addr)


def permit_dnswl_client(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    dns = lazy.dns()
    domain, filt = _split_arg(arg)
    try:
        query = dns.dnsbl_query(ctx.client_addr, domain)
    except ValueError:
        return None
    return Verdict(PERMIT) if listed(checker, query, filt) is not None else None


def _rhs(checker: Checker, ctx: Context, arg: str, name: str, rbl_class: str) -> Verdict | None:
    domain, filt = _split_arg(arg)
    name = name.lower().rstrip(".")
    if not name or name == "unknown" or name.startswith("["):
        return None
    query = f"{name}.{domain}"
    if listed(checker, query, filt) is None:
        return None
    return _refusal(checker, ctx, domain, query, rbl_class, name)


def _domain(address: str | None) -> str:
    return split_address(address)[1] if address else ""


def reject_rhsbl_client(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    return _rhs(checker, ctx, arg, ctx.client_name, "Client host")


def reject_rhsbl_reverse_client(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    return _rhs(checker, ctx, arg, ctx.reverse_client_name, "Unverified Client host")


def reject_rhsbl_helo(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    return _rhs(checker, ctx, arg, ctx.helo or "", "Helo command")


def reject_rhsbl_sender(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    return _rhs(checker, ctx, arg, _domain(ctx.sender), "Sender address")


def reject_rhsbl_recipient(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    return _rhs(checker, ctx, arg, _domain(ctx.recipient), "Recipient address")


def permit_rhswl_client(checker: Checker, ctx: Context, arg: str) -> Verdict | None:
    domain, filt = _split_arg(arg)
    name = ctx.client_name.lower()
    if not name or name == "unknown":
        return None
    return Verdict(PERMIT) if listed(checker, f"{name}.{domain}", filt) is not None else None


RESTRICTIONS = {
    "reject_rbl_client": (reject_rbl_client, "domain"),
    "permit_dnswl_client": (permit_dnswl_client, "domain"),
    "reject_rhsbl_client": (reject_rhsbl_client, "domain"),
    "reject_rhsbl_reverse_client": (reject_rhsbl_reverse_client, "domain"),
    "reject_rhsbl_helo": (reject_rhsbl_helo, "domain"),
    "reject_rhsbl_sender": (reject_rhsbl_sender, "domain"),
    "reject_rhsbl_recipient": (reject_rhsbl_recipient, "domain"),
    "permit_rhswl_client": (permit_rhswl_client, "domain"),
}

DNS_RESTRICTIONS: frozenset[str] = frozenset(RESTRICTIONS)
