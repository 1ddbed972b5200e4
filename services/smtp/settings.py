"""The smtp/lmtp client's parameters, read once per process.

Postfix's smtp(8) program serves both protocols; in LMTP mode it reads the
`lmtp_*` twin of each `smtp_*` parameter (lmtp_connect_timeout,
lmtp_lhlo_name, lmtp_tcp_port ...), falling back to the `smtp_*` name when
the parameter table knows no LMTP twin. Everything here is read once, at
start (the pre-jail step), and never per message.

Interface:
    Settings.from_config(cfg, lmtp) -> Settings
    settings.param(suffix) -> the main.cf name the client reads ("lmtp_mx_session_limit")
    Timeout names: settings.timeouts["connect" | "helo" | "mail" | "rcpt" |
        "data_init" | "data_xfer" | "data_done" | "rset" | "quit" | "xforward"]
        in seconds, None for "no limit" (a zero value)
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from pymaster.mail.config import Config
from pymaster.mail.params import param

TIMEOUTS = ("connect", "helo", "mail", "rcpt", "data_init", "data_xfer",
            "data_done", "rset", "quit", "xforward", "starttls")
# The greeting and EHLO share one limit; LMTP names it after LHLO.
LMTP_NAMES = {"_helo_timeout": "_lhlo_timeout", "_helo_name": "_lhlo_name"}
TLS_REQUIRED = ("encrypt", "verify", "secure", "dane-only", "fingerprint")


@dataclass
class Settings:
    lmtp: bool
    prefix: str
    helo_name: str
    port: int
    host_lookup: list[str]
    disable_dns: bool
    mx_address_limit: int
    mx_session_limit: int
    skip_5xx_greeting: bool
    always_send_ehlo: bool
    never_send_ehlo: bool
    send_xforward: bool
    line_length_limit: int
    cache_on_demand: bool
    cache_destinations: list[str]
    cache_time_limit: float
    reuse_time_limit: float
    reuse_count_limit: int
    fallback_relay: list[str]
    randomize_addresses: bool
    inet_protocols: list[str]
    mime_output_conversion: bool
    tls_level: str
    quote_envelope: bool
    skip_quit_response: bool
    timeouts: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Config, lmtp: bool = False) -> "Settings":
        """from_config - read every parameter the client uses."""
        prefix = "lmtp" if lmtp else "smtp"

        def name(suffix: str) -> str:
            return _param_name(prefix, suffix)

        timeouts = {}
        for t in TIMEOUTS:
            seconds = cfg.time(name(f"_{t}_timeout"))
            timeouts[t] = float(seconds) if seconds > 0 else None
        return cls(
            lmtp=lmtp, prefix=prefix,
            helo_name=cfg.get(name("_helo_name")) or cfg.get("myhostname"),
            port=service_port(cfg.get(name("_tcp_port")), 24 if lmtp else 25),
            host_lookup=[x.lower() for x in cfg.list(name("_host_lookup"))] or ["dns"],
            disable_dns=cfg.bool("disable_dns_lookups"),
            mx_address_limit=cfg.int(name("_mx_address_limit")),
            mx_session_limit=cfg.int(name("_mx_session_limit")),
            skip_5xx_greeting=cfg.bool(name("_skip_5xx_greeting")),
            always_send_ehlo=cfg.bool(name("_always_send_ehlo")),
            never_send_ehlo=cfg.bool(name("_never_send_ehlo")),
            send_xforward=cfg.bool(name("_send_xforward_command")),
            line_length_limit=cfg.int(name("_line_length_limit")),
            cache_on_demand=cfg.bool(name("_connection_cache_on_demand")),
            cache_destinations=cfg.list(name("_connection_cache_destinations")),
            cache_time_limit=float(cfg.time(name("_connection_cache_time_limit"))),
            reuse_time_limit=float(cfg.time(name("_connection_reuse_time_limit"))),
            reuse_count_limit=cfg.int(name("_connection_reuse_count_limit")),
            fallback_relay=cfg.list(name("_fallback_relay")),
            randomize_addresses=cfg.bool(name("_randomize_addresses")),
            inet_protocols=[p.lower() for p in cfg.list("inet_protocols")],
            mime_output_conversion=not cfg.bool("disable_mime_output_conversion"),
            tls_level=cfg.get(name("_tls_security_level")).strip().lower(),
            quote_envelope=cfg.bool(name("_quote_rfc821_envelope")),
            skip_quit_response=cfg.bool(name("_skip_quit_response")),
            timeouts=timeouts,
        )

    def param(self, suffix: str) -> str:
        """param - the parameter name this client reads for SUFFIX ("_generic_maps")."""
        return _param_name(self.prefix, suffix)

    @property
    def tls_required(self) -> bool:
        return self.tls_level in TLS_REQUIRED


def _param_name(prefix: str, suffix: str) -> str:
    """_param_name - PREFIX+SUFFIX when the table knows it, else smtp's name."""
    if prefix == "lmtp":
        candidate = "lmtp" + LMTP_NAMES.get(suffix, suffix)
        if param(candidate) is not None:
            return candidate
    return "smtp" + suffix


def service_port(value: str, default: int) -> int:
    """service_port - a port number or /etc/services name ("smtp" -> 25)."""
    value = (value or "").strip()
    if not value:
        return default
    if value.isdigit():
        return int(value)
    try:
        return socket.getservbyname(value, "tcp")
    except OSError:
        return {"smtp": 25, "lmtp": 24, "submission": 587, "smtps": 465}.get(value, default)
