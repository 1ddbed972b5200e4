"""The haproxy PROXY protocol, version 1 (postscreen_upstream_proxy_protocol = haproxy).

A proxy in front of postscreen opens each connection with one line that
names the real client and the address it connected to:

    PROXY TCP4 192.0.2.1 198.51.100.2 51234 25\\r\\n
    PROXY TCP6 2001:db8::1 2001:db8::2 51234 25\\r\\n
    PROXY UNKNOWN ...\\r\\n          (a health check: the socket's own addresses)

The line is at most 107 bytes. Nothing after it is read here: what the
client sends next stays in the buffer for the tests.

Interface:
    parse(line: bytes) -> (client_addr, client_port, server_addr, server_port) | None
                          None for UNKNOWN; raises ProxyError when malformed
    MAX_LINE, ProxyError
"""

from __future__ import annotations

import ipaddress

MAX_LINE = 107


class ProxyError(Exception):
    """The PROXY line is missing or malformed."""


def _address(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyError(f"bad address: \"{text}\"") from None
    if ip.version != version:
        raise ProxyError(f"bad address: \"{text}\"")
    return str(ip)


def _port(text: str) -> str:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ProxyError(f"bad port: \"{text}\"")
    return str(int(text))


def parse(line: bytes) -> tuple[str, str, str, str] | None:
    """parse - the addresses of one PROXY line (without its CRLF)."""
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("non-ASCII proxy header") from None
    if not words or words[0] != "PROXY":
        raise ProxyError("missing protocol header")
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return None
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyError("bad or missing protocol type")
    version = 4 if words[1] == "TCP4" else 6
    return (_address(words[2], version), _port(words[4]),
            _address(words[3], version), _port(words[5]))
