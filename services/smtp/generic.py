"""Outbound address rewriting with smtp_generic_maps (generic(5)).

A host without a domain of its own in the outside world rewrites its
local addresses into valid ones as mail leaves over SMTP: the envelope
sender and recipients are looked up in smtp_generic_maps (lmtp_generic_maps
in LMTP mode) in generic(5) order, user@domain, user (when the domain is
local), @domain. Header addresses are not rewritten yet.

Interface:
    GenericMaps(cfg, param_name).rewrite(address) -> str
    (a table failure raises pymaster.tables.TableError: the caller defers)
"""

from __future__ import annotations

from pymaster.config import Config
from pymaster.maps import Maps, canonical_lookup


class GenericMaps:
    def __init__(self, cfg: Config, param_name: str) -> None:
        self.cfg = cfg
        self.maps = Maps(cfg, param_name)

    def __bool__(self) -> bool:
        return bool(self.maps)

    def rewrite(self, address: str) -> str:
        """rewrite - ADDRESS as the outside world should see it."""
        if not self.maps or not address:
            return address
        value = canonical_lookup(self.maps, address, self.cfg)
        return value.strip() if value else address
