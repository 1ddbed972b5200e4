"""Host name and address restrictions: syntax and existence in DNS.

    reject_invalid_helo_hostname      501 5.5.2 <x>: Helo command rejected: Invalid name
    reject_non_fqdn_helo_hostname     504 5.5.2 <x>: Helo command rejected: need fully-qualified hostname
    reject_non_fqdn_sender/recipient  504 5.5.2 <x>: ... address rejected: need fully-qualified address
    reject_unknown_helo_hostname      450 4.7.1 <x>: Helo command rejected: Host not found
    reject_unknown_sender_domain      450 4.1.8 <x>: Sender address rejected: Domain not found
    reject_unknown_recipient_domain   450 4.1.2 <x>: Recipient address rejected: Domain not found
    reject_unknown_client_hostname    450 4.7.25 Client host rejected: cannot find your hostname, [ADDR]
    reject_unknown_reverse_client_hostname   ... cannot find your reverse hostname, [ADDR]
The codes come from invalid_hostname_reject_code, non_fqdn_reject_code,
unknown_hostname_reject_code, unknown_address_reject_code and
unknown_client_reject_code; Postfix 2.x's names (reject_invalid_hostname,
reject_non_fqdn_hostname, reject_unknown_hostname, reject_unknown_client)
are accepted. A DNS failure never rejects: it defers only if the mail would
otherwise be accepted (defer_if_permit), as Postfix's *_tempfail_action
default does.

Interface:
    RESTRICTIONS   entries for check.py's table
    DNS_RESTRICTIONS   the names among them that ask DNS
"""  # noqa: E501  (the reply texts above, whole)

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from pymaster.mail import resolve
from pymaster.mail.addr import is_valid_hostname, split_address
from services.smtpd import lazy, replies
from services.smtpd.verdict import Context, Verdict, coded

if TYPE_CHECKING:       # check.py imports this module to build its table
    from services.smtpd.check import Checker


def _address_literal_ok(text: str) -> bool:
    """_address_literal_ok - "[192.0.2.1]" or "[IPv6:2001:db8::1]" with a valid address."""
    if not (text.startswith("[") and text.endswith("]")):
        return False
    inner = text[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        ipaddress.ip_address(inner)
    except ValueError:
        return False
    return True


def _fqdn(name: str) -> bool:
    name = name.rstrip(".")
    return is_valid_hostname(name) and "." in name


def reject_invalid_helo_hostname(checker: Checker, ctx: Context, arg) -> Verdict | None:
    helo = ctx.helo
    if not helo or _address_literal_ok(helo) or is_valid_hostname(helo.rstrip(".")):
        return None
    return _for_helo(ctx, checker.cfg.int("invalid_hostname_reject_code"), "Invalid name")


def _for_helo(ctx: Context, code: int, text: str) -> Verdict:
    """_for_helo - a HELO refusal worded as Helo command whatever list it is in."""
    dsn = "5.5.2" if code >= 500 else "4.5.2"
    return coded(code, dsn, f"<{ctx.helo}>: Helo command rejected: {text}")


def reject_non_fqdn_helo_hostname(checker: Checker, ctx: Context, arg) -> Verdict | None:
    helo = ctx.helo
    if not helo or _address_literal_ok(helo) or _fqdn(helo):
        return None
    return _for_helo(ctx, checker.cfg.int("non_fqdn_reject_code"),
                     "need fully-qualified hostname")


def _non_fqdn_address(checker: Checker, address: str | None, what: str) -> Verdict | None:
    if not address:
        return None
    _, domain = split_address(address)
    if domain and (_address_literal_ok(domain) or _fqdn(domain)):
        return None
    code = checker.cfg.int("non_fqdn_reject_code")
    return coded(code, "5.5.2" if code >= 500 else "4.5.2",
                 f"<{address}>: {what} address rejected: need fully-qualified address")


def reject_non_fqdn_sender(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _non_fqdn_address(checker, ctx.sender, "Sender")


def reject_non_fqdn_recipient(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _non_fqdn_address(checker, ctx.recipient, "Recipient")


def _tempfail(checker: Checker, ctx: Context, reply: str) -> None:
    """_tempfail - a DNS failure: defer only what would otherwise be accepted."""
    if not ctx.defer_if_permit:
        ctx.defer_if_permit = reply
    return None


def reject_unknown_helo_hostname(checker: Checker, ctx: Context, arg) -> Verdict | None:
    helo = (ctx.helo or "").rstrip(".")
    if not helo or _address_literal_ok(helo) or not is_valid_hostname(helo):
        return None
    code = checker.cfg.int("unknown_hostname_reject_code")
    dsn = "4.7.1" if code < 500 else "5.7.1"
    reply = coded(code, dsn, f"<{ctx.helo}>: Helo command rejected: Host not found")
    dns = lazy.dns()
    try:
        found = dns.has_address_or_mx(checker.cfg, helo)
    except dns.DnsError:
        _tempfail(checker, ctx, coded(450, "4.7.1", reply.reply.split(" ", 2)[2]).reply)
        return None
    return None if found else reply


def _unknown_domain(checker: Checker, ctx: Context, address: str | None, what: str,
                    detail: str) -> Verdict | None:
    """_unknown_domain - the domain of a remote ADDRESS must exist in DNS."""
    if not address:
        return None
    _, domain = split_address(address)
    if not domain or domain.startswith("["):
        return None
    res = checker.resolver.resolve(checker.canonical(address))
    if res.address_class != resolve.DEFAULT:
        return None     # ours (local, virtual, relay): we know it exists
    code = checker.cfg.int("unknown_address_reject_code")
    dns = lazy.dns()
    try:
        found = dns.has_address_or_mx(checker.cfg, domain.rstrip("."))
    except dns.DnsError:
        _tempfail(checker, ctx, replies.ERR_DOMAIN_LOOKUP.format(
            detail=detail, address=address, what=what))
        return None
    if found:
        return None
    return coded(code, f"{'5' if code >= 500 else '4'}.1.{detail}",
                 f"<{address}>: {what} address rejected: Domain not found")


def reject_unknown_sender_domain(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unknown_domain(checker, ctx, ctx.sender, "Sender", "8")


def reject_unknown_recipient_domain(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unknown_domain(checker, ctx, ctx.recipient, "Recipient", "2")


def _unknown_client(checker: Checker, ctx: Context, name: str, which: str) -> Verdict | None:
    if name and name != "unknown":
        return None
    code = checker.cfg.int("unknown_client_reject_code")
    return coded(code, f"{'5' if code >= 500 else '4'}.7.25",
                 f"Client host rejected: cannot find your {which}hostname, [{ctx.client_addr}]")


def reject_unknown_client_hostname(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unknown_client(checker, ctx, ctx.client_name, "")


def reject_unknown_reverse_client_hostname(checker: Checker, ctx: Context,
                                           arg) -> Verdict | None:
    return _unknown_client(checker, ctx, ctx.reverse_client_name, "reverse ")


RESTRICTIONS = {
    "reject_invalid_helo_hostname": (reject_invalid_helo_hostname, ""),
    "reject_invalid_hostname": (reject_invalid_helo_hostname, ""),
    "reject_non_fqdn_helo_hostname": (reject_non_fqdn_helo_hostname, ""),
    "reject_non_fqdn_hostname": (reject_non_fqdn_helo_hostname, ""),
    "reject_non_fqdn_sender": (reject_non_fqdn_sender, ""),
    "reject_non_fqdn_recipient": (reject_non_fqdn_recipient, ""),
    "reject_unknown_helo_hostname": (reject_unknown_helo_hostname, ""),
    "reject_unknown_hostname": (reject_unknown_helo_hostname, ""),
    "reject_unknown_sender_domain": (reject_unknown_sender_domain, ""),
    "reject_unknown_recipient_domain": (reject_unknown_recipient_domain, ""),
    "reject_unknown_client_hostname": (reject_unknown_client_hostname, ""),
    "reject_unknown_client": (reject_unknown_client_hostname, ""),
    "reject_unknown_reverse_client_hostname": (reject_unknown_reverse_client_hostname, ""),
}

# The client hostname checks read the name smtpd looked up at connect time;
# these look the HELO name or the address's domain up now.
DNS_RESTRICTIONS: frozenset[str] = frozenset({
    "reject_unknown_helo_hostname", "reject_unknown_hostname",
    "reject_unknown_sender_domain", "reject_unknown_recipient_domain",
})
