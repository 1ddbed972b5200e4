"""$name expansion with a recipient's attributes (forward_path, luser_relay).

local(8) expands `$user`, `$home`, `$shell`, `$recipient`, `$extension`,
`$domain`, `$local`, `$mailbox`, `$recipient_delimiter`, `$client_*` and
`$sasl_*` in forward_path and luser_relay, with main.cf's `${name}`,
`${name?value}` and `${name:value}` forms. Every character of an attribute
value that is not in the expansion filter becomes `_`, so a hostile address
cannot smuggle shell or path syntax in.

A forward_path element that names an attribute with no value (`${extension}`
when there is no extension) is skipped, which is how the default
`$home/.forward${recipient_delimiter}${extension}, $home/.forward` tries the
extension file only when there is one.

Interface:
    attributes(target, message, privs, cfg) -> dict
    expand(text, attrs, filter_chars="") -> (text, undefined: bool)
"""

from __future__ import annotations

import re

from pymaster.mail.config import Config

_NAME = re.compile(r"[A-Za-z0-9_]+")


def attributes(target, message, privs, cfg: Config) -> dict[str, str]:
    """attributes - the $names local(8) defines for TARGET."""
    a = message.attrs
    return {
        "user": target.user, "local": target.local, "extension": target.extension,
        "domain": target.domain, "recipient": target.address,
        "mailbox": target.local,
        "home": privs.home if privs else "", "shell": privs.shell if privs else "",
        "recipient_delimiter": (target.local[len(target.user)] if target.extension
                                else cfg.get("recipient_delimiter")),
        "client_address": a.get("client_address", ""), "client_helo": a.get("helo_name", ""),
        "client_hostname": a.get("client_name", ""), "client_protocol": a.get("protocol", ""),
        "sasl_method": a.get("sasl_method", ""), "sasl_sender": a.get("sasl_sender", ""),
        "sasl_username": a.get("sasl_username", ""),
    }


def _filtered(value: str, allowed: str) -> str:
    if not allowed:
        return value
    return "".join(c if c in allowed else "_" for c in value)


def expand(text: str, attrs: dict[str, str], filter_chars: str = "",
           cfg: Config | None = None) -> tuple[str, bool]:
    """expand - TEXT with $names replaced; also whether an empty attribute was used bare."""
    out: list[str] = []
    undefined = False
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 >= len(text):
            out.append(text[i])
            i += 1
            continue
        if text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        value, op, rest, i = _reference(text, i + 1)
        if value is None:
            out.append("$")
            continue
        current = _value(value, attrs, filter_chars, cfg)
        if op is None:
            undefined = undefined or not current
            out.append(current)
        elif op == "?":
            out.append(expand(rest, attrs, filter_chars, cfg)[0] if current else "")
        else:
            out.append(current or expand(rest, attrs, filter_chars, cfg)[0])
    return "".join(out), undefined


def _reference(text: str, i: int) -> tuple[str | None, str | None, str, int]:
    """_reference - (name, operator, operand, next index) of the reference at TEXT[i]."""
    if text[i] in "{(":
        close = "}" if text[i] == "{" else ")"
        depth, j = 0, i
        while j < len(text):
            if text[j] == text[i]:
                depth += 1
            elif text[j] == close:
                depth -= 1
                if depth == 0:
                    break
            j += 1
        inner = text[i + 1:j]
        m = re.match(r"([A-Za-z0-9_]+)(?:([?:])(.*))?$", inner, re.S)
        if not m:
            return None, None, "", i
        return m.group(1), m.group(2), m.group(3) or "", j + 1
    m = _NAME.match(text, i)
    if not m:
        return None, None, "", i
    return m.group(0), None, "", m.end()


def _value(name: str, attrs: dict[str, str], filter_chars: str, cfg: Config | None) -> str:
    if name in attrs:
        return _filtered(attrs[name], filter_chars)
    return cfg.get(name) if cfg is not None else ""
