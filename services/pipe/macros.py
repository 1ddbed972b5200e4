"""pipe(8)'s command-line macros: ${sender}, ${recipient}, ${nexthop} ... and their expansion.

`$name`, `${name}`, `$(name)`, `${name?text}` (text when name is not
empty), `${name:text}` (text when it is), `$$` for a dollar. A word that
names a per-recipient macro becomes one argument per recipient; nothing is
ever split on white space or given to a shell. The flags q (quote local
parts as RFC 822 wants), u (lower-case local parts) and h (lower-case
domains and the next hop) shape the values.

Interface:
    PER_RECIPIENT
    expand(text, values) -> str; macro_names(text) -> set[str]
    expand_argv(argv, common, per_recipient) -> list[str]
    message_macros(req, attrs, size=None) -> dict
    recipient_macros(rcpt, attrs, delimiters) -> dict
    split_extension(local, delimiters) -> (user, extension)
"""

from __future__ import annotations

import re

from pymaster.mail import delivery, verp
from pymaster.mail.addr import quote_local_part, split_address

from .attributes import PipeAttributes

PER_RECIPIENT = frozenset({"recipient", "original_recipient", "domain", "extension",
                           "mailbox", "user"})
NAME_RE = re.compile(r"[A-Za-z0-9_]+")


def expand(text: str, values: dict[str, str]) -> str:
    """expand - TEXT with `$name`, `${name}`, `$(name)`, `${name?x}`, `${name:x}`, `$$`.

    A name without a value expands to nothing."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "$" or i + 1 >= len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in "{(":
            end = _matching(text, i + 1)
            if end < 0:
                out.append(text[i:])
                break
            out.append(_braced(text[i + 2:end], values))
            i = end + 1
        else:
            m = NAME_RE.match(text, i + 1)
            if m is None:
                out.append("$")
                i += 1
            else:
                out.append(values.get(m.group(), ""))
                i = m.end()
    return "".join(out)


def _matching(text: str, start: int) -> int:
    """_matching - where the bracket opened at START closes, or -1."""
    opener = text[start]
    closer = "}" if opener == "{" else ")"
    depth = 0
    for j in range(start, len(text)):
        if text[j] == opener:
            depth += 1
        elif text[j] == closer:
            depth -= 1
            if depth == 0:
                return j
    return -1


def _braced(inner: str, values: dict[str, str]) -> str:
    m = NAME_RE.match(inner)
    if m is None:
        return ""
    value = values.get(m.group(), "")
    rest = inner[m.end():]
    if rest.startswith("?"):
        return expand(rest[1:], values) if value else ""
    if rest.startswith(":"):
        return value if value else expand(rest[1:], values)
    return value


def macro_names(text: str) -> set[str]:
    """macro_names - the macro names TEXT refers to (`$$` is no reference)."""
    text = text.replace("$$", "")
    return set(re.findall(r"\$[{(]?([A-Za-z0-9_]+)", text))


def expand_argv(argv: list[str], common: dict[str, str],
                per_recipient: list[dict[str, str]]) -> list[str]:
    """expand_argv - the command's arguments for one delivery.

    A word naming a per-recipient macro is repeated once per recipient;
    every expansion stays exactly one argument."""
    out: list[str] = []
    for word in argv:
        if macro_names(word) & PER_RECIPIENT:
            out.extend(expand(word, {**common, **values}) for values in per_recipient)
        else:
            out.append(expand(word, common))
    return out


def _address(addr: str, attrs: PipeAttributes) -> str:
    """_address - an address as the q, u and h flags want it on the command line."""
    local, domain = split_address(addr)
    if attrs.has("u"):
        local = local.lower()
    if attrs.has("h"):
        domain = domain.lower()
    if attrs.has("q"):
        local = quote_local_part(local)
    return f"{local}@{domain}" if domain else local


def message_macros(req: delivery.DeliveryRequest, attrs: PipeAttributes,
                   size: int | None = None) -> dict[str, str]:
    """message_macros - the macros that are the same for every recipient."""
    a = req.attrs
    if req.sender:
        sender = verp.request_sender(req)
        if attrs.has("q"):
            local, domain = split_address(sender)
            sender = f"{quote_local_part(local)}@{domain}" if domain else quote_local_part(local)
    else:
        sender = attrs.null_sender
    nexthop = req.nexthop.lower() if attrs.has("h") else req.nexthop
    return {
        "sender": sender, "nexthop": nexthop, "queue_id": req.queue_id,
        "size": str(size if size is not None else a.get("size", "")),
        "client_address": str(a.get("client_address", "")),
        "client_helo": str(a.get("helo_name", "")),
        "client_hostname": str(a.get("client_name", "")),
        "client_port": str(a.get("client_port", "")),
        "client_protocol": str(a.get("protocol", "")),
        "sasl_method": str(a.get("sasl_method", "")),
        "sasl_sender": str(a.get("sasl_sender", "")),
        "sasl_username": str(a.get("sasl_username", "")),
    }


def recipient_macros(rcpt, attrs: PipeAttributes, delimiters: str) -> dict[str, str]:
    """recipient_macros - ${recipient}, ${user}, ${extension} ... of one recipient."""
    local, domain = split_address(rcpt.address)
    if attrs.has("u"):
        local = local.lower()
    if attrs.has("h"):
        domain = domain.lower()
    user, extension = split_extension(local, delimiters)
    return {"recipient": _address(rcpt.address, attrs),
            "original_recipient": _address(rcpt.orig or rcpt.address, attrs),
            "domain": domain, "mailbox": local, "user": user, "extension": extension}


def split_extension(local: str, delimiters: str) -> tuple[str, str]:
    """split_extension - (user, extension) at the first recipient_delimiter character."""
    for i, c in enumerate(local):
        if c in delimiters and i > 0:
            return local[:i], local[i + 1:]
    return local, ""
