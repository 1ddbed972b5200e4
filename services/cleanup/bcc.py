"""Automatic blind copies: always_bcc, sender_bcc_maps, recipient_bcc_maps.

postconf(5): always_bcc names one address that receives a copy of every
message; sender_bcc_maps is looked up with the envelope sender and
recipient_bcc_maps with each envelope recipient (canonical(5) key order:
user@domain, user when the domain is local, @domain), after canonical
mapping and masquerading, before virtual alias expansion. A result may list
several addresses. The copies are envelope recipients only: no header shows
them.

To avoid loops they are made only for new mail (smtpd, sendmail/pickup),
never for mail Postfix forwards or generates itself (local's .forward and
alias forwarding, bounces), and not with receive_override_options =
no_address_mappings.

Interface:
    open_bcc_maps(cfg)                 at start, so no lookup opens a table
    bcc_allowed(state) -> bool
    sender_bcc(state) -> list[str]
    recipient_bcc(state, address) -> list[str]
    always_bcc(state) -> list[str]
"""

from __future__ import annotations

from pymaster.mail.addr import parse_address_list
from pymaster.mail.config import Config
from pymaster.mail.maps import Maps, canonical_lookup
from pymaster.mail.rewrite import rewriter_for

from .state import CleanupState

NEW_MAIL_ORIGINS = ("smtpd", "pickup", "qmqpd", "sendmail")


def _maps_of(cfg: Config, name: str) -> Maps | None:
    """_maps_of - the Maps of parameter NAME, opened once per Config (None: empty)."""
    return cfg.derived(_open_maps, name)


def _open_maps(cfg: Config, name: str) -> Maps | None:
    return Maps(cfg, name) if cfg.get(name).strip() else None


def open_bcc_maps(cfg: Config) -> None:
    """open_bcc_maps - open sender_bcc_maps and recipient_bcc_maps now."""
    _maps_of(cfg, "sender_bcc_maps")
    _maps_of(cfg, "recipient_bcc_maps")


def bcc_allowed(state: CleanupState) -> bool:
    return state.origin in NEW_MAIL_ORIGINS and not state.override("no_address_mappings")


def _addresses(state: CleanupState, value: str | None) -> list[str]:
    if not value:
        return []
    rewriter = rewriter_for(state.cfg)
    return [rewriter.canonicalize(box.address, "local")
            for box in parse_address_list(value) if box.address]


def _lookup(state: CleanupState, name: str, address: str) -> list[str]:
    maps = _maps_of(state.cfg, name)
    if not maps or not address or not bcc_allowed(state):
        return []
    return _addresses(state, canonical_lookup(maps, address, state.cfg))


def sender_bcc(state: CleanupState) -> list[str]:
    """sender_bcc - the copies sender_bcc_maps asks for the envelope sender."""
    return _lookup(state, "sender_bcc_maps", state.sender)


def recipient_bcc(state: CleanupState, address: str) -> list[str]:
    """recipient_bcc - the copies recipient_bcc_maps asks for one recipient."""
    return _lookup(state, "recipient_bcc_maps", address)


def always_bcc(state: CleanupState) -> list[str]:
    """always_bcc - the always_bcc address, when set and allowed."""
    if not bcc_allowed(state):
        return []
    return _addresses(state, state.cfg.get("always_bcc").strip())
