"""Next-hop destinations of the smtp and lmtp clients.

qmgr gives the client a next hop (from pymaster/mail/resolve.py: the recipient
domain, relayhost, or a transport table's `smtp:[mail.example.com]:587`).
This module turns that text into Destinations:

    example.com              MX lookup, then A/AAAA when there is no MX
    example.com:2525         MX lookup, port 2525
    [mail.example.com]       no MX lookup: the host's own addresses
    [192.0.2.1]:587          an address literal, no lookup at all
    [ipv6:2001:db8::1]       an IPv6 literal
    inet:host:port           LMTP (and SMTP) over TCP, no MX lookup for LMTP
    unix:/path, unix:private/dovecot-lmtp   LMTP over a UNIX-domain socket
    a, [b]:25                a list (relayhost, smtp_fallback_relay): tried in order

Interface:
    Destination(host, port, mx, unix=False, text="")
    parse_destinations(text, default_port, lmtp=False, dns=True) -> list[Destination]
    NextHopError  a syntax error (the caller bounces or defers with it)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from services.smtp.settings import service_port


class NextHopError(ValueError):
    """A next hop that cannot be parsed."""


@dataclass(frozen=True)
class Destination:
    host: str        # a host name, an address, or (unix) a socket path
    port: int
    mx: bool         # look up MX records for host
    unix: bool = False
    text: str = ""   # as written, for log lines and the connection cache

    @property
    def literal(self) -> str | None:
        """literal - the IP address when host is one, else None."""
        try:
            return str(ipaddress.ip_address(self.host))
        except ValueError:
            return None


def parse_destinations(text: str, default_port: int, lmtp: bool = False,
                       dns: bool = True) -> list[Destination]:
    """parse_destinations - every destination in TEXT, in order."""
    items = [t for t in re.split(r"[\s,]+", text.strip()) if t]
    if not items:
        raise NextHopError("empty next-hop destination")
    return [parse_destination(t, default_port, lmtp, dns) for t in items]


def parse_destination(text: str, default_port: int, lmtp: bool = False,
                      dns: bool = True) -> Destination:
    """parse_destination - one `[host]:port`, `inet:…` or `unix:…` destination."""
    rest = text
    kind, sep, tail = text.partition(":")
    if sep and kind.lower() in ("unix", "inet"):
        rest = tail
        if kind.lower() == "unix":
            return _unix(rest, text)
    elif lmtp and text.startswith("/"):
        return _unix(text, text)
    host, port, bracketed = _split_host_port(rest, text)
    port_number = service_port(port, default_port) if port else default_port
    if bracketed and host.lower().startswith("ipv6:"):
        host = host[5:]
    if not host:
        raise NextHopError(f"bad next-hop destination: {text}")
    is_literal = _is_address(host)
    mx = dns and not lmtp and not bracketed and not is_literal
    return Destination(host.rstrip(".") if not is_literal else host, port_number, mx,
                       text=text)


def _unix(path: str, text: str) -> Destination:
    if not path:
        raise NextHopError(f"bad next-hop destination: {text}")
    return Destination(path, 0, False, unix=True, text=text)


def _split_host_port(rest: str, text: str) -> tuple[str, str, bool]:
    """_split_host_port - "[h]:p" / "h:p" / "h" -> (host, port, bracketed)."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise NextHopError(f"bad next-hop destination: {text}")
        host, after = rest[1:end], rest[end + 1:]
        if after and not after.startswith(":"):
            raise NextHopError(f"bad next-hop destination: {text}")
        return host, after[1:], True
    if rest.count(":") > 1:      # a bare IPv6 address: no port
        return rest, "", False
    host, _, port = rest.partition(":")
    return host, port, False


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
