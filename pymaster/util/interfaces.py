"""The addresses of this host's network interfaces, as the kernel lists them.

Interface:
    interface_addresses() -> list[(address, prefix length or None)]
        every IPv4 and IPv6 address of every interface; the prefix length is
        None where the kernel gives no netmask. Loopback when none is found.
"""

from __future__ import annotations

import ipaddress
import socket

import psutil

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK: list[tuple[IPAddress, int]] = [
    (ipaddress.ip_address("127.0.0.1"), 8), (ipaddress.ip_address("::1"), 128)]


def interface_addresses() -> list[tuple[IPAddress, int | None]]:
    """interface_addresses - (address, prefix length) of each interface address."""
    try:
        interfaces = psutil.net_if_addrs()
    except OSError:     # refused in a restricted container: loopback is always there
        return [(ip, prefix) for ip, prefix in LOOPBACK]
    found: list[tuple[IPAddress, int | None]] = []
    for entries in interfaces.values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                ip = ipaddress.ip_address(entry.address.split("%")[0])
            except ValueError:
                continue
            found.append((ip, _prefix_length(ip, entry.netmask)))
    return found or [(ip, prefix) for ip, prefix in LOOPBACK]


def _prefix_length(ip: IPAddress, netmask: str | None) -> int | None:
    """_prefix_length - the netmask as a prefix length; None when absent or odd."""
    if not netmask:
        return None
    try:
        if ip.version == 4:
            return ipaddress.ip_network(f"0.0.0.0/{netmask}").prefixlen
        return bin(int(ipaddress.ip_address(netmask))).count("1")
    except ValueError:
        return None
