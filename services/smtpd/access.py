"""Access maps in smtpd restrictions: check_*_access and what access(5) answers mean.

A table is searched in access(5) order (pymaster.mail.maps.access_lookup: the
address, its domain and parents, the client name then its address and
networks) and its answer is one of
    OK, all digits         permit
    REJECT [text]          access_map_reject_code, "Access denied" unless TEXT
    DEFER [text]           access_map_defer_code
    4NN text, 5NN text     that reply (an enhanced status code may follow)
    DEFER_IF_REJECT/_PERMIT [text]
    DUNNO                  no decision
    HOLD, DISCARD, FILTER, REDIRECT, BCC [text]  for cleanup (ctx.actions), logged
    PREPEND header         a header smtpd adds to the message
    INFO, WARN text        logged only
    a restriction list or a class name, evaluated in place
check_*_mx_access and check_*_ns_access search the names and addresses of
the MX or DNS servers of a domain; OK is not allowed there (it would let a
spammer whitelist himself by naming a trusted MX).

Interface:
    RESTRICTIONS   the check_*_access entries for check.py's table
    DNS_RESTRICTIONS   the names among them that ask DNS (the MX/NS checks)
    access_action(checker, ctx, value, spec, permit_ok=True) -> Verdict | None
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymaster.mail.addr import split_address
from pymaster.mail.maps import access_lookup
from pymaster.util import log
from pymaster.util.tables import TableError, TableUnavailable
from services.smtpd import lazy, replies
from services.smtpd.verdict import (
    CODE_RE,
    DEFER,
    DSN_RE,
    PERMIT,
    ConfigurationError,
    Context,
    Verdict,
    log_action,
    rejection,
    subject,
    temporary_failure,
)

if TYPE_CHECKING:       # check.py imports this module to build its table
    from services.smtpd.check import Checker

_STAGE_OF = {"client": "CLIENT", "client_name": "CLIENT", "helo": "HELO", "sender": "SENDER",
             "recipient": "RCPT"}
# Actions cleanup carries out, as Postfix logs them ("triggers HOLD action").
_CLEANUP_ACTIONS = ("HOLD", "DISCARD", "FILTER", "REDIRECT", "BCC")


def _lookup(checker: Checker, spec: str, query, kind: str):
    maps = checker.maps([spec])
    if kind == "null":
        return maps.lookup(query)
    return access_lookup(maps, query, kind)


def _access(checker: Checker, ctx: Context, spec: str, query, kind: str,
            what: str, permit_ok: bool = True) -> Verdict | None:
    """_access - search table SPEC in access(5) order for QUERY; act on the answer."""
    try:
        value = _lookup(checker, spec, query, kind)
    except TableUnavailable as e:
        # As Postfix: the table's own line, then the lookup, then a 451 4.3.5
        # worded for the stage (a configuration error, not a passing failure).
        log.warning(e.warning)
        log.warning(f'{spec} lookup error for "{what}"')
        return rejection(ctx, 451, replies.CONFIGURATION_ERROR_TEXT, "4.3.5")
    except TableError as e:
        log.warning(f"{spec}: table lookup problem for {what}: {e}")
        return temporary_failure(what)
    if value is None:
        return None
    # The reply names what the table was searched for, whatever list it is in.
    stage, ctx.stage = ctx.stage, _STAGE_OF.get(kind, ctx.stage)
    try:
        return access_action(checker, ctx, value.strip(), spec, permit_ok)
    finally:
        ctx.stage = stage


def access_action(checker: Checker, ctx: Context, value: str, spec: str,
                  permit_ok: bool = True) -> Verdict | None:
    """access_action - what an access(5) table's right-hand side means."""
    word, _, text = value.partition(" ")
    upper, text = word.upper(), text.strip()
    cfg = checker.cfg
    if upper == "OK" or value.isdigit():
        if not permit_ok:
            log.warning(f"access table {spec}: with check_*_mx_access or check_*_ns_access "
                        f"action OK is not allowed; treated as DUNNO")
            return None
        return Verdict(PERMIT)
    if upper == "DUNNO":
        return None
    if upper == "REJECT":
        return _worded(ctx, cfg.int("access_map_reject_code"), text)
    if upper == "DEFER":
        return _worded(ctx, cfg.int("access_map_defer_code"), text)
    if upper == "DEFER_IF_REJECT":
        ctx.defer_if_reject = True
        return None
    if upper == "DEFER_IF_PERMIT":
        if not ctx.defer_if_permit:
            ctx.defer_if_permit = _worded(ctx, cfg.int("access_map_defer_code"), text).reply
        return None
    if upper in _CLEANUP_ACTIONS or upper in ("PREPEND", "INFO", "WARN"):
        return _side_action(ctx, upper, text, spec)
    m = CODE_RE.match(value)
    if m:
        return _numeric(ctx, int(m.group(1)), (m.group(2) or "").strip())
    try:
        return checker.evaluate_words(ctx, value.replace(",", " ").split(), spec)
    except ConfigurationError:
        log.warning(f"access table {spec}: unknown action: {value}")
        return Verdict(DEFER, replies.ERR_CONFIGURATION)


def _numeric(ctx: Context, code: int, text: str) -> Verdict:
    return _worded(ctx, code, text)


def _worded(ctx: Context, code: int, text: str) -> Verdict:
    """_worded - a refusal whose TEXT may start with an enhanced status code of the
    same class ("DEFER_IF_PERMIT 4.2.0 Greylisted" -> 450 4.2.0 ...: Greylisted)."""
    dsn = ""
    d = DSN_RE.match(text)
    if d and d.group(1)[0] == str(code)[0]:
        dsn, text = d.group(1), text[d.end():]
    return rejection(ctx, code, text or replies.ACCESS_DENIED_TEXT, dsn)


def _side_action(ctx: Context, action: str, text: str, spec: str) -> Verdict | None:
    """_side_action - HOLD, DISCARD, FILTER, REDIRECT, BCC, PREPEND, INFO, WARN."""
    what, label = subject(ctx)
    if action in ("FILTER", "REDIRECT", "BCC", "PREPEND", "WARN", "INFO") and not text:
        log.warning(f"access table {spec}: {action} needs an argument; ignored")
        return None
    if action == "PREPEND":
        ctx.actions.append({"action": "PREPEND", "text": text})
        return None
    if action in ("INFO", "WARN"):
        log_action(ctx, action.lower(), f"{what}: {label} {text}")
        return None
    if action in ("HOLD", "DISCARD"):
        logged = f"{what}: {label} {text}" if text else \
            f"{what}: {label} triggers {action} action"
    else:
        logged = f"{what}: {label} triggers {action} {text}"
    log_action(ctx, action.lower(), logged)
    ctx.actions.append({"action": action, "text": text})
    # DISCARD claims delivery, so nothing after it matters (access(5)).
    return Verdict(PERMIT) if action == "DISCARD" else None


# -- the restrictions -------------------------------------------------------------

def check_client_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    return _access(checker, ctx, spec, (ctx.client_name, ctx.client_addr), "client",
                   ctx.client_addr)


def check_reverse_client_hostname_access(checker: Checker, ctx: Context,
                                         spec: str) -> Verdict | None:
    name = ctx.reverse_client_name
    if not name or name == "unknown":
        return None
    return _access(checker, ctx, spec, name, "client_name", name)


def check_helo_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if not ctx.helo:
        return None
    return _access(checker, ctx, spec, ctx.helo.lower().rstrip("."), "helo", ctx.helo)


def check_sender_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if ctx.sender is None:
        return None
    if ctx.sender == "":
        stage, ctx.stage = ctx.stage, "SENDER"
        try:
            return _access(checker, ctx, spec, checker.cfg.get("smtpd_null_access_lookup_key"),
                           "null", "<>")
        finally:
            ctx.stage = stage
    return _access(checker, ctx, spec, ctx.sender, "sender", ctx.sender)


def check_recipient_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if not ctx.recipient:
        return None
    return _access(checker, ctx, spec, ctx.recipient, "recipient", ctx.recipient)


def check_sasl_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if not ctx.sasl_username:
        return None
    return _access(checker, ctx, spec, ctx.sasl_username, "null", ctx.sasl_username)


def check_ccert_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    """check_ccert_access - a hook until smtpd has TLS client certificates."""
    for key in (ctx.ccert_fingerprint, ctx.ccert_pubkey_fingerprint):
        if ctx.ccert_verified and key:
            verdict = _access(checker, ctx, spec, key, "null", key)
            if verdict is not None:
                return verdict
    return None


# -- MX and NS hosts ---------------------------------------------------------------

def _domain_of(ctx: Context, which: str) -> str:
    if which == "helo":
        return (ctx.helo or "").rstrip(".").lower()
    address = ctx.sender if which == "sender" else ctx.recipient
    if not address:
        return ""
    return split_address(address)[1].lower()


def _servers(checker: Checker, domain: str, rdtype: str) -> list[str]:
    """_servers - the MX (or NS) host names of DOMAIN; the domain itself when it has no MX."""
    dns = lazy.dns()
    if rdtype == "MX":
        hosts = dns.mx_hosts(checker.cfg, domain)
        return hosts or [domain]
    # NS records sit at the zone apex: walk up until some are found.
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        found = dns.lookup(checker.cfg, ".".join(labels[i:]), "NS")
        if found:
            return [h.lower() for h in found]
    return []


def _server_access(checker: Checker, ctx: Context, spec: str, which: str,
                   rdtype: str) -> Verdict | None:
    """_server_access - check_{helo,sender,recipient}_{mx,ns}_access."""
    dns = lazy.dns()
    domain = _domain_of(ctx, which)
    if not domain or domain.startswith("["):
        return None
    stage, ctx.stage = ctx.stage, {"helo": "HELO", "sender": "SENDER"}.get(which, "RCPT")
    try:
        for host in _servers(checker, domain, rdtype):
            verdict = _access(checker, ctx, spec, host, "domain", host, permit_ok=False)
            if verdict is not None:
                return verdict
            for address in dns.addresses(checker.cfg, host):
                verdict = _access(checker, ctx, spec, address, "client_address", address,
                                  permit_ok=False)
                if verdict is not None:
                    return verdict
    except dns.DnsError as e:
        log.info(f"{rdtype} lookup for {domain}: {e}")
    finally:
        ctx.stage = stage
    return None


def _server_restriction(which: str, rdtype: str):
    def check(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
        return _server_access(checker, ctx, spec, which, rdtype)
    check.__name__ = f"check_{which}_{rdtype.lower()}_access"
    return check


RESTRICTIONS = {
    "check_client_access": (check_client_access, "table"),
    "check_reverse_client_hostname_access": (check_reverse_client_hostname_access, "table"),
    "check_helo_access": (check_helo_access, "table"),
    "check_sender_access": (check_sender_access, "table"),
    "check_recipient_access": (check_recipient_access, "table"),
    "check_sasl_access": (check_sasl_access, "table"),
    "check_ccert_access": (check_ccert_access, "table"),
    **{f"check_{which}_{kind.lower()}_access": (_server_restriction(which, kind), "table")
       for which in ("helo", "sender", "recipient") for kind in ("MX", "NS")},
}

DNS_RESTRICTIONS: frozenset[str] = frozenset(name for name in RESTRICTIONS
                             if name.endswith(("_mx_access", "_ns_access")))
