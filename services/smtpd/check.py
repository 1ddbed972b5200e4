"""smtpd access restrictions: the smtpd_*_restrictions language.

Postfix evaluates restriction lists at each SMTP stage (SMTPD_ACCESS_README).
With smtpd_delay_reject = yes (the default) the client, helo and sender lists
run at RCPT time, then smtpd_relay_restrictions, then
smtpd_recipient_restrictions, then the implicit reject_unlisted_recipient
(smtpd_reject_unlisted_recipient). In one list the first restriction that
decides wins: PERMIT ends that list (the next list still runs), REJECT or
DEFER ends the whole check with a reply.

A restriction is a function in RESTRICTIONS: (Checker, Context, argument) ->
Verdict | None (None: no decision, go on). The language grows by adding
entries there; access map actions (OK, REJECT, DEFER, NNN text, DUNNO, or a
restriction name) are evaluated by the same table.

Interface:
    Checker(cfg, netlist=None, resolver=None, rewriter=None, maps=None)
    Context(client_name, client_addr, helo, sender, recipient)
    checker.check_client/helo/sender(ctx)  -> reply | None   (delay_reject = no)
    checker.check_rcpt(ctx) -> reply | None                 every list due at RCPT
    checker.check_data(ctx) -> reply | None
    checker.check_unlisted(ctx) -> reply | None             VRFY
    ConfigurationError(text)                                 a bad restriction list
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, NamedTuple

from pymaster import log
from pymaster.config import Config

PERMIT, REJECT, DEFER = "permit", "reject", "defer"
NESTING_LIMIT = 10
_DSN_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
_CODE_RE = re.compile(r"^([45]\d\d)(?:\s+(.*))?$", re.S)


class ConfigurationError(Exception):
    """An unknown restriction or a missing table argument."""


class Verdict(NamedTuple):
    action: str                 # PERMIT, REJECT or DEFER
    reply: str = ""             # the full SMTP reply for REJECT/DEFER


@dataclass
class Context:
    client_name: str
    client_addr: str
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    sasl_username: str = ""
    stage: str = "RCPT"         # the list being evaluated: CLIENT HELO SENDER RCPT DATA


# The subject of a reply at each stage: "<x@y>: Recipient address rejected: ..."
_SUBJECTS = {
    "CLIENT": ("client", "Client host rejected"),
    "HELO": ("helo", "Helo command rejected"),
    "SENDER": ("sender", "Sender address rejected"),
    "RCPT": ("recipient", "Recipient address rejected"),
    "DATA": ("data", "Data command rejected"),
}


def _subject(ctx: Context) -> tuple[str, str]:
    """_subject - ("<what>", "Xxx rejected") for the list being evaluated."""
    kind, label = _SUBJECTS[ctx.stage]
    if kind == "client":
        what = f"{ctx.client_name}[{ctx.client_addr}]"
    elif kind == "helo":
        what = ctx.helo or ""
    elif kind == "sender":
        what = ctx.sender or ""
    elif kind == "recipient":
        what = ctx.recipient or ""
    else:
        what = "DATA"
    return f"<{what}>", label


def make_reply(code: int, dsn: str, text: str) -> str:
    return f"{code} {dsn} {text}"


def default_dsn(code: int) -> str:
    return "4.7.1" if 400 <= code < 500 else "5.7.1"


def rejection(ctx: Context, code: int, text: str, dsn: str = "") -> Verdict:
    """rejection - a REJECT/DEFER verdict worded for the stage: "<x>: Label: text"."""
    what, label = _subject(ctx)
    action = DEFER if code < 500 else REJECT
    return Verdict(action, make_reply(code, dsn or default_dsn(code), f"{what}: {label}: {text}"))


def temporary_failure(address: str) -> Verdict:
    return Verdict(DEFER, f"451 4.3.0 <{address}>: Temporary lookup failure")


class Checker:
    """The restriction lists of one smtpd configuration, ready to evaluate."""

    def __init__(self, cfg: Config, netlist=None, resolver=None, rewriter=None,
                 maps: Callable[[list[str]], object] | None = None) -> None:
        self.cfg = cfg
        self._netlist = netlist
        self._resolver = resolver
        self._rewriter = rewriter
        self._maps_factory = maps
        self._maps_cache: dict[tuple, object] = {}
        self.lists = {name: parse_restrictions(cfg.list(name), name) for name in (
            "smtpd_client_restrictions", "smtpd_helo_restrictions",
            "smtpd_sender_restrictions", "smtpd_relay_restrictions",
            "smtpd_recipient_restrictions", "smtpd_data_restrictions")}

    # -- collaborators, built on first use ----------------------------------
    @property
    def mynetworks(self):
        if self._netlist is None:
            from services.smtpd.netlist import NetList
            self._netlist = NetList.from_param(self.cfg, "mynetworks")
        return self._netlist

    @property
    def resolver(self):
        if self._resolver is None:
            from pymaster.resolve import resolver_for
            self._resolver = resolver_for(self.cfg)
        return self._resolver

    def canonical(self, address: str) -> str:
        if self._rewriter is None:
            from pymaster.rewrite import rewriter_for
            self._rewriter = rewriter_for(self.cfg)
        return self._rewriter.canonicalize(address, "local")

    def maps(self, specs: list[str]):
        """maps - a Postfix list of tables (pymaster.maps.Maps), cached per process."""
        key = tuple(specs)
        if key not in self._maps_cache:
            if self._maps_factory is not None:
                self._maps_cache[key] = self._maps_factory(list(specs))
            else:
                from pymaster.maps import Maps
                self._maps_cache[key] = Maps.from_specs(list(specs), self.cfg)
        return self._maps_cache[key]

    def param_maps(self, name: str):
        return self.maps(self.cfg.list(name))

    def prepare(self) -> None:
        """prepare - import and open everything now, before the jail closes the door."""
        import pymaster.maps  # noqa: F401  (imported here: not reachable after chroot)
        self.resolver, self.mynetworks, self.canonical("postmaster")
        for name in ("virtual_alias_maps", "local_recipient_maps", "relay_recipient_maps",
                     "virtual_mailbox_maps"):
            self.param_maps(name)
        for steps in self.lists.values():
            for _, arg in steps:
                if arg is not None:
                    self.maps([arg])

    # -- the stages ---------------------------------------------------------
    def _run(self, name: str, ctx: Context, stage: str) -> Verdict | None:
        ctx.stage = stage
        return evaluate(self, ctx, self.lists[name])

    def _first_refusal(self, ctx: Context, steps: list[tuple[str, str]]) -> str | None:
        for name, stage in steps:
            verdict = self._run(name, ctx, stage)
            if verdict is not None and verdict.action != PERMIT:
                return verdict.reply
        return None

    def check_client(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_client_restrictions", "CLIENT")])

    def check_helo(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_helo_restrictions", "HELO")])

    def check_sender(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_sender_restrictions", "SENDER")])

    def check_rcpt(self, ctx: Context, delayed: bool = True) -> str | None:
        """check_rcpt - every list due at RCPT time, in Postfix's order."""
        steps = [("smtpd_client_restrictions", "CLIENT"), ("smtpd_helo_restrictions", "HELO"),
                 ("smtpd_sender_restrictions", "SENDER")] if delayed else []
        steps += [("smtpd_relay_restrictions", "RCPT"), ("smtpd_recipient_restrictions", "RCPT")]
        reply = self._first_refusal(ctx, steps)
        if reply is None and self.cfg.bool("smtpd_reject_unlisted_recipient"):
            ctx.stage = "RCPT"
            verdict = reject_unlisted_recipient(self, ctx, None)
            reply = verdict.reply if verdict is not None else None
        return reply

    def check_data(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_data_restrictions", "DATA")])

    def check_unlisted(self, ctx: Context) -> str | None:
        ctx.stage = "RCPT"
        verdict = reject_unlisted_recipient(self, ctx, None)
        return verdict.reply if verdict is not None else None


# -- parsing and evaluating lists ---------------------------------------------

Restriction = Callable[[Checker, Context, "str | None"], "Verdict | None"]


def parse_restrictions(words: list[str], where: str) -> list[tuple[str, str | None]]:
    """parse_restrictions - [(name, table argument or None)], checked up front."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(words):
        name = words[i].lower() if ":" not in words[i] else words[i]
        if name not in RESTRICTIONS:
            raise ConfigurationError(f"{where}: unknown restriction: \"{words[i]}\"")
        _, takes_arg = RESTRICTIONS[name]
        arg = None
        if takes_arg:
            if i + 1 >= len(words):
                raise ConfigurationError(f"{where}: restriction \"{name}\" needs a table argument")
            arg = words[i + 1]
            i += 1
        out.append((name, arg))
        i += 1
    return out


def evaluate(checker: Checker, ctx: Context, steps, depth: int = 0) -> Verdict | None:
    """evaluate - the first decision of a parsed list, or None when none decides."""
    for name, arg in steps:
        func, _ = RESTRICTIONS[name]
        verdict = func(checker, ctx, arg) if depth < NESTING_LIMIT else None
        if verdict is not None:
            return verdict
    return None


# -- generic restrictions -------------------------------------------------------

def permit(checker: Checker, ctx: Context, arg) -> Verdict:
    return Verdict(PERMIT)


def reject(checker: Checker, ctx: Context, arg) -> Verdict:
    return rejection(ctx, checker.cfg.int("reject_code"), "Access denied")


def defer(checker: Checker, ctx: Context, arg) -> Verdict:
    return rejection(ctx, checker.cfg.int("defer_code"), "Access denied")


def permit_mynetworks(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if checker.mynetworks.match(ctx.client_addr, ctx.client_name) else None


def permit_sasl_authenticated(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if ctx.sasl_username else None


# -- destination restrictions -------------------------------------------------

def _relay_allowed(checker: Checker, address: str) -> bool | None:
    """_relay_allowed - may mail to ADDRESS pass? None on a table failure."""
    from pymaster import resolve
    res = checker.resolver.resolve(checker.canonical(address))
    if resolve.FAIL in res.flags:
        return None
    if res.address_class == resolve.DEFAULT:
        return False
    # "user@other"@ours, user%other@ours, other!user@ours never relay.
    return not (res.routed and not res.final)


def _unauth_destination(checker: Checker, ctx: Context, code: int) -> Verdict | None:
    if not ctx.recipient:
        return None
    allowed = _relay_allowed(checker, ctx.recipient)
    if allowed is None:
        return temporary_failure(ctx.recipient)
    if allowed:
        return None
    return Verdict(REJECT if code >= 500 else DEFER,
                   make_reply(code, default_dsn(code), f"<{ctx.recipient}>: Relay access denied"))


def reject_unauth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unauth_destination(checker, ctx, checker.cfg.int("relay_domains_reject_code"))


def defer_unauth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    # Postfix answers 454 here: a temporary form of the relay refusal.
    return _unauth_destination(checker, ctx, 454)


def permit_auth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    if ctx.recipient and _relay_allowed(checker, ctx.recipient):
        return Verdict(PERMIT)
    return None


# -- unknown recipients ---------------------------------------------------------

# address class -> (the table parameter, its reply code parameter, its name in replies)
_RECIPIENT_TABLES = {
    "local": ("local_recipient_maps", "unknown_local_recipient_reject_code",
              "local recipient table"),
    "virtual_alias": ("virtual_alias_maps", "unknown_virtual_alias_reject_code",
                      "virtual alias table"),
    "virtual_mailbox": ("virtual_mailbox_maps", "unknown_virtual_mailbox_reject_code",
                        "virtual mailbox table"),
    "relay": ("relay_recipient_maps", "unknown_relay_recipient_reject_code",
              "relay recipient table"),
}


def _listed(checker: Checker, maps, address: str) -> bool:
    """_listed - ADDRESS is in MAPS in virtual(5) order (user@domain, user, @domain)."""
    from pymaster.maps import virtual_lookup
    return virtual_lookup(maps, address, checker.cfg) is not None


def unknown_user(checker: Checker, ctx: Context, code_param: str, label: str) -> Verdict:
    """unknown_user - `550 5.1.1 <x@y>: Recipient address rejected: User unknown in …`."""
    code = checker.cfg.int(code_param)
    text = f"User unknown in {label}" if checker.cfg.bool("show_user_unknown_table_name") \
        else "User unknown"
    return Verdict(REJECT if code >= 500 else DEFER,
                   make_reply(code, "5.1.1" if code >= 500 else "4.1.1",
                              f"<{ctx.recipient}>: Recipient address rejected: {text}"))


def reject_unlisted_recipient(checker: Checker, ctx: Context, arg) -> Verdict | None:
    """reject_unlisted_recipient - the recipient must exist in its class's table."""
    from pymaster import resolve
    from pymaster.tables import TableError
    if not ctx.recipient:
        return None
    res = checker.resolver.resolve(checker.canonical(ctx.recipient))
    if resolve.FAIL in res.flags:
        return temporary_failure(ctx.recipient)
    table = _RECIPIENT_TABLES.get(res.address_class)
    if table is None:
        return None
    param, code_param, label = table
    address = res.recipient
    try:
        virtual = checker.param_maps("virtual_alias_maps")
        if virtual and _listed(checker, virtual, address):
            return None
        maps = checker.param_maps(param)
        if res.address_class in ("local", "relay") and not maps:
            return None
        if res.address_class != "virtual_alias" and maps and _listed(checker, maps, address):
            return None
        return unknown_user(checker, ctx, code_param, label)
    except TableError as e:
        log.warning(f"{param} lookup problem for {ctx.recipient}: {e}")
        return temporary_failure(ctx.recipient)
    return None


# -- access maps ---------------------------------------------------------------

def _access(checker: Checker, ctx: Context, spec: str, query, kind: str,
            what: str) -> Verdict | None:
    """_access - search table SPEC in access(5) order for QUERY; act on the answer."""
    from pymaster.maps import access_lookup
    from pymaster.tables import TableError
    try:
        maps = checker.maps([spec])
        if kind == "null":
            value = maps.lookup(query)
        else:
            value = access_lookup(maps, query, kind)
    except TableError as e:
        log.warning(f"{spec}: table lookup problem for {what}: {e}")
        return temporary_failure(what)
    if value is None:
        return None
    return access_action(checker, ctx, value.strip(), spec)


def access_action(checker: Checker, ctx: Context, value: str, spec: str) -> Verdict | None:
    """access_action - what an access(5) table's right-hand side means."""
    word, _, text = value.partition(" ")
    upper = word.upper()
    text = text.strip()
    if upper == "OK" or value.isdigit():
        return Verdict(PERMIT)
    if upper == "DUNNO":
        return None
    if upper == "REJECT":
        return rejection(ctx, checker.cfg.int("access_map_reject_code"), text or "Access denied")
    if upper == "DEFER":
        return rejection(ctx, checker.cfg.int("access_map_defer_code"), text or "Access denied")
    m = _CODE_RE.match(value)
    if m:
        code, text = int(m.group(1)), (m.group(2) or "").strip()
        dsn = ""
        d = _DSN_RE.match(text)
        if d and d.group(1)[0] == str(code)[0]:
            dsn, text = d.group(1), text[d.end():]
        return rejection(ctx, code, text or "Access denied", dsn)
    try:
        return evaluate(checker, ctx, parse_restrictions(value.split(), spec), depth=1)
    except ConfigurationError:
        log.warning(f"access table {spec}: unknown action: {value}")
        return Verdict(DEFER, "451 4.3.5 Server configuration error")


def check_client_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    return _access(checker, ctx, spec, (ctx.client_name, ctx.client_addr), "client",
                   ctx.client_addr)


def check_helo_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if not ctx.helo:
        return None
    return _access(checker, ctx, spec, ctx.helo.lower(), "helo", ctx.helo)


def check_sender_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if ctx.sender is None:
        return None
    if ctx.sender == "":
        return _access(checker, ctx, spec, checker.cfg.get("smtpd_null_access_lookup_key"),
                       "null", "<>")
    return _access(checker, ctx, spec, ctx.sender, "sender", ctx.sender)


def check_recipient_access(checker: Checker, ctx: Context, spec: str) -> Verdict | None:
    if not ctx.recipient:
        return None
    return _access(checker, ctx, spec, ctx.recipient, "recipient", ctx.recipient)


# name -> (function, takes a table argument)
RESTRICTIONS: dict[str, tuple[Restriction, bool]] = {
    "permit": (permit, False),
    "reject": (reject, False),
    "defer": (defer, False),
    "dunno": (lambda checker, ctx, arg: None, False),
    "permit_mynetworks": (permit_mynetworks, False),
    "permit_sasl_authenticated": (permit_sasl_authenticated, False),
    "reject_unauth_destination": (reject_unauth_destination, False),
    "defer_unauth_destination": (defer_unauth_destination, False),
    "permit_auth_destination": (permit_auth_destination, False),
    "reject_unlisted_recipient": (reject_unlisted_recipient, False),
    "check_client_access": (check_client_access, True),
    "check_helo_access": (check_helo_access, True),
    "check_sender_access": (check_sender_access, True),
    "check_recipient_access": (check_recipient_access, True),
}
