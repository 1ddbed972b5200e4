"""smtpd access restrictions: the smtpd_*_restrictions language.

Postfix evaluates restriction lists at each SMTP stage (SMTPD_ACCESS_README).
With smtpd_delay_reject = yes (the default) the client, helo and sender lists
run at RCPT time, then smtpd_relay_restrictions, then
smtpd_recipient_restrictions, then the implicit reject_unlisted_recipient
(smtpd_reject_unlisted_recipient). In one list the first restriction that
decides wins: PERMIT ends that list (the next list still runs), REJECT or
DEFER ends the whole check with a reply.

A restriction is a function in RESTRICTIONS: (Checker, Context, argument) ->
Verdict | None (None: no decision, go on). The table is assembled from this
module (generic restrictions, relay control, unknown users) and its
siblings: access.py (check_*_access and the access(5) actions), names.py
(host name and address syntax and DNS existence), rbl.py (DNS lists) and
policy.py (check_policy_service). A name in smtpd_restriction_classes is a
restriction too: it evaluates its own list.

Modifiers kept in the Context while one check runs (Postfix's semantics):
  warn_if_reject   the next restriction logs `reject_warning:` instead of refusing
  defer_if_reject  a later REJECT becomes a 450 deferral
  defer_if_permit  a later (explicit or implicit) PERMIT becomes a deferral
soft_bounce turns every 5xx refusal into a 4xx one. Actions that only
cleanup can carry out (HOLD, DISCARD, FILTER, REDIRECT, BCC) and PREPEND
headers are collected in ctx.actions; smtpd hands them to cleanup.

Interface:
    Checker(cfg, netlist=None, resolver=None, rewriter=None, maps=None)
    Context(client_name, client_addr, helo, sender, recipient, ...)
    checker.check_client/helo/sender(ctx) -> reply | None   (delay_reject = no)
    checker.check_rcpt(ctx, delayed=True) -> reply | None  every list due at RCPT
    checker.check_data(ctx), check_end_of_data(ctx), check_etrn(ctx) -> reply | None
    checker.check_unlisted(ctx) -> reply | None            VRFY
    checker.open_tables()  build the collaborators, open every table the lists name
    checker.uses_dns       a check may ask DNS (pre_jail then loads dnspython)
    checker.blocks         a check may wait on the network: run it off the event loop
    checker.blocks_at(stage, ctx)  may this check (a check_* method name) wait, for CTX?
    DNS_RESTRICTIONS, NETWORK_RESTRICTIONS                  the names that do either
    ConfigurationError(text)                                a bad restriction list
"""

from __future__ import annotations

import re
from typing import Callable

from pymaster.mail import domains, resolve, verify_client
from pymaster.mail.config import Config
from pymaster.mail.maps import Maps, virtual_lookup
from pymaster.mail.params import MATCH_LISTS
from pymaster.mail.rewrite import rewriter_for
from pymaster.util import log
from pymaster.util.strings import split_list
from pymaster.util.tables import TableError, open_table
from services.smtpd import access, auth, names, policy, rbl, replies
from services.smtpd.netlist import NetList
from services.smtpd.verdict import (
    DEFER,
    PERMIT,
    REJECT,
    ConfigurationError,
    Context,
    Verdict,
    coded,
    default_dsn,
    log_action,
    make_reply,
    rejection,
    soften,
    subject,
    temporary_failure,
)

NESTING_LIMIT = 10

LISTS = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
         "smtpd_sender_restrictions", "smtpd_relay_restrictions",
         "smtpd_recipient_restrictions", "smtpd_data_restrictions",
         "smtpd_end_of_data_restrictions", "smtpd_etrn_restrictions")


# check method -> the restriction lists it runs (check_rcpt: all that may be due)
STAGE_LISTS = {
    "check_client": ("smtpd_client_restrictions",),
    "check_helo": ("smtpd_helo_restrictions",),
    "check_sender": ("smtpd_sender_restrictions",),
    "check_rcpt": ("smtpd_client_restrictions", "smtpd_helo_restrictions",
                   "smtpd_sender_restrictions", "smtpd_relay_restrictions",
                   "smtpd_recipient_restrictions"),
    "check_data": ("smtpd_data_restrictions",),
    "check_end_of_data": ("smtpd_end_of_data_restrictions",),
    "check_etrn": ("smtpd_etrn_restrictions",),
}

# Restrictions that read no table except through their own argument (the
# destination ones read the domain lists, which _shared_remote covers).
SELF_CONTAINED = frozenset((
    "permit", "reject", "defer", "dunno", "defer_if_permit", "defer_if_reject",
    "warn_if_reject", "permit_mynetworks", "permit_inet_interfaces",
    "permit_sasl_authenticated", "reject_unauth_pipelining",
    "reject_multi_recipient_bounce", "reject_non_fqdn_helo_hostname",
    "reject_invalid_helo_hostname", "reject_non_fqdn_sender",
    "reject_non_fqdn_recipient"))

# address class -> the parameter naming its recipient table (the unlisted checks)
CLASS_TABLE_PARAMS = {
    "local": "local_recipient_maps", "virtual_mailbox": "virtual_mailbox_maps",
    "relay": "relay_recipient_maps",
}

# Every table a restriction may read through a parameter rather than its argument.
SHARED_TABLE_PARAMS = (
    "virtual_alias_maps", "local_recipient_maps", "relay_recipient_maps",
    "virtual_mailbox_maps", "rbl_reply_maps", "relay_clientcerts",
    "smtpd_sender_login_maps", "transport_maps", "relocated_maps",
    "sender_dependent_default_transport_maps", "sender_dependent_relayhost_maps",
    "canonical_maps")

# The domain lists behind address classes and the destination restrictions.
DOMAIN_LIST_PARAMS = ("mydestination", "relay_domains", "virtual_alias_domains",
                      "virtual_mailbox_domains")


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
        self._param_lists: dict[str, list[str]] = {}    # param_list's, not to be changed
        self._policy_clients: dict[str, object] = {}
        self._blocks: bool | None = None
        self._stage_blocks: dict[str, bool] = {}
        self._remote_class_set: set[str] | None = None
        self.class_names = [c for c in cfg.list("smtpd_restriction_classes")]
        # Classes may name each other, so every name is known before any is parsed.
        self.classes: dict[str, list] = {}
        for name in self.class_names:
            self.classes[name] = self.parse(cfg.list(name), name)
        self.lists = {name: self.parse(cfg.list(name), name) for name in LISTS}

    # -- collaborators, built on first use ----------------------------------
    @property
    def mynetworks(self):
        if self._netlist is None:
            self._netlist = NetList.from_param(self.cfg, "mynetworks")
        return self._netlist

    @property
    def resolver(self):
        if self._resolver is None:
            self._resolver = resolve.resolver_for(self.cfg)
        return self._resolver

    def canonical(self, address: str) -> str:
        if self._rewriter is None:
            self._rewriter = rewriter_for(self.cfg)
        return self._rewriter.canonicalize(address, "local")

    def maps(self, specs: list[str]):
        """maps - a Postfix list of tables (pymaster.mail.maps.Maps), cached per process."""
        key = tuple(specs)
        if key not in self._maps_cache:
            if self._maps_factory is not None:
                self._maps_cache[key] = self._maps_factory(list(specs))
            else:
                self._maps_cache[key] = Maps.from_specs(list(specs), self.cfg)
        return self._maps_cache[key]

    def param_maps(self, name: str):
        return self.maps(self.param_list(name))

    def param_list(self, name: str) -> list[str]:
        """param_list - cfg.list(NAME), split once per process: a Checker reads
        its configuration once (its restriction lists are parsed at start).
        A match list with /file entries is asked each time: the files are
        read then."""
        words = self._param_lists.get(name)
        if words is None:
            words = self.cfg.list(name)
            if name not in MATCH_LISTS or \
                    not any(w.startswith("/") for w in split_list(self.cfg.get(name))):
                self._param_lists[name] = words
        return words

    def policy_client(self, endpoint: str):
        """policy_client - one connection manager per policy server, shared by sessions."""
        if endpoint not in self._policy_clients:
            self._policy_clients[endpoint] = policy.PolicyClient.from_config(self.cfg, endpoint)
        return self._policy_clients[endpoint]

    def open_tables(self) -> None:
        """open_tables - build the resolver, rewriter and mynetworks, and open every
        table the restriction lists and the recipient checks name."""
        self.resolver, self.mynetworks, self.canonical("postmaster")
        for name in ("virtual_alias_maps", "local_recipient_maps", "relay_recipient_maps",
                     "virtual_mailbox_maps", "rbl_reply_maps", "relay_clientcerts",
                     "smtpd_sender_login_maps"):
            self.param_maps(name)
        for steps in [*self.lists.values(), *self.classes.values()]:
            for name, arg in steps:
                if arg is not None and RESTRICTIONS[name][1] == "table":
                    self.maps([arg])

    def steps(self):
        """steps - every (name, argument) of every list and class."""
        for steps in [*self.lists.values(), *self.classes.values()]:
            yield from steps

    @property
    def uses_dns(self) -> bool:
        """uses_dns - may a check ask DNS?  An access table's answer may name
        any restriction (access(5)), so a list with one counts as asking."""
        return any(name in DNS_RESTRICTIONS or name in access.RESTRICTIONS
                   for name, _ in self.steps())

    @property
    def blocks(self) -> bool:
        """blocks - may a check wait on the network (DNS, a policy server, a remote table)?

        Such checks run in a thread so that the other sessions go on; the rest
        (tables in memory or on disk, address and network lists) run inline,
        which is several times cheaper. An access table's answer naming a DNS
        restriction is not foreseen here: that lookup runs inline.
        Asked per check, so answered once, after open_tables()."""
        if self._blocks is None:
            self._blocks = any(name in NETWORK_RESTRICTIONS for name, _ in self.steps()) or \
                any(table.remote for maps in self._maps_cache.values()
                    for table in getattr(maps, "tables", ()))
        return self._blocks

    def runs_nothing(self, stage: str) -> bool:
        """runs_nothing - is every list the check STAGE (a check_* method name)
        runs empty?  Such a check refuses nothing and adds no action, so the
        session skips it and the context it would build (smtpd_data_restrictions
        and smtpd_end_of_data_restrictions are empty by default). The check at
        RCPT always has work: the unlisted recipient and sender checks."""
        lists = STAGE_LISTS.get(stage)
        if lists is None or stage == "check_rcpt":
            return False
        return not any(self.lists.get(name) for name in lists)

    def blocks_at(self, stage: str, ctx: Context) -> bool:
        """blocks_at - may the check STAGE (a check_* method name) wait on the
        network for CTX?  Only the lists that stage runs and the tables they
        read count, so that a remote table read at one stage (the default
        local_recipient_maps is proxy:unix:passwd.byname) does not send every
        other stage through a thread: a thread hop per check was the largest
        single cost of an smtpd session. At RCPT the implicit unlisted checks
        read the table of the address's class only, so a remote class table
        counts only for an address of that class."""
        if not self.blocks:
            return False
        lists = STAGE_LISTS.get(stage)
        if lists is None:
            return True
        if stage not in self._stage_blocks:
            self._stage_blocks[stage] = self._lists_block(lists)
        if self._stage_blocks[stage]:
            return True
        if stage != "check_rcpt":
            return False
        remote = self._remote_classes()
        if not remote:
            return False
        addresses = []
        if self.cfg.bool("smtpd_reject_unlisted_recipient"):
            addresses.append(ctx.recipient)
        if self.cfg.bool("smtpd_reject_unlisted_sender"):
            addresses.append(ctx.sender)
        return any(self._class_of(a) in remote | {""} for a in addresses if a)

    def _lists_block(self, lists: tuple[str, ...]) -> bool:
        """_lists_block - may the restriction LISTS wait: a network restriction,
        a remote table named as an argument, or one read through a parameter
        (only restrictions known to read none are spared that look)."""
        steps = [step for name in lists for step in self.lists.get(name, [])]
        if any(name in self.classes for name, _ in steps):
            steps = list(self.steps())      # a class may name any other
        # At RCPT the implicit unlisted checks read virtual_alias_maps, the
        # resolver's tables and the domain lists whatever the lists say.
        shared = lists == STAGE_LISTS["check_rcpt"]
        for name, arg in steps:
            if name in NETWORK_RESTRICTIONS:
                return True
            if arg is not None and RESTRICTIONS.get(name, (None, ""))[1] == "table":
                if self._remote_specs([arg]):
                    return True
            elif name not in SELF_CONTAINED and name not in self.classes:
                shared = True
        return shared and self._shared_remote()

    def _remote_specs(self, specs: list[str]) -> bool:
        """_remote_specs - does one of these table specs wait on another process?"""
        return any(open_table(spec, self.cfg).remote for spec in specs if ":" in spec)

    def _shared_remote(self) -> bool:
        """_shared_remote - may a table read through a parameter wait?  The
        address class tables are left to _remote_classes."""
        params = [p for p in SHARED_TABLE_PARAMS if p not in CLASS_TABLE_PARAMS.values()]
        specs = [spec for p in params for spec in self.cfg.list(p)]
        for name in DOMAIN_LIST_PARAMS:
            specs += [e.lstrip("!") for e in self.cfg.list(name) if not e.startswith("/")]
        return self._remote_specs(specs)

    def _remote_classes(self) -> set[str]:
        """_remote_classes - the address classes whose recipient table may wait."""
        if self._remote_class_set is None:
            self._remote_class_set = {cls for cls, param in CLASS_TABLE_PARAMS.items()
                                      if self._remote_specs(self.cfg.list(param))}
        return self._remote_class_set

    def _class_of(self, address: str) -> str:
        """_class_of - the address class ADDRESS resolves to, as far as its
        domain says; "" (counted as remote) for a routed address or a failure."""
        local, _, domain = self.canonical(address).rpartition("@")
        if any(c in local for c in "@%!"):
            return ""
        try:
            return self.resolver.domain_class(domain)
        except Exception:
            return ""

    # -- parsing ------------------------------------------------------------
    def parse(self, words: list[str], where: str) -> list[tuple[str, str | None]]:
        """parse - [(name, argument or None)], checked up front."""
        out: list[tuple[str, str | None]] = []
        i = 0
        while i < len(words):
            word = words[i]
            name = word if word in self.class_names else word.lower()
            if name in self.class_names:
                out.append((name, None))
                i += 1
                continue
            if name not in RESTRICTIONS:
                raise ConfigurationError(f"{where}: unknown restriction: \"{word}\"")
            arg = None
            if RESTRICTIONS[name][1]:
                if i + 1 >= len(words):
                    raise ConfigurationError(
                        f"{where}: restriction \"{name}\" needs a table argument"
                        if RESTRICTIONS[name][1] == "table" else
                        f"{where}: restriction \"{name}\" needs an argument")
                arg = words[i + 1]
                i += 1
            out.append((name, arg))
            i += 1
        return out

    # -- evaluating ---------------------------------------------------------
    def evaluate(self, ctx: Context, steps, depth: int = 0) -> Verdict | None:
        """evaluate - the first decision of a parsed list, or None when none decides."""
        if depth > NESTING_LIMIT:
            log.warning("restriction class nesting too deep; giving up")
            return Verdict(DEFER, replies.ERR_CONFIGURATION)
        for name, arg in steps:
            if name in self.classes:
                verdict = self.evaluate(ctx, self.classes[name], depth + 1)
            else:
                warn, ctx.warn_next = ctx.warn_next, False
                verdict = RESTRICTIONS[name][0](self, ctx, arg)
                if name == "warn_if_reject":
                    continue
                verdict = self._modified(ctx, verdict, warn)
            if verdict is not None:
                return verdict
        return None

    def evaluate_words(self, ctx: Context, words: list[str], where: str) -> Verdict | None:
        """evaluate_words - a restriction list given as text (an access map's answer)."""
        return self.evaluate(ctx, self.parse(words, where), depth=1)

    def _modified(self, ctx: Context, verdict: Verdict | None, warn: bool) -> Verdict | None:
        """_modified - warn_if_reject and defer_if_reject applied to one verdict."""
        if verdict is None or verdict.action == PERMIT:
            return verdict
        if warn:
            log_action(ctx, "reject_warning", verdict.reply)
            return None
        if ctx.defer_if_reject and verdict.action == REJECT:
            return Verdict(DEFER, soften(verdict.reply, self.cfg.int("defer_code")))
        return verdict

    def _run(self, name: str, ctx: Context, stage: str) -> Verdict | None:
        ctx.stage = stage
        return self.evaluate(ctx, self.lists[name])

    def _first_refusal(self, ctx: Context, steps: list[tuple[str, str]]) -> str | None:
        """_first_refusal - run the lists in order; the reply that ends the check, if any."""
        ctx.defer_if_permit = ""
        for name, stage in steps:
            ctx.warn_next = ctx.defer_if_reject = False
            verdict = self._run(name, ctx, stage)
            if verdict is not None and verdict.action != PERMIT:
                return self.final(verdict.reply)
        if ctx.defer_if_permit:
            return self.final(ctx.defer_if_permit)
        return None

    def final(self, reply: str) -> str:
        """final - soft_bounce: no refusal is permanent while it is on."""
        return soften(reply) if self.cfg.bool("soft_bounce") else reply

    # -- the stages ---------------------------------------------------------
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
            reply = self.check_unlisted(ctx)
        if reply is None and self.cfg.bool("smtpd_reject_unlisted_sender") and ctx.sender:
            ctx.stage = "SENDER"
            verdict = reject_unlisted_sender(self, ctx, None)
            reply = self.final(verdict.reply) if verdict is not None else None
        return reply

    def check_data(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_data_restrictions", "DATA")])

    def check_end_of_data(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_end_of_data_restrictions", "EOD")])

    def check_etrn(self, ctx: Context) -> str | None:
        return self._first_refusal(ctx, [("smtpd_etrn_restrictions", "ETRN")])

    def check_unlisted(self, ctx: Context) -> str | None:
        ctx.stage = "RCPT"
        verdict = reject_unlisted_recipient(self, ctx, None)
        return self.final(verdict.reply) if verdict is not None else None


# -- generic restrictions -------------------------------------------------------

def permit(checker: Checker, ctx: Context, arg) -> Verdict:
    return Verdict(PERMIT)


def reject(checker: Checker, ctx: Context, arg) -> Verdict:
    return rejection(ctx, checker.cfg.int("reject_code"), replies.ACCESS_DENIED_TEXT)


def defer(checker: Checker, ctx: Context, arg) -> Verdict:
    return rejection(ctx, checker.cfg.int("defer_code"), replies.ACCESS_DENIED_TEXT)


def defer_if_permit(checker: Checker, ctx: Context, arg) -> None:
    if not ctx.defer_if_permit:
        ctx.defer_if_permit = rejection(ctx, checker.cfg.int("defer_code"),
                                         replies.ACCESS_DENIED_TEXT).reply
    return None


def defer_if_reject(checker: Checker, ctx: Context, arg) -> None:
    ctx.defer_if_reject = True
    return None


def warn_if_reject(checker: Checker, ctx: Context, arg) -> None:
    ctx.warn_next = True
    return None


def permit_mynetworks(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if checker.mynetworks.match(ctx.client_addr, ctx.client_name) else None


def permit_inet_interfaces(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if ctx.client_addr in domains.interface_addresses(checker.cfg) else None


def permit_sasl_authenticated(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if ctx.sasl_username else None


def permit_tls_clientcerts(checker: Checker, ctx: Context, arg) -> Verdict | None:
    """permit_tls_clientcerts - a verified certificate whose fingerprint is listed.

    A hook until smtpd speaks TLS: no session has a certificate yet."""
    if not ctx.ccert_verified or not ctx.ccert_fingerprint:
        return None
    try:
        maps = checker.param_maps("relay_clientcerts")
        found = maps and (maps.lookup(ctx.ccert_fingerprint) is not None or
                          maps.lookup(ctx.ccert_pubkey_fingerprint) is not None)
    except TableError:
        return temporary_failure(ctx.client_addr)
    return Verdict(PERMIT) if found else None


def permit_tls_all_clientcerts(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return Verdict(PERMIT) if ctx.ccert_verified else None


def reject_unauth_pipelining(checker: Checker, ctx: Context, arg) -> Verdict | None:
    """reject_unauth_pipelining - the client sent commands before it could know it may."""
    if not ctx.pipelining_violation:
        return None
    what, label = subject(ctx)
    return coded(503, "5.5.0", replies.PIPELINING_TEXT.format(what=what, label=label))


def reject_multi_recipient_bounce(checker: Checker, ctx: Context, arg) -> Verdict | None:
    """reject_multi_recipient_bounce - null sender with more than one recipient."""
    if ctx.sender != "":
        return None
    many = ctx.recipient_count > 1 if ctx.stage in ("DATA", "EOD") else ctx.recipient_count > 0
    if not many:
        return None
    code = checker.cfg.int("multi_recipient_bounce_reject_code")
    what, label = subject(ctx)
    return coded(code, "5.5.3" if code >= 500 else "4.5.3",
                 replies.MULTI_RECIPIENT_BOUNCE_TEXT.format(what=what, label=label))


def _unverified(checker: Checker, ctx: Context, address: str | None, kind: str,
                label: str, dsn: str) -> Verdict | None:
    """_unverified - reject_unverified_sender/recipient: ask the verify service
    (pymaster.mail.verify_client), polling while a probe is out, and refuse what
    is not known to be deliverable. KIND is sender or recipient."""
    if not address:
        return None
    cfg = checker.cfg
    try:
        status, why = verify_client.client_for(cfg).poll(
            address, cfg.int("address_verify_poll_count"), cfg.time("address_verify_poll_delay"))
    except verify_client.VerifyError as e:
        log.warning(f"{cfg.get('address_verify_service_name')} service failure: {e}")
        return _verify_tempfail(checker, ctx, kind, make_reply(
            450, dsn, f"<{address}>: {label} rejected: address verification problem"))
    if status == verify_client.OK:
        return None
    code = cfg.int(f"unverified_{kind}_reject_code" if status == verify_client.BOUNCE
                   else f"unverified_{kind}_defer_code")
    why = cfg.get(f"unverified_{kind}_reject_reason").strip() or why
    if code < 400:
        return None
    if code < 500:
        return _verify_tempfail(checker, ctx, kind, make_reply(
            code, dsn, f"<{address}>: {label} rejected: unverified address: {why[:250]}"))
    return coded(code, "5" + dsn[1:],
                 f"<{address}>: {label} rejected: undeliverable address: {why}")


def _verify_tempfail(checker: Checker, ctx: Context, kind: str, reply: str) -> Verdict | None:
    """_verify_tempfail - unverified_*_tempfail_action: `defer` refuses now,
    `defer_if_permit` (the default) only if the mail would otherwise pass."""
    action = checker.cfg.get(f"unverified_{kind}_tempfail_action").strip().lower()
    if action == "defer":
        return Verdict(DEFER, reply)
    if not ctx.defer_if_permit:
        ctx.defer_if_permit = reply
    return None


def reject_unverified_recipient(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unverified(checker, ctx, ctx.recipient, "recipient", "Recipient address", "4.1.1")


def reject_unverified_sender(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unverified(checker, ctx, ctx.sender, "sender", "Sender address", "4.1.7")


# -- destination restrictions -------------------------------------------------

def _relay_allowed(checker: Checker, address: str) -> bool | None:
    """_relay_allowed - may mail to ADDRESS pass? None on a table failure."""
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
    return coded(code, default_dsn(code), replies.RELAY_DENIED_TEXT.format(recipient=ctx.recipient))


def reject_unauth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    return _unauth_destination(checker, ctx, checker.cfg.int("relay_domains_reject_code"))


def defer_unauth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    # Postfix answers 454 here: a temporary form of the relay refusal.
    return _unauth_destination(checker, ctx, 454)


def permit_auth_destination(checker: Checker, ctx: Context, arg) -> Verdict | None:
    if ctx.recipient and _relay_allowed(checker, ctx.recipient):
        return Verdict(PERMIT)
    return None


# -- unknown recipients and senders ----------------------------------------------

# "4.3.2 text": the enhanced status code that starts an error transport's text.
_DSN_TEXT_RE = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")

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
    return virtual_lookup(maps, address, checker.cfg) is not None


def unknown_user(checker: Checker, ctx: Context, code_param: str, label: str,
                 address: str, what: str = "Recipient", dsn_detail: str = "1") -> Verdict:
    """unknown_user - `550 5.1.1 <x@y>: Recipient address rejected: User unknown in …`."""
    code = checker.cfg.int(code_param)
    reason = replies.USER_UNKNOWN_IN_REASON.format(table=label) \
        if checker.cfg.bool("show_user_unknown_table_name") else replies.USER_UNKNOWN_REASON
    return coded(code, f"{'5' if code >= 500 else '4'}.1.{dsn_detail}",
                 replies.USER_UNKNOWN_TEXT.format(address=address, what=what, reason=reason))


def _unlisted(checker: Checker, ctx: Context, address: str, what: str,
              dsn_detail: str) -> Verdict | None:
    """_unlisted - ADDRESS must exist in the table of its address class."""
    res = checker.resolver.resolve(checker.canonical(address))
    if resolve.FAIL in res.flags:
        return temporary_failure(address)
    try:
        # A virtual alias is fine whatever its domain resolves to (a virtual
        # alias domain resolves to the error transport): look there first.
        virtual = checker.param_maps("virtual_alias_maps")
        if virtual and _listed(checker, virtual, res.recipient):
            return None
    except TableError as e:
        log.warning(f"virtual_alias_maps lookup problem for {address}: {e}")
        return temporary_failure(address)
    table = _RECIPIENT_TABLES.get(res.address_class)
    if res.address_class != "virtual_alias":     # that one has its own reply code
        moved = error_transport(checker, res, address, what, dsn_detail)
        if moved is not None:
            return moved
    if table is None:
        return None
    param, code_param, label = table
    try:
        maps = checker.param_maps(param)
        if res.address_class in ("local", "relay") and not maps:
            return None
        if res.address_class != "virtual_alias" and maps and \
                _listed(checker, maps, res.recipient):
            return None
        return unknown_user(checker, ctx, code_param, label, address, what, dsn_detail)
    except TableError as e:
        log.warning(f"{param} lookup problem for {address}: {e}")
        return temporary_failure(address)


def error_transport(checker: Checker, res, address: str, what: str,
                    dsn_detail: str) -> Verdict | None:
    """error_transport - an address that resolves to the error transport (a
    transport_maps `error:` entry, a relocated_maps user) is refused now with
    that transport's text, as Postfix's smtpd does:
    `550 5.1.2 <x@y>: Recipient address rejected: host gone`.

    The reply is always 550 with a 5.X.Y code ("error:4.3.2 …" gives 5.3.2);
    without a text it is "5.1.1 … Address is undeliverable". A recipient
    that is a virtual alias is never refused here (the caller looks first)."""
    if res.transport != "error" and resolve.RELOCATED not in res.flags:
        return None
    dsn, text = f"5.1.{dsn_detail}", res.nexthop.strip()
    if text.lower() == address.rpartition("@")[2].lower():
        text = ""       # "error:" alone: the resolver's default next hop is no text
    m = _DSN_TEXT_RE.match(text)
    if m:
        dsn, text = "5" + m.group(1)[1:], text[m.end():].strip()
    return coded(550, dsn, f"<{address}>: {what} address rejected: "
                           f"{text or replies.ADDRESS_UNDELIVERABLE_TEXT}")


def reject_unlisted_recipient(checker: Checker, ctx: Context, arg) -> Verdict | None:
    if not ctx.recipient:
        return None
    return _unlisted(checker, ctx, ctx.recipient, "Recipient", "1")


def reject_unlisted_sender(checker: Checker, ctx: Context, arg) -> Verdict | None:
    if not ctx.sender:
        return None
    return _unlisted(checker, ctx, ctx.sender, "Sender", "0")


# name -> (function, argument kind: "" none, "table", "domain", "service")
RESTRICTIONS: dict[str, tuple[Callable, str]] = {
    "permit": (permit, ""),
    "reject": (reject, ""),
    "defer": (defer, ""),
    "dunno": (lambda checker, ctx, arg: None, ""),
    "defer_if_permit": (defer_if_permit, ""),
    "defer_if_reject": (defer_if_reject, ""),
    "warn_if_reject": (warn_if_reject, ""),
    "permit_mynetworks": (permit_mynetworks, ""),
    "permit_inet_interfaces": (permit_inet_interfaces, ""),
    "permit_sasl_authenticated": (permit_sasl_authenticated, ""),
    "permit_tls_clientcerts": (permit_tls_clientcerts, ""),
    "permit_tls_all_clientcerts": (permit_tls_all_clientcerts, ""),
    "reject_unauth_pipelining": (reject_unauth_pipelining, ""),
    "reject_multi_recipient_bounce": (reject_multi_recipient_bounce, ""),
    "reject_unauth_destination": (reject_unauth_destination, ""),
    "defer_unauth_destination": (defer_unauth_destination, ""),
    "permit_auth_destination": (permit_auth_destination, ""),
    "reject_unlisted_recipient": (reject_unlisted_recipient, ""),
    "reject_unlisted_sender": (reject_unlisted_sender, ""),
    "reject_unverified_recipient": (reject_unverified_recipient, ""),
    "reject_unverified_sender": (reject_unverified_sender, ""),
}

# The restrictions of this module and of its siblings, in one table.
for _module in (access, names, rbl, policy, auth):
    RESTRICTIONS.update(_module.RESTRICTIONS)

DNS_RESTRICTIONS = access.DNS_RESTRICTIONS | names.DNS_RESTRICTIONS | rbl.DNS_RESTRICTIONS
# reject_unverified_* wait for the verify service's probe (address_verify_poll_*).
NETWORK_RESTRICTIONS = DNS_RESTRICTIONS | frozenset(policy.RESTRICTIONS) | \
    frozenset(("reject_unverified_recipient", "reject_unverified_sender"))
