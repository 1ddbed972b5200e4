"""XCLIENT and XFORWARD: a trusted client speaks for another one (Postfix's XCLIENT_README,
XFORWARD_README).

XCLIENT (smtpd_authorized_xclient_hosts) replaces the client's identity for
the rest of the session: NAME, ADDR, PORT, PROTO, HELO, LOGIN, DESTADDR,
DESTPORT, REVERSE_NAME. The server answers with a new 220 greeting and the
client starts again with EHLO, so every restriction sees the new client.
XFORWARD (smtpd_authorized_xforward_hosts) only changes what is logged and
recorded for the next message: NAME, ADDR, PORT, PROTO, HELO, IDENT, SOURCE.

Values are xtext (RFC 3461 4): "+2B" is "+". `[UNAVAILABLE]` and
`[TEMPUNAVAIL]` mean "not known".

Interface:
    XCLIENT_ATTRS, XFORWARD_ATTRS          the EHLO keyword arguments, in order
    parse_attributes(arg, allowed) -> dict[str, str | None]   raises AttributeError_
"""

from __future__ import annotations

import ipaddress
import re

from services.smtpd import replies

XCLIENT_ATTRS = ["NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT",
                 "REVERSE_NAME"]
XFORWARD_ATTRS = ["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"]
UNAVAILABLE = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")


_XTEXT_RE = re.compile(r"\+([0-9A-F]{2})")


class AttributeError_(Exception):
    """A malformed or unknown attribute; .reply is the answer for the client."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def xtext_decode(text: str) -> str:
    return _XTEXT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def parse_attributes(arg: str, allowed: list[str], verb: str) -> dict[str, str | None]:
    """parse_attributes - {"NAME": "x.example", "ADDR": None (= unavailable), ...}."""
    syntax = replies.ERR_XCLIENT_SYNTAX if verb == "XCLIENT" else replies.ERR_XFORWARD_SYNTAX
    words = arg.split()
    if not words:
        raise AttributeError_(syntax)
    out: dict[str, str | None] = {}
    for word in words:
        name, eq, value = word.partition("=")
        name = name.upper()
        if not eq or not value:
            raise AttributeError_(syntax)
        if name not in allowed:
            raise AttributeError_(replies.ERR_XATTR_NAME.format(verb=verb, name=name))
        value = xtext_decode(value)
        out[name] = None if value.upper() in UNAVAILABLE else value
    if addr := out.get("ADDR"):
        out["ADDR"] = _address(addr, verb)
    if (proto := out.get("PROTO")) and proto.upper() not in ("SMTP", "ESMTP") and verb == "XCLIENT":
        raise AttributeError_(replies.ERR_XATTR_VALUE.format(
            verb=verb, attribute="PROTO", value=proto))
    for port in ("PORT", "DESTPORT"):
        if (number := out.get(port)) and not number.isdigit():
            raise AttributeError_(replies.ERR_XATTR_VALUE.format(
                verb=verb, attribute=port, value=number))
    return out


def _address(value: str, verb: str) -> str:
    """_address - "IPv6:2001:db8::1" or "192.0.2.1", checked and normalised."""
    text = value[5:] if value.lower().startswith("ipv6:") else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise AttributeError_(replies.ERR_XATTR_VALUE.format(
            verb=verb, attribute="ADDR", value=value)) from None
