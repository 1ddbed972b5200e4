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
    split_path_argument(text) -> (path, params)  the address word and the rest
    valid_envelope_domain(domain) -> bool       a domain smtpd takes in an envelope
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
    """domain_literal_address - the IP address inside a domain literal, or None.

    RFC 5321 4.1.3: `[dotted quad]` (leading zeros allowed, as Postfix allows
    them) or `[IPv6:address]`; an IPv4 address after "IPv6:" is not one."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            return str(ipaddress.IPv6Address(inner[5:]))
        except ValueError:
            return None
    parts = inner.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts):
        return None
    return ".".join(str(int(p)) for p in parts)


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
    words: tuple[str, ...] = ()     # the parameters as written, in order


def split_path_argument(text: str) -> tuple[str, str]:
    """split_path_argument - ("<a@b>", "SIZE=10") from "<a@b> SIZE=10".

    The address is the first word; white space inside angle brackets,
    quotes or a comment does not end it (`<a@b c@d>` is one address, and a
    broken one)."""
    text = text.strip(" \t")
    angle = comment = 0
    quoted = escaped = False
    for i, c in enumerate(text):
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif quoted:
            quoted = c != '"'
        elif comment:
            comment += {"(": 1, ")": -1}.get(c, 0)
        elif c == '"':
            quoted = True
        elif c == "(":
            comment = 1
        elif c in "<>":
            angle = max(0, angle + (1 if c == "<" else -1))
        elif c in " \t" and not angle:
            return text[:i], text[i:].strip(" \t")
    return text, ""


class _PathToken(NamedTuple):
    kind: str       # "word" (atom or quoted string), "literal", or the special itself
    text: str       # a word in internal form (quotes and backslashes removed)


def _path_tokens(text: str) -> list[_PathToken]:
    """_path_tokens - the RFC 822 tokens of an envelope address; comments are dropped
    (one left open runs to the end), an open quote or domain literal is an error."""
    tokens: list[_PathToken] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c == '"':
            i = _quoted_word(text, i + 1, tokens)
        elif c == "(":
            i, _ = _scan_comment(text, i + 1)
        elif c == ")":
            raise AddressError("unbalanced \")\"")
        elif c == "[":
            j = text.find("]", i)
            if j < 0:
                raise AddressError("unterminated domain literal")
            tokens.append(_PathToken("literal", text[i:j + 1]))
            i = j + 1
        elif c in "<>@,;:.":
            tokens.append(_PathToken(c, c))
            i += 1
        else:
            m = _PATH_ATOM_RE.match(text, i)
            if m is None:       # a backslash with nothing after it
                raise AddressError("backslash at the end of the address")
            tokens.append(_PathToken("word", unquote_local_part(m.group(0))))
            i = m.end()
    return tokens


def _quoted_word(text: str, i: int, tokens: list[_PathToken]) -> int:
    """_quoted_word - the quoted string from TEXT[I:] onto TOKENS; where it ends."""
    out: list[str] = []
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    if i >= len(text):
        raise AddressError("unterminated quoted string")
    tokens.append(_PathToken("word", "".join(out)))
    return i + 1


# An atom of an envelope address: anything up to a space, a tab or a special
# (other control characters are text, as Postfix's smtpd reads them); a
# backslash takes the next character with it ("]" alone is just text).
_PATH_ATOM_RE = re.compile(r'(?:\\.|[^ \t"()<>@,;:.\[\\])+', re.S)


def _one_address(tokens: list[_PathToken]) -> list[_PathToken]:
    """_one_address - the tokens of the one address in an envelope path.

    As Postfix's smtpd reads a path: a stray ">" at either end, a group
    (`name: address;`), a source route (`@a,@b:`), a display name before
    `<address>` and empty list members are tolerated; two addresses, or
    anything after `<address>`, are not."""
    if not any(t.kind == "<" for t in tokens):
        tokens = tokens[1:] if tokens[:1] and tokens[0].kind == ">" else tokens
        tokens = tokens[:-1] if tokens[-1:] and tokens[-1].kind == ">" else tokens
    if tokens[-1:] and tokens[-1].kind == ";":
        colon = next((k for k, t in enumerate(tokens) if t.kind == ":"), -1)
        tokens = tokens[colon + 1:-1]
    tokens = _without_route(tokens)
    members = _split_tokens(tokens, ",")
    found = [m for m in members if m]
    if len(found) > 1:
        raise AddressError("more than one address")
    return _route_address(found[0]) if found else []


def _without_route(tokens: list[_PathToken]) -> list[_PathToken]:
    """_without_route - drop an RFC 5321 source route `@a,@b:` (4.1.2: ignored)."""
    if tokens[:1] and tokens[0].kind in "@:":
        colon = next((k for k, t in enumerate(tokens) if t.kind == ":"), -1)
        if colon >= 0:
            return tokens[colon + 1:]
    return tokens


def _split_tokens(tokens: list[_PathToken], kind: str) -> list[list[_PathToken]]:
    """_split_tokens - TOKENS split at KIND outside angle brackets."""
    parts: list[list[_PathToken]] = [[]]
    depth = 0
    for t in tokens:
        depth += {"<": 1, ">": -1}.get(t.kind, 0)
        if t.kind == kind and depth == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def _route_address(tokens: list[_PathToken]) -> list[_PathToken]:
    """_route_address - the addr-spec of `phrase <addr-spec>` or of a bare addr-spec."""
    kinds = [t.kind for t in tokens]
    if "<" in kinds or ">" in kinds:
        if kinds.count("<") != 1 or kinds.count(">") != 1 or kinds[-1] != ">" \
                or any(k != "word" for k in kinds[:kinds.index("<")]):
            raise AddressError("malformed route address")
        tokens = _without_route(tokens[kinds.index("<") + 1:-1])
    return _addr_spec(tokens)


def _addr_spec(tokens: list[_PathToken]) -> list[_PathToken]:
    """_addr_spec - words joined by ".", "@" or ":"; two words in a row, another
    special, or a trailing ":" make it two addresses or none: an error."""
    previous = ""
    for t in tokens:
        if t.kind not in ("word", "literal", ".", "@", ":"):
            raise AddressError(f"unexpected {t.text!r} in address")
        if t.kind in ("word", "literal") and previous in ("word", "literal"):
            raise AddressError("two words in a row")
        previous = t.kind
    if previous == ":":
        raise AddressError("trailing \":\"")
    return tokens


def valid_envelope_domain(domain: str) -> bool:
    """valid_envelope_domain - a domain Postfix's smtpd takes in MAIL FROM/RCPT TO:
    a valid address literal, or a host name (one trailing dot allowed) that is
    not all numeric. Non-ASCII names are the caller's business (SMTPUTF8)."""
    if domain.startswith("["):
        return is_domain_literal(domain)
    name = domain[:-1] if domain.endswith(".") else domain
    if not name.isascii():
        return bool(name) and ".." not in name and not name.startswith(".")
    return is_valid_hostname(name) and not re.fullmatch(r"[0-9.]+", name)


def parse_params(text: str) -> dict[str, str | None]:
    """parse_params - "SIZE=10 BODY=8BITMIME SMTPUTF8" as {KEYWORD: value or None}.

    A word that is no keyword=value (`c@d`, `=x`) is kept as it is, with
    None, so that the caller can call it an unsupported option."""
    params: dict[str, str | None] = {}
    for word in text.split():
        key, eq, value = word.partition("=")
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", key):
            params[key.upper()] = value if eq else None
        else:
            params[word] = None
    return params


def parse_path(text: str, strict: bool = False) -> SmtpPath:
    """parse_path - split "<a@b> SIZE=10" into address and ESMTP parameters.

    Reads the path as Postfix's smtpd does (see _one_address); without
    STRICT (strict_rfc821_envelopes = no) a path without angle brackets is
    accepted, as `MAIL FROM:user@example.com`. A domain must be a valid
    host name or address literal (`a@[1.2.3.4.5]`, `user@` are errors)."""
    raw, rest = split_path_argument(text)
    if not raw:
        raise AddressError("empty address")
    if strict and not (raw.startswith("<") and raw.endswith(">")):
        raise AddressError("address must be enclosed in <>")
    if "\r" in raw or "\n" in raw:
        raise AddressError("malformed address")
    inner = raw[1:-1] if len(raw) >= 2 and raw[0] == "<" and raw[-1] == ">" else raw
    tokens = _one_address(_path_tokens(inner))
    address = "".join(t.text for t in tokens)
    if strict and not _strict_path(inner, address):
        raise AddressError("malformed address")
    if "@" in address and not valid_envelope_domain(split_address(address)[1]):
        raise AddressError("malformed domain")
    return SmtpPath(address, parse_params(rest), inner, tuple(rest.split()))


def _strict_path(inner: str, address: str) -> bool:
    """_strict_path - strict_rfc821_envelopes: what Postfix's smtpd then refuses
    besides a path without <>: comments, groups and lists (a "," outside the
    source route, a ";"), a display name or a stray ">" before the address,
    and a domain without a local part."""
    path = inner.strip(" \t")
    angles, _ = _scan_unquoted(path, "<")
    if path.startswith(">") or angles and angles[0] != 0:
        return False
    if path.startswith("@") and ":" in path:
        path = path[path.index(":") + 1:]
    specials, _ = _scan_unquoted(path, "();,")
    return not specials and not address.startswith("@")


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


# An atom of a header address: up to white space or a special.
_HEADER_ATOM_RE = re.compile(r'[^\s"()<>@,;:\\.\[\]]+')

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
            m = _HEADER_ATOM_RE.match(value, i)
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
