"""Address masquerading: `user@host.sub.example.com` becomes `user@example.com`.

postconf(5) masquerade_domains: a list of domains, tried in order; the first
that is a parent of the address's domain replaces it. `!domain` excludes a
domain and its subdomains (`!sub.example.com, example.com` leaves
sub.example.com alone and masquerades the rest of example.com). A domain
never masquerades itself.
masquerade_exceptions: local parts (user names, or tables keyed by them)
that are never masqueraded, such as root.
masquerade_classes: where it happens: envelope_sender, envelope_recipient,
header_sender, header_recipient (Postfix's default leaves the envelope
recipient alone, so mail still reaches the host it was meant for).

cleanup applies it after canonical mapping, in each of those places.

Interface:
    Masquerader(cfg) / masquerader_for(cfg)
    Masquerader.masquerade(address, klass) -> str
    masquerade_domain(domain, entries) -> str | None   the pure rule
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pymaster.mail.config import Config
from pymaster.mail.maps import Maps

if TYPE_CHECKING:
    from pymaster.mail.maps import Maps


def masquerade_domain(domain: str, entries: list[str]) -> str | None:
    """masquerade_domain - the domain DOMAIN masquerades as, or None."""
    domain = domain.lower().rstrip(".")
    for entry in entries:
        excluded = entry.startswith("!")
        masq = entry[1:].lower().rstrip(".") if excluded else entry.lower().rstrip(".")
        if not masq:
            continue
        if domain == masq:
            return None
        if domain.endswith("." + masq):
            return None if excluded else masq
    return None


class Masquerader:
    """masquerade_domains, masquerade_exceptions and masquerade_classes of one Config."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.entries = cfg.list("masquerade_domains")
        self.classes = set(cfg.list("masquerade_classes"))
        names = cfg.list("masquerade_exceptions")
        self.exception_names = {n.lower() for n in names if ":" not in n}
        self.exception_tables = [n for n in names if ":" in n]
        self._maps: Maps | None = None

    def __bool__(self) -> bool:
        return bool(self.entries)

    def _excepted(self, local: str) -> bool:
        if local.lower() in self.exception_names:
            return True
        if not self.exception_tables:
            return False
        if self._maps is None:
            self._maps = Maps.from_specs(self.exception_tables, self.cfg)
        return self._maps.lookup(local.lower()) is not None

    def masquerade(self, address: str, klass: str) -> str:
        """masquerade - ADDRESS with its domain masqueraded when KLASS is listed."""
        if not self.entries or klass not in self.classes:
            return address
        local, at, domain = address.rpartition("@")
        if not at or not domain:
            return address
        new = masquerade_domain(domain, self.entries)
        if new is None or self._excepted(local):
            return address
        return f"{local}@{new}"


def masquerader_for(cfg: Config) -> Masquerader:
    return cfg.derived(Masquerader)
