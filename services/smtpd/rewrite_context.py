"""Whose message headers cleanup rewrites: local_header_rewrite_clients.

Postfix rewrites addresses in message headers (appending @$myorigin,
.$mydomain, canonical maps, masquerading) only for mail from "local"
clients; headers of other clients are left alone, or completed with
remote_header_rewrite_domain when that is set (cleanup decides that part).
smtpd names the context in the cleanup request as `rewrite_context`.

local_header_rewrite_clients is a list of these (postconf(5)):
    permit_inet_interfaces      the client is one of our interface addresses
    permit_mynetworks           the client matches $mynetworks
    permit_sasl_authenticated   the client logged in with SMTP AUTH
    permit_tls_clientcerts      a verified client certificate listed in relay_clientcerts
    permit_tls_all_clientcerts  any verified client certificate
    check_address_map type:table  the client address is in the table (a value
                                  other than REJECT/DUNNO-like words means local)
The first that matches makes the client local; none: remote.

Interface:
    header_rewrite_context(checker, ctx) -> "local" | "remote"
    learn_interface_addresses(cfg)   looks up (and keeps) this host's interface addresses
"""

from __future__ import annotations

from pymaster.mail.config import Config
from pymaster.mail.domains import interface_addresses
from pymaster.mail.maps import access_lookup
from pymaster.util import log
from pymaster.util.tables import TableError
from services.smtpd.check import RESTRICTIONS

LOCAL = "local"
REMOTE = "remote"
_REFUSING = ("REJECT", "DEFER", "DUNNO", "4", "5")


def learn_interface_addresses(cfg: Config) -> None:
    """learn_interface_addresses - this host's addresses, looked up once."""
    _interface_addresses(cfg)


def _interface_addresses(cfg: Config) -> set[str]:
    return cfg.derived(interface_addresses)


def header_rewrite_context(checker, ctx) -> str:
    """header_rewrite_context - "local" when the client matches the list."""
    if checker is None:
        return REMOTE
    words = checker.param_list("local_header_rewrite_clients")
    i = 0
    while i < len(words):
        word = words[i].lower()
        if word == "check_address_map" and i + 1 < len(words):
            if _address_map_permits(checker, words[i + 1], ctx.client_addr):
                return LOCAL
            i += 2
            continue
        if _permits(checker, word, ctx):
            return LOCAL
        i += 1
    return REMOTE


def _permits(checker, word: str, ctx) -> bool:
    if word == "permit_inet_interfaces":
        return ctx.client_addr in _interface_addresses(checker.cfg)
    if word in ("permit_mynetworks", "permit_sasl_authenticated",
                "permit_tls_clientcerts", "permit_tls_all_clientcerts"):
        return RESTRICTIONS[word][0](checker, ctx, None) is not None
    log.warning(f"unknown local_header_rewrite_clients restriction: {word}")
    return False


def _address_map_permits(checker, spec: str, client_addr: str) -> bool:
    try:
        value = access_lookup(checker.maps([spec]), client_addr, "client_address")
    except TableError as e:
        log.warning(f"local_header_rewrite_clients: {spec}: {e}")
        return False
    return value is not None and not value.strip().upper().startswith(_REFUSING)
