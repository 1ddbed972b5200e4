"""The addresses of this host's network interfaces, as the kernel lists them.

The list comes from one rtnetlink dump (RTM_GETADDR), which is what
getifaddrs(3) reads too: the address of an entry is its IFA_LOCAL (the
peer of a point-to-point link is IFA_ADDRESS then). The kernel dumps every
IPv4 address, then every IPv6 one; the entries are grouped by interface, the
interfaces in the order they first appear, each keeping the kernel's order
inside. That is the list psutil.net_if_addrs() gave, without its cost: about
1.5 MB in every process that reads the configuration.

Interface:
    interface_addresses() -> list[(address, prefix length or None)]
        every IPv4 and IPv6 address of every interface with its prefix
        length (never None from the kernel's dump; the type allows a missing
        netmask). Loopback when none is found.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
LOOPBACK: list[tuple[IPAddress, int]] = [
    (ipaddress.ip_address("127.0.0.1"), 8), (ipaddress.ip_address("::1"), 128)]

# rtnetlink(7): the request and the replies of an address dump.
NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFADDRMSG = struct.Struct("=BBBBI")     # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")           # length, type
RECV_SIZE = 65536

# (interface index, address, prefix length)
Entry = tuple[int, IPAddress, int]


def interface_addresses() -> list[tuple[IPAddress, int | None]]:
    """interface_addresses - (address, prefix length) of each interface address."""
    try:
        entries = _dump_addresses()
    except (OSError, AttributeError):   # no netlink here, or refused in a restricted container
        return [(ip, prefix) for ip, prefix in LOOPBACK]
    first_seen: dict[int, int] = {}
    for index, _, _ in entries:
        first_seen.setdefault(index, len(first_seen))
    # sort() is stable: inside an interface the kernel's order stays.
    entries.sort(key=lambda entry: first_seen[entry[0]])
    found: list[tuple[IPAddress, int | None]] = [(ip, prefix) for _, ip, prefix in entries]
    return found or [(ip, prefix) for ip, prefix in LOOPBACK]


def _dump_addresses() -> list[Entry]:
    """_dump_addresses - every IPv4 and IPv6 address entry, in the kernel's order."""
    request = NLMSG_HEADER.pack(NLMSG_HEADER.size + IFADDRMSG.size, RTM_GETADDR,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0) \
        + IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    found: list[Entry] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.sendto(request, (0, 0))
        while True:
            data = sock.recv(RECV_SIZE)
            if not data:
                return found
            for kind, body in _messages(data):
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", body)[0]
                    raise OSError(errno, "netlink address dump failed")
                if kind == RTM_NEWADDR:
                    entry = _entry(body)
                    if entry is not None:
                        found.append(entry)


def _messages(data: bytes) -> list[tuple[int, bytes]]:
    """_messages - (type, body) of each netlink message in one datagram."""
    out = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind = NLMSG_HEADER.unpack_from(data, offset)[:2]
        if length < NLMSG_HEADER.size:
            break
        out.append((kind, data[offset + NLMSG_HEADER.size:offset + length]))
        offset += (length + 3) & ~3
    return out


def _entry(body: bytes) -> Entry | None:
    """_entry - one RTM_NEWADDR message as (index, address, prefix length);
    None for a family other than IPv4 and IPv6."""
    family, prefix, _, _, index = IFADDRMSG.unpack_from(body)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    attrs = _attributes(body[IFADDRMSG.size:])
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        return None
    return index, ipaddress.ip_address(raw), prefix


def _attributes(data: bytes) -> dict[int, bytes]:
    """_attributes - the route attributes of a message, by type."""
    attrs: dict[int, bytes] = {}
    offset = 0
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        attrs.setdefault(kind, data[offset + RTATTR.size:offset + length])
        offset += (length + 3) & ~3
    return attrs
