"""A small authoritative DNS server on loopback, for tests of the smtp client.

It answers MX, A, AAAA, TXT and TLSA queries from a dict, over UDP and TCP on a
free 127.0.0.1 port, from a background thread:

    zone = {"example.com": {"MX": ["10 mx1.example.com.", "20 mx2.example.com."]},
            "mx1.example.com": {"A": ["127.0.0.2"]},
            "broken.example": "SERVFAIL"}
    with DnsServer(zone) as dns:
        main_cf["dns_nameservers"] = dns.nameserver     # "[127.0.0.1]:PORT"

A name absent from the dict is NXDOMAIN; a name present without records of
the asked type is an empty NOERROR answer (NODATA); a name whose value is
"SERVFAIL" fails. `dns.zone` may be changed while the server runs.

DNSSEC, as a validating resolver reports it: a name's "secure" entry lists
the record types whose answers carry the AD flag ("secure": True: all of
them), set only when the query asks for it (AD flag or DO bit, RFC 6840
5.7). A record type whose value is "SERVFAIL" fails alone:

    zone = {"mx.example.com": {"A": ["127.0.0.2"], "TLSA": "SERVFAIL",
                               "secure": ["A"]},
            "_25._tcp.mx.example.com": {"TLSA": ["3 1 1 ab12…"], "secure": True}}
"""

from __future__ import annotations

import socket
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


def _bind_pair(attempts: int = 50) -> tuple[socket.socket, socket.socket]:
    """_bind_pair - a UDP and a TCP socket on the same free loopback port.

    The kernel picks a free UDP port; the same number may be taken for TCP,
    so try again with another one."""
    for _ in range(attempts):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            return udp, tcp
        except OSError:
            udp.close()
            tcp.close()
    raise OSError("no loopback port free for both UDP and TCP")


class DnsServer:
    def __init__(self, zone: dict) -> None:
        self.zone = zone
        self.udp, self.tcp = _bind_pair()
        self.port = self.udp.getsockname()[1]
        self.tcp.listen(16)
        self.queries: list[tuple[str, str]] = []
        self._stop = False
        self._threads = [threading.Thread(target=self._serve_udp, daemon=True),
                         threading.Thread(target=self._serve_tcp, daemon=True)]

    @property
    def nameserver(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    def __enter__(self) -> "DnsServer":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    # -- answering ---------------------------------------------------------
    def answer(self, wire: bytes) -> bytes:
        """answer - the response to one query in wire format."""
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rrtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rrtype))
        entry = self.zone.get(name)
        if entry is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif entry == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif entry.get(rrtype) == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif entry.get(rrtype):
            response.answer.append(dns.rrset.from_text_list(
                question.name, TTL, dns.rdataclass.IN, question.rdtype,
                [_rdata_text(rrtype, v) for v in entry[rrtype]]))
        if isinstance(entry, dict) and _secure(entry, rrtype) and _asks_dnssec(query):
            response.flags |= dns.flags.AD
        return response.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop:
            try:
                data, peer = self.udp.recvfrom(4096)
                self.udp.sendto(self.answer(data), peer)
            except OSError:
                return
            except Exception:   # a malformed query: no answer
                continue

    def _serve_tcp(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                try:
                    size = struct.unpack("!H", _read(conn, 2))[0]
                    reply = self.answer(_read(conn, size))
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                except Exception:
                    continue


def _secure(entry: dict, rrtype: str) -> bool:
    secure = entry.get("secure", ())
    return secure is True or rrtype in secure


def _asks_dnssec(query: dns.message.Message) -> bool:
    return bool(query.flags & dns.flags.AD or query.ednsflags & dns.flags.DO)


def _rdata_text(rrtype: str, value: str) -> str:
    if rrtype == "TXT" and not value.startswith('"'):
        return f'"{value}"'
    return value


def _read(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
