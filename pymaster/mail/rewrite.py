"""Address canonicalisation: the "rewrite" half of Postfix's trivial-rewrite.

A Rewriter turns what a user or a client wrote into a complete address,
before anything looks the address up. It runs in-process in smtpd, cleanup
and qmgr; nothing here opens a table per message.

Steps, in order (trivial-rewrite(8), postconf(5)):
  1. the empty address stays empty (the null sender `<>`)
  2. an RFC 5321 source route `@a,@b:user@c` is dropped: `user@c`
  3. `swap_bangpath`: `site!user` becomes `user@site` (only without "@")
  4. `allow_percent_hack`: `user%domain` becomes `user@domain` (only without
     "@"). `user%domain@ours` is left alone on purpose: the resolver
     (pymaster.mail.resolve) follows it and flags it as routed, which is what
     keeps reject_unauth_destination from relaying such mail. Stripping the
     local domain here would hide the routing from smtpd.
  5. `append_at_myorigin`: a bare `user` gets `@$myorigin`
  6. `append_dot_mydomain`: `user@host` gets `.$mydomain`
  7. a trailing dot of the domain is dropped: `user@example.com.`

The "remote" context (mail from clients outside local_header_rewrite_clients)
completes addresses with `remote_header_rewrite_domain` instead of
$myorigin/$mydomain, and does not rewrite at all when that is empty.

Interface:
    Rewriter(cfg).canonicalize(addr, context="local") -> str   (internal form)
    rewriter_for(cfg) -> Rewriter                               one per Config
"""

from __future__ import annotations

from pymaster.mail.addr import is_domain_literal, split_address
from pymaster.mail.config import Config

CONTEXTS = ("local", "remote")


class Rewriter:
    """Canonicalise addresses for one configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.myorigin = cfg.get("myorigin").strip().lower()
        self.mydomain = cfg.get("mydomain").strip().lower()
        self.remote_domain = cfg.get("remote_header_rewrite_domain").strip().lower()
        self.append_at = cfg.bool("append_at_myorigin")
        self.append_dot = cfg.bool("append_dot_mydomain")
        self.swap_bang = cfg.bool("swap_bangpath")
        self.percent_hack = cfg.bool("allow_percent_hack")

    def canonicalize(self, addr: str, context: str = "local") -> str:
        """canonicalize - the complete, standard form of internal-form ADDR."""
        if context not in CONTEXTS:
            raise ValueError(f"unknown rewrite context: {context}")
        if not addr:
            return addr
        if context == "remote":
            if not self.remote_domain:
                return addr
            origin = domain = self.remote_domain
        else:
            origin, domain = self.myorigin, self.mydomain
        addr = _strip_source_route(addr)
        addr = self._swap_operators(addr)
        return self._complete(addr, origin, domain)

    def _swap_operators(self, addr: str) -> str:
        """_swap_operators - bang paths and the percent hack into user@domain."""
        if "@" in addr:
            return addr
        if self.swap_bang and "!" in addr:
            site, _, user = addr.partition("!")
            if site and user:
                return f"{user}@{site}"
        if self.percent_hack and "%" in addr:
            user, _, site = addr.rpartition("%")
            if user and site:
                return f"{user}@{site}"
        return addr

    def _complete(self, addr: str, origin: str, mydomain: str) -> str:
        """_complete - append @origin and .mydomain; drop a trailing dot."""
        local, domain = split_address(addr)
        if "@" not in addr:
            return f"{addr}@{origin}" if self.append_at and origin else addr
        if domain.endswith(".") and not domain.endswith(".."):
            domain = domain[:-1]
        if (self.append_dot and mydomain and domain and "." not in domain
                and not is_domain_literal(domain)):
            domain = f"{domain}.{mydomain}"
        return f"{local}@{domain}"


def _strip_source_route(addr: str) -> str:
    """_strip_source_route - `@a,@b:user@c` -> `user@c` (RFC 5321 4.1.2: ignored)."""
    if addr.startswith("@") and ":" in addr:
        return addr.partition(":")[2]
    return addr


def rewriter_for(cfg: Config) -> Rewriter:
    """rewriter_for - the Rewriter of CFG, built once per process and Config."""
    return cfg.derived(Rewriter)
