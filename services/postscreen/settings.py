"""postscreen's configuration, read once from main.cf at start-up.

`postscreen_dnsbl_sites` entries are `domain[=filter][*weight]`: a client
listed by a site (an A record matching the filter, any when there is none)
scores the weight (1 when none is given; negative for an allow list).
The same domain may appear more than once with different filters.

Interface:
    Settings.from_config(cfg) -> Settings     raises ValueError for a bad setting
    Site(domain, filter_text, weight) .matches(answer)
    ACTIONS
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from pymaster.mail import tlsutil
from pymaster.mail.config import Config
from pymaster.util.dnsbl import parse_filter
from pymaster.util.strings import split_list

ACTIONS = ("ignore", "enforce", "drop")
_SITE_RE = re.compile(r"^([^=*\s]+)(?:=([^*\s]+))?(?:\*(-?\d+))?$")


@dataclass
class Site:
    domain: str
    filter_text: str
    weight: int
    matches: Callable[[str], bool] = field(repr=False, default=lambda a: True)


def parse_site(text: str) -> Site:
    """parse_site - one postscreen_dnsbl_sites entry."""
    m = _SITE_RE.match(text.strip())
    if not m:
        raise ValueError(f"malformed postscreen_dnsbl_sites entry: \"{text}\"")
    domain, filt, weight = m.group(1).lower().rstrip("."), m.group(2) or "", m.group(3)
    site = Site(domain, filt, int(weight) if weight is not None else 1)
    if filt:
        site.matches = parse_filter(filt)
    return site


def _action(cfg: Config, name: str) -> str:
    value = cfg.get(name).strip().lower()
    if value not in ACTIONS:
        raise ValueError(f"unknown {name} value: \"{value}\"")
    return value


def _tls_level(cfg: Config) -> str:
    """_tls_level - none, may or encrypt (postscreen_tls_security_level)."""
    try:
        level = tlsutil.legacy_level(cfg, "postscreen")
    except tlsutil.TlsError as e:
        raise ValueError(str(e)) from None
    return level if level in ("none", "may", "encrypt") else "may"


@dataclass
class Settings:
    access_list: list[str]
    denylist_action: str
    greet_wait: float
    greet_banner: str
    greet_action: str
    greet_ttl: int
    sites: list[Site]
    dnsbl_threshold: int
    dnsbl_allowlist_threshold: int
    dnsbl_action: str
    dnsbl_reply_map: str
    dnsbl_timeout: float
    dnsbl_ttl: int
    dnsbl_min_ttl: int
    pipelining_enable: bool
    pipelining_action: str
    pipelining_ttl: int
    non_smtp_enable: bool
    non_smtp_action: str
    non_smtp_ttl: int
    bare_newline_enable: bool
    bare_newline_action: str
    bare_newline_ttl: int
    forbidden_commands: list[str]
    command_count_limit: int
    command_time_limit: float
    helo_required: bool
    disable_vrfy: bool
    banner: str
    hostname: str
    size_limit: int
    cache_map: str
    cache_retention: int
    cache_cleanup_interval: int
    proxy_protocol: str
    proxy_timeout: float
    smtpd_service: str
    respectful: bool
    tls_level: str
    tlsproxy_service: str
    discard_ehlo: list[str]

    @classmethod
    def from_config(cls, cfg: Config) -> "Settings":
        t = cfg.time
        return cls(
            access_list=cfg.list("postscreen_access_list"),
            denylist_action=_action(cfg, "postscreen_denylist_action"),
            greet_wait=float(t("postscreen_greet_wait")),
            greet_banner=cfg.get("postscreen_greet_banner"),
            greet_action=_action(cfg, "postscreen_greet_action"),
            greet_ttl=t("postscreen_greet_ttl"),
            sites=[parse_site(s) for s in split_list(cfg.get("postscreen_dnsbl_sites"))],
            dnsbl_threshold=cfg.int("postscreen_dnsbl_threshold"),
            dnsbl_allowlist_threshold=cfg.int("postscreen_dnsbl_allowlist_threshold"),
            dnsbl_action=_action(cfg, "postscreen_dnsbl_action"),
            dnsbl_reply_map=cfg.get("postscreen_dnsbl_reply_map").strip(),
            dnsbl_timeout=float(t("postscreen_dnsbl_timeout")),
            dnsbl_ttl=t("postscreen_dnsbl_max_ttl"),
            dnsbl_min_ttl=t("postscreen_dnsbl_min_ttl"),
            pipelining_enable=cfg.bool("postscreen_pipelining_enable"),
            pipelining_action=_action(cfg, "postscreen_pipelining_action"),
            pipelining_ttl=t("postscreen_pipelining_ttl"),
            non_smtp_enable=cfg.bool("postscreen_non_smtp_command_enable"),
            non_smtp_action=_action(cfg, "postscreen_non_smtp_command_action"),
            non_smtp_ttl=t("postscreen_non_smtp_command_ttl"),
            bare_newline_enable=cfg.bool("postscreen_bare_newline_enable"),
            bare_newline_action=_action(cfg, "postscreen_bare_newline_action"),
            bare_newline_ttl=t("postscreen_bare_newline_ttl"),
            forbidden_commands=split_list(cfg.get("postscreen_forbidden_commands")),
            command_count_limit=cfg.int("postscreen_command_count_limit"),
            command_time_limit=float(t("postscreen_command_time_limit")),
            helo_required=cfg.bool("postscreen_helo_required"),
            disable_vrfy=cfg.bool("postscreen_disable_vrfy_command"),
            banner=cfg.get("smtpd_banner"),
            hostname=cfg.get("myhostname"),
            size_limit=cfg.size("message_size_limit"),
            cache_map=cfg.get("postscreen_cache_map").strip(),
            cache_retention=t("postscreen_cache_retention_time"),
            cache_cleanup_interval=t("postscreen_cache_cleanup_interval"),
            proxy_protocol=cfg.get("postscreen_upstream_proxy_protocol").strip().lower(),
            proxy_timeout=float(t("postscreen_upstream_proxy_timeout")),
            smtpd_service=cfg.get("smtpd_service_name"),
            respectful=cfg.bool("respectful_logging"),
            tls_level=_tls_level(cfg),
            tlsproxy_service=cfg.get("tlsproxy_service_name"),
            discard_ehlo=[k.lower() for k in
                          split_list(cfg.get("postscreen_discard_ehlo_keywords"))],
        )

    @property
    def deep_tests(self) -> bool:
        """deep_tests - any test after the 220 greeting is enabled."""
        return self.pipelining_enable or self.non_smtp_enable or self.bare_newline_enable
