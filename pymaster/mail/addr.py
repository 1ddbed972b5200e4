"""Mail addresses: RFC 5321 paths, RFC 5322 address lists, quoting.

pymaster keeps addresses in Postfix's *internal* form everywhere (queue
files, tables, logs): the local part unquoted, `"john doe"@example.com`
held as `john doe@example.com`. The *external* form, quoted where RFC 5322
needs it, is made only when an address goes out on the wire or into a
header. The null sender `<>` is the empty string.

Interface:
    split_address(addr) -> (local, domain)      at the rightmost "@"; domain "" if none
    join_address(local, domain) -> str
    lower_domain(addr) -> str                   lower-case the domain part only
    quote_local_part(local) -> str              "a b" -> "\\"a b\\"" when needed
    unquote_local_part(text) -> str
    external(addr) -> str / internal(addr) -> str
    parse_path(text, strict=False) -> SmtpPath(address, params, raw)
                                                "<a@b> SIZE=10" from MAIL FROM / RCPT TO
    parse_address_list(value) -> list[Mailbox]  To:/Cc:/From: header values
    format_mailbox(Mailbox) -> str
    is_valid_hostname(name) / is_domain_literal(name)
    AddressError                                a path or address that cannot be parsed

Caveats: header parsing is tolerant, as Postfix's is: text that is not an
address is skipped, never an error, because mail that has been accepted must
not be lost over a malformed To: line.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import NamedTuple

# RFC 5322 3.2.3: characters of an atom besides letters and digits.
ATEXT_SPECIALS = "!#$%&'*+-/=?^_`{|}~"
_ATOM_RE = re.compile(r"[A-Za-z0-9" + re.escape(ATEXT_SPECIALS) + r"\x80-\U0010ffff]+")
_HOST_LABEL_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")


class AddressError(ValueError):
    """An SMTP path or address with broken syntax."""


# ---------------------------------------------------------------------------
# Local part and domain.

def split_address(addr: str) -> tuple[str, str]:
    """split_address - (local, domain) at the rightmost "@"; domain "" when none.

    The rightmost "@" is the one that counts, so a routed internal-form
    address `user@other@ours` splits as ("user@other", "ours")."""
    local, at, domain = addr.rpartition("@")
    if not at:
        return addr, ""
    return local, domain


def join_address(local: str, domain: str) -> str:
    """join_address - local@domain, or just local when there is no domain."""
    return f"{local}@{domain}" if domain else local


def lower_domain(addr: str) -> str:
    """lower_domain - ADDR with its domain lower-cased (local parts are case-sensitive)."""
    local, domain = split_address(addr)
    if not domain:
        return addr
    return f"{local}@{domain.lower()}"


def _is_dot_atom(text: str) -> bool:
    return bool(text) and all(_ATOM_RE.fullmatch(part) for part in text.split("."))


def quote_local_part(local: str) -> str:
    """quote_local_part - the RFC 5322 form of a local part: quoted when not a dot-atom."""
    if _is_dot_atom(local):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def unquote_local_part(text: str) -> str:
    """unquote_local_part - remove RFC 5322 quoting: quoted strings and backslash pairs."""
    if '"' not in text and "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _scan_unquoted(text: str, targets: str, start: int = 0) -> tuple[list[int], bool]:
    """_scan_unquoted - where TARGETS characters stand outside quotes in TEXT[START:]
    (a backslash escapes the next character), and whether a quote is left open."""
    found: list[int] = []
    quoted = escaped = False
    for i in range(start, len(text)):
        c = text[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c in targets and not quoted:
            found.append(i)
    return found, quoted


def _split_external(addr: str) -> tuple[str, str]:
    """_split_external - split an external-form address at its last unquoted "@"."""
    ats, _ = _scan_unquoted(addr, "@")
    if not ats:
        return addr, ""
    at = ats[-1]
    return addr[:at], addr[at + 1:]


def internal(addr: str) -> str:
    """internal - the internal (unquoted) form of an external-form address."""
    if '"' not in addr and "\\" not in addr:
        return addr
    local, domain = _split_external(addr)
    return join_address(unquote_local_part(local), domain)


def external(addr: str) -> str:
    """external - the external (quoted where needed) form of an internal address."""
    if not addr:
        return addr
    local, domain = split_address(addr)
    if not local and domain:
        return addr
    return join_address(quote_local_part(local), domain)


# ---------------------------------------------------------------------------
# Domains.

def is_domain_literal(domain: str) -> bool:
    """is_domain_literal - `[192.0.2.1]` or `[IPv6:2001:db8::1]` with a valid address."""
    return domain_literal_address(domain) is not None


def domain_literal_address(domain: str) -> str | None:
    """domain_literal_address - the IP address inside a domain literal, or None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def is_valid_hostname(name: str) -> bool:
    """is_valid_hostname - dot-separated labels of letters, digits, "-" and "_"."""
    if not name or len(name) > 255 or name.startswith(".") or name.endswith("."):
        return False
    return all(0 < len(label) <= 63 and _HOST_LABEL_RE.match(label)
               for label in name.split("."))


# ---------------------------------------------------------------------------
# RFC 5321 paths.

class SmtpPath(NamedTuple):
    """The argument of MAIL FROM or RCPT TO: the address in internal form,
    the ESMTP parameters (keywords upper-cased) and the raw path text."""
    address: str
    params: dict[str, str | None]
    raw: str


def _find_path_end(text: str, start: int) -> int:
    """_find_path_end - index of the ">" closing the "<" at START, quotes respected."""
    ends, _ = _scan_unquoted(text, ">", start + 1)
    return ends[0] if ends else -1


def _strip_source_route(path: str) -> str:
    """_strip_source_route - `@a,@b:user@c` -> `user@c` (RFC 5321 4.1.2: ignored)."""
    if not path.startswith("@"):
        return path
    colon = path.find(":")
    if colon < 0:
        raise AddressError("malformed source route")
    return path[colon + 1:]


def parse_params(text: str) -> dict[str, str | None]:
    """parse_params - "SIZE=10 BODY=8BITMIME SMTPUTF8" as {KEYWORD: value or None}."""
    params: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if not key or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", key):
            raise AddressError(f"bad parameter syntax: {word}")
        params[key.upper()] = value if eq else None
    return params


def parse_path(text: str, strict: bool = False) -> SmtpPath:
    """parse_path - split "<a@b> SIZE=10" into address and ESMTP parameters.

    Without STRICT (strict_rfc821_envelopes = no) a path without angle
    brackets is accepted, as Postfix accepts `MAIL FROM:user@example.com`."""
    text = text.strip()
    if text.startswith("<"):
        end = _find_path_end(text, 0)
        if end < 0:
            raise AddressError("missing \">\" after address")
        raw, rest = text[1:end], text[end + 1:]
        if rest and not rest[0].isspace():
            raise AddressError("garbage after \">\"")
    elif strict:
        raise AddressError("address must be enclosed in <>")
    else:
        raw, _, rest = text.partition(" ")
        if not raw:
            raise AddressError("empty address")
    raw = raw.strip()
    addr = _strip_source_route(raw)
    if "\r" in addr or "\n" in addr or not _balanced_outside_quotes(addr):
        raise AddressError("malformed address")
    if strict and addr and not _strict_mailbox(addr):
        raise AddressError("malformed address")
    return SmtpPath(internal(addr), parse_params(rest), raw)


def _balanced_outside_quotes(addr: str) -> bool:
    """_balanced_outside_quotes - quotes closed, and no "<" or ">" outside them."""
    brackets, open_quote = _scan_unquoted(addr, "<>")
    return not brackets and not open_quote


def _strict_mailbox(addr: str) -> bool:
    """_strict_mailbox - RFC 5321 Mailbox: (dot-string | quoted-string) "@" domain."""
    local, domain = _split_external(addr)
    if not domain:
        return False
    local_ok = _is_dot_atom(local) or re.fullmatch(r'"(?:[^"\\]|\\.)*"', local) is not None
    return local_ok and (is_valid_hostname(domain) or is_domain_literal(domain))


# ---------------------------------------------------------------------------
# RFC 5322 header address lists.

@dataclass
class Mailbox:
    """One address from a header: display name, address in internal form,
    and the group it belongs to (for `undisclosed-recipients:;` style lists)."""
    name: str
    address: str
    group: str | None = None
    comments: list[str] = field(default_factory=list)
    # Where the address stood in the parsed value (start, end): lets a caller
    # replace just the address and keep every other byte of the header.
    span: tuple[int, int] | None = field(default=None, compare=False, repr=False)


class _Token(NamedTuple):
    kind: str       # "atom", "quoted", "comment", "literal", or the special itself
    text: str
    start: int = 0  # the token's place in the value: value[start:end]
    end: int = 0


def tokenize(value: str, limit: int = 10240) -> list[_Token]:
    """tokenize - RFC 5322 lexical tokens; LIMIT caps the count, as
    header_address_token_limit does, so a hostile header cannot cost much."""
    tokens: list[_Token] = []
    i, n = 0, len(value)
    while i < n and len(tokens) < limit:
        c = value[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j, text = _scan_quoted(value, i + 1, '"')
            tokens.append(_Token("quoted", text, i, j))
            i = j
        elif c == "(":
            j, text = _scan_comment(value, i + 1)
            tokens.append(_Token("comment", text, i, j))
            i = j
        elif c == "[":
            j = value.find("]", i)
            j = n - 1 if j < 0 else j
            tokens.append(_Token("literal", value[i:j + 1], i, j + 1))
            i = j + 1
        elif c in '<>@,;:.\\)]':
            # A stray ")" or "]" is a special of its own (RFC 5322 3.2.3),
            # as in Postfix's tok822, never the start of an atom.
            tokens.append(_Token(c, c, i, i + 1))
            i += 1
        else:
            m = re.compile(r'[^\s"()<>@,;:\\.\[\]]+').match(value, i)
            assert m is not None  # value[i] is none of the characters handled above
            tokens.append(_Token("atom", m.group(0), i, m.end()))
            i = m.end()
    return tokens


def _scan_quoted(value: str, i: int, close: str) -> tuple[int, str]:
    out: list[str] = []
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append(value[i + 1])
            i += 2
            continue
        if c == close:
            return i + 1, "".join(out)
        out.append(c)
        i += 1
    return i, "".join(out)


def _scan_comment(value: str, i: int) -> tuple[int, str]:
    depth, start = 1, i
    while i < len(value):
        c = value[i]
        if c == "\\":
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1, value[start:i]
        i += 1
    return i, value[start:]


def _addr_from_tokens(tokens: list[_Token]) -> str:
    """_addr_from_tokens - join addr-spec tokens into an internal-form address."""
    return "".join(t.text for t in tokens if t.kind != "comment")


def _phrase(tokens: list[_Token]) -> str:
    words = [t.text for t in tokens if t.kind in ("atom", "quoted", ".")]
    return " ".join(words).replace(" . ", ".")


def _mailbox_from(tokens: list[_Token], group: str | None) -> Mailbox | None:
    """_mailbox_from - one mailbox: `name <addr>` or a bare addr-spec."""
    comments = [t.text for t in tokens if t.kind == "comment"]
    kinds = [t.kind for t in tokens]
    if "<" in kinds:
        lt = kinds.index("<")
        gt = kinds.index(">") if ">" in kinds[lt:] else len(tokens)
        inner = tokens[lt + 1:gt]
        colon = [k for k, t in enumerate(inner) if t.kind == ":"]
        if colon:       # an obsolete route `<@a,@b:user@c>`
            inner = inner[colon[-1] + 1:]
        return Mailbox(_phrase(tokens[:lt]), _addr_from_tokens(inner), group, comments,
                       _span(inner))
    address = _addr_from_tokens(tokens)
    if not address:
        return None
    name = comments[0].strip() if comments else ""
    return Mailbox(name, address, group, comments, _span(tokens))


def _span(tokens: list[_Token]) -> tuple[int, int] | None:
    """_span - where the address tokens stand in the value, comments outside."""
    words = [t for t in tokens if t.kind != "comment"]
    return (words[0].start, words[-1].end) if words else None


def parse_address_list(value: str, limit: int = 10240) -> list[Mailbox]:
    """parse_address_list - the mailboxes of a To:, Cc:, From: ... header value.

    Groups (`friends: a@b, c@d;`) yield their members with `.group` set; an
    empty group (`undisclosed-recipients:;`) yields nothing."""
    out: list[Mailbox] = []
    group: str | None = None
    current: list[_Token] = []
    depth = 0
    for tok in tokenize(value, limit):
        if tok.kind == "<":
            depth += 1
        elif tok.kind == ">":
            depth = max(0, depth - 1)
        if depth == 0 and tok.kind == ":" and group is None and "<" not in \
                [t.kind for t in current]:
            group = _phrase(current)
            current = []
            continue
        if depth == 0 and tok.kind in (",", ";"):
            box = _mailbox_from(current, group)
            if box:
                out.append(box)
            current = []
            if tok.kind == ";":
                group = None
            continue
        current.append(tok)
    box = _mailbox_from(current, group)
    if box:
        out.append(box)
    return out


def quote_phrase(name: str) -> str:
    """quote_phrase - a display name as atoms, or quoted when it needs to be."""
    if all(_ATOM_RE.fullmatch(w) for w in name.split()):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_mailbox(box: Mailbox) -> str:
    """format_mailbox - `Name <addr>` or `addr` in external form."""
    addr = external(box.address)
    if box.name:
        return f"{quote_phrase(box.name)} <{addr}>"
    return addr
