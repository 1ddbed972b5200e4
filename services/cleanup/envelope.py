"""cleanup's envelope stage: sender and recipients, canonical and expanded.

Steps, in the order Postfix's cleanup applies them:
  1. canonicalise (trivial-rewrite, always the "local" context for the
     envelope): `user` -> `user@$myorigin`, bang paths, percent hack
  2. canonical mapping: sender_canonical_maps / recipient_canonical_maps,
     then canonical_maps (canonical(5) lookup order), per canonical_classes;
     here and in step 3 an unmatched address extension is carried over per
     propagate_unmatched_extensions (pymaster.mail.maps does that)
  3. virtual alias expansion of recipients (virtual_alias_maps, recursive,
     bounded by virtual_alias_recursion_limit / virtual_alias_expansion_limit)
  3a. masquerading (masquerade.py) right after each canonical mapping;
     automatic copies (bcc.py): recipient_bcc_maps per recipient before
     its expansion, sender_bcc_maps and always_bcc once per message
  4. duplicate removal: the same recipient with the same original
     recipient, DSN notify and ORCPT is queued once
Steps 2 and 3 are skipped with receive_override_options=no_address_mappings.

The original recipient (orig) is what the client said before any of this,
unless the client passed one; enable_original_recipient=no drops it.

Interface:
    process_sender(state)              rewrites state.sender
    process_recipients(state, rcpts)   appends the processed RCPTS to state.recipients
    Mapper(cfg)                        the canonical and virtual tables of one Config
    mapper_for(cfg) -> Mapper          built once per process and Config
A table that cannot be searched now raises Defer: the client tries again.
"""

from __future__ import annotations

from pymaster.mail import records
from pymaster.mail.addr import parse_address_list
from pymaster.mail.config import Config
from pymaster.mail.maps import Maps, canonical_lookup, virtual_lookup
from pymaster.mail.rewrite import rewriter_for
from pymaster.util import log
from pymaster.util.tables import TableError

from . import bcc
from .masquerade import masquerader_for
from .state import WRITE_ERROR, CleanupState, Defer

CANONICAL_RECURSION = 10   # canonical maps are one-to-one; a loop stops here


class Mapper:
    """The address tables cleanup consults, opened once."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.canonical = self._maps("canonical_maps")
        self.sender_canonical = self._maps("sender_canonical_maps")
        self.recipient_canonical = self._maps("recipient_canonical_maps")
        self.virtual = self._maps("virtual_alias_maps")
        self.canonical_classes = set(cfg.list("canonical_classes"))
        self.sender_classes = set(cfg.list("sender_canonical_classes"))
        self.recipient_classes = set(cfg.list("recipient_canonical_classes"))
        self.recursion_limit = cfg.int("virtual_alias_recursion_limit")
        self.expansion_limit = cfg.int("virtual_alias_expansion_limit")
        self.masquerader = masquerader_for(cfg)

    def _maps(self, name: str):
        if not self.cfg.get(name).strip():
            return None
        return Maps(self.cfg, name)

    # -- canonical(5) -------------------------------------------------------
    def canonical_address(self, addr: str, klass: str) -> str:
        """canonical_address - ADDR after the canonical maps that apply to KLASS
        (envelope_sender, envelope_recipient, header_sender, header_recipient)."""
        if not addr:
            return addr
        sender_side = klass.endswith("sender")
        first, first_classes = ((self.sender_canonical, self.sender_classes) if sender_side
                                else (self.recipient_canonical, self.recipient_classes))
        for maps, classes in ((first, first_classes), (self.canonical, self.canonical_classes)):
            if maps and klass in classes:
                addr = self._map11(maps, addr)
        return self.masquerader.masquerade(addr, klass)

    def _map11(self, maps, addr: str) -> str:
        rewriter = rewriter_for(self.cfg)
        for _ in range(CANONICAL_RECURSION):
            value = canonical_lookup(maps, addr, self.cfg)
            if value is None:
                return addr
            new = rewriter.canonicalize(_first_address(value), "local")
            if new == addr:
                return addr
            addr = new
        log.warning(f"{addr}: canonical mapping loop")
        return addr

    # -- virtual(5) ---------------------------------------------------------
    def expand_virtual(self, addr: str, queue_id: str) -> list[str]:
        """expand_virtual - the addresses ADDR expands to through virtual_alias_maps."""
        if not self.virtual:
            return [addr]
        rewriter = rewriter_for(self.cfg)
        current, final = [(addr, 0)], []
        while current:
            a, depth = current.pop(0)
            value = virtual_lookup(self.virtual, a, self.cfg)
            if value is None:
                final.append(a)
                continue
            if depth >= self.recursion_limit:
                log.warning(f"{queue_id}: unreasonable virtual_alias_maps map nesting "
                            f"for {addr} -- message not accepted, try again later")
                raise Defer(*WRITE_ERROR)
            for target in _split_targets(value):
                target = rewriter.canonicalize(target, "local")
                # An address that maps to itself is delivered, not expanded again.
                if target == a:
                    final.append(target)
                else:
                    current.append((target, depth + 1))
            if len(final) + len(current) > self.expansion_limit:
                log.warning(f"{queue_id}: unreasonable virtual_alias_maps map expansion "
                            f"size for {addr} -- message not accepted, try again later")
                raise Defer(*WRITE_ERROR)
        return final


def _split_targets(value: str) -> list[str]:
    """_split_targets - the addresses of a table value "a@x, b@y"."""
    return [m.address for m in parse_address_list(value)]


def _first_address(value: str) -> str:
    targets = _split_targets(value)
    return targets[0] if targets else value.strip()


def mapper_for(cfg: Config) -> Mapper:
    return cfg.derived(Mapper)


def process_sender(state: CleanupState) -> None:
    """process_sender - the envelope sender, canonical and mapped."""
    _guarded(state, _process_sender)


def process_recipients(state: CleanupState, recipients: list[records.Recipient],
                       copies: bool = True) -> None:
    """process_recipients - RECIPIENTS canonical, mapped and expanded, appended
    to state.recipients, duplicates removed; with COPIES, the recipient_bcc_maps
    copies of each too."""
    _guarded(state, _process_recipients, recipients, copies)


def process_copies(state: CleanupState) -> None:
    """process_copies - the sender_bcc_maps and always_bcc recipients, once."""
    def add(state: CleanupState) -> None:
        extra = bcc.sender_bcc(state) + bcc.always_bcc(state)
        _process_recipients(state, [records.Recipient(a) for a in extra], False)
    _guarded(state, add)


def _guarded(state: CleanupState, func, *args) -> None:
    try:
        func(state, *args)
    except TableError as e:
        log.warning(f"{state.queue_id}: address table lookup problem: {e}"
                    " -- message not accepted, try again later")
        raise Defer(*WRITE_ERROR) from None


def _mapper(state: CleanupState) -> "Mapper | None":
    return None if state.override("no_address_mappings") else mapper_for(state.cfg)


def _process_sender(state: CleanupState) -> None:
    sender = rewriter_for(state.cfg).canonicalize(state.sender, "local")
    mapper = _mapper(state)
    if mapper:
        sender = mapper.canonical_address(sender, "envelope_sender")
    state.sender = sender


def _process_recipients(state: CleanupState, recipients: list[records.Recipient],
                        copies: bool = True) -> None:
    if not recipients:
        # Nothing to add (no extracted recipients, no automatic copies: the
        # usual message), and state.recipients is free of duplicates already.
        return
    rewriter = rewriter_for(state.cfg)
    mapper = _mapper(state)
    keep_orig = state.settings.enable_original_recipient
    out: list[records.Recipient] = list(state.recipients)
    extra: list[str] = []
    for r in recipients:
        orig = (r.orig or r.address) if keep_orig else ""
        addr = rewriter.canonicalize(r.address, "local")
        if mapper:
            addr = mapper.canonical_address(addr, "envelope_recipient")
            if copies:
                extra.extend(bcc.recipient_bcc(state, addr))
            targets = mapper.expand_virtual(addr, state.queue_id)
        else:
            targets = [addr]
        out.extend(records.Recipient(t, orig, r.notify, r.orcpt) for t in targets)
    for addr in extra:
        assert mapper is not None  # extra is filled only where mapper is set
        orig = addr if keep_orig else ""
        out.extend(records.Recipient(t, orig) for t in mapper.expand_virtual(addr, state.queue_id))
    state.recipients = remove_duplicates(out, state.settings.duplicate_filter_limit)


def remove_duplicates(recipients: list[records.Recipient], limit: int) -> list[records.Recipient]:
    """remove_duplicates - each (address, orig, notify, orcpt) once; after LIMIT
    distinct entries the filter stops remembering, as Postfix's does."""
    seen: set[tuple[str, str, str, str]] = set()
    out: list[records.Recipient] = []
    for r in recipients:
        key = (r.address, r.orig, r.notify, r.orcpt)
        if key in seen:
            continue
        if limit <= 0 or len(seen) < limit:
            seen.add(key)
        out.append(r)
    return out
