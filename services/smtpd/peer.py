"""Who the SMTP client is: its address, port and verified host name.

Postfix names a client NAME[ADDR] in every log line. NAME is the reverse
DNS name only when the forward lookup of that name gives the address back
(a forward-confirmed name); otherwise it is "unknown". Lookups use the
system resolver (so /etc/hosts counts: 127.0.0.1 is localhost) through the
event loop's getnameinfo/getaddrinfo, off the loop's thread and bounded by a
short timeout, so a slow DNS server never stalls the other sessions of this
process.

Interface:
    Peer(name, addr, port)   .namaddr -> "NAME[ADDR]" (or "NAME[ADDR]:PORT" with
                             .log_port, smtpd_client_port_logging), .rfc_addr (IPv6:… form)
    await lookup_peer(sockaddr, enabled=True) -> Peer
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

from pymaster.mail.addr import is_valid_hostname

LOOKUP_TIMEOUT = 5.0
UNKNOWN = "unknown"


@dataclass
class Peer:
    name: str
    addr: str
    port: int = 0
    reverse_name: str = ""      # the unverified reverse name (XCLIENT REVERSE_NAME)
    log_port: bool = False      # smtpd_client_port_logging: log lines name the port too

    @property
    def namaddr(self) -> str:
        if self.log_port:
            return f"{self.name}[{self.addr}]:{self.port}"
        return f"{self.name}[{self.addr}]"

    @property
    def rfc_addr(self) -> str:
        """rfc_addr - the address as a Received: header writes it (RFC 5321 4.1.3)."""
        return f"IPv6:{self.addr}" if ":" in self.addr else self.addr


def normalize_address(addr: str) -> str:
    """normalize_address - ::ffff:192.0.2.1 -> 192.0.2.1; other forms unchanged."""
    if ":" not in addr and "%" not in addr:
        # IPv4 as the socket layer writes it (or not an address): ipaddress
        # would give the same text back or refuse it, so skip the parse.
        return addr
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


async def _verified_name(loop: asyncio.AbstractEventLoop, addr: str) -> str:
    """_verified_name - the forward-confirmed reverse name of ADDR, or "unknown".

    The loop's own resolver calls (uvloop: libuv's thread pool, in C) ask the
    same system resolver as socket.getnameinfo/getaddrinfo would; a Python
    thread per connection cost about a twentieth of smtpd's CPU.
    NI_NUMERICSERV: only the host name is wanted; without it the C library
    reads /etc/services for the name of port 0, half of the lookup's CPU."""
    try:
        name, _ = await loop.getnameinfo((addr, 0), socket.NI_NAMEREQD | socket.NI_NUMERICSERV)
    except (OSError, UnicodeError):
        return UNKNOWN
    name = name.rstrip(".").lower()
    if not is_valid_hostname(name):
        return UNKNOWN
    try:
        infos = await loop.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return UNKNOWN
    if any(normalize_address(str(info[4][0])) == addr for info in infos):
        return name
    return UNKNOWN


async def lookup_peer(sockaddr: tuple, enabled: bool = True) -> Peer:
    """lookup_peer - a Peer for the remote end of a connection."""
    if not sockaddr or not isinstance(sockaddr, tuple):
        return Peer("localhost", "127.0.0.1", 0)   # a UNIX-domain client is local
    addr = normalize_address(sockaddr[0])
    port = int(sockaddr[1])
    if not enabled:
        return Peer(UNKNOWN, addr, port)
    loop = asyncio.get_running_loop()
    try:
        # asyncio.timeout, not wait_for: no extra task per connection.
        async with asyncio.timeout(LOOKUP_TIMEOUT):
            name = await _verified_name(loop, addr)
    except asyncio.TimeoutError:
        name = UNKNOWN
    return Peer(name, addr, port)
