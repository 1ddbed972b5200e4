"""main.cf: reading, `$name` expansion and typed access to parameters.

A Config holds the raw `name = value` pairs of one main.cf, the `-o`
overrides of one master.cf service on top, and the defaults of the parameter
table (pymaster.mail.params) underneath. Values are expanded lazily, at use:
`$name`, `${name}`, `$(name)`, `${name?value}`, `${name:value}`,
`${name?{value}:{value}}` and `$$` for a literal dollar sign.

Interface:
    load_config(config_dir=None, overrides=None) -> Config
    default_config(config_dir=None) -> Config   the table's defaults, no main.cf
    cfg[name] / cfg.get(name)     expanded string
    cfg.bool / int / time / size / list(name)   typed values
    cfg.derived(build, *args)     what BUILD(cfg, *args) makes, built once per Config
    parse_main_cf(text, path) -> (entries, errors)  for postconf -e / -n
    ConfigError                   a bad file, line or value, with file and line
"""

from __future__ import annotations

import builtins
import ipaddress
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from pymaster.mail.params import MATCH_LISTS, PARAMS, param
from pymaster.util import interfaces, log
from pymaster.util.strings import split_list

PROJECT_ROOT = Path(__file__).resolve().parents[2]
try:
    # Written by `make install` (install/install.py): the directories it
    # installed to, the defaults Postfix compiles in. Absent in a checkout.
    from pymaster.mail.site_defaults import DEFAULTS as SITE_DEFAULTS
except ImportError:
    SITE_DEFAULTS = {}
DEFAULT_CONFIG_DIR = SITE_DEFAULTS.get("config_directory", "/etc/postfix")
TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class ConfigError(Exception):
    """A configuration problem, worded like Postfix's fatal messages."""


@dataclass
class Entry:
    """One logical main.cf line: NAME = VALUE, where it starts and ends."""
    name: str
    value: str
    lineno: int
    last_lineno: int


def config_dir_from_env(explicit: str | None = None) -> str:
    """config_dir_from_env - the -c argument, else $MAIL_CONFIG, else the default."""
    return explicit or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIR


def logical_lines(text: str):
    """logical_lines - yield (first_lineno, last_lineno, text) per logical line.

    A line that starts with white space continues the previous one; blank
    lines and lines whose first non-blank character is `#` are skipped and
    end nothing (Postfix lets a comment sit inside a continued value). A
    continuation line with nothing before it is yielded with its leading
    white space kept, so that the caller can report it."""
    start = last = 0
    buf: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0].isspace():
            if buf:
                buf.append(stripped)
                last = lineno
            else:
                yield lineno, lineno, line.rstrip()
            continue
        if buf:
            yield start, last, " ".join(buf)
        buf, start, last = [stripped], lineno, lineno
    if buf:
        yield start, last, " ".join(buf)


def parse_main_cf(text: str, path: str) -> tuple[list[Entry], list[str]]:
    """parse_main_cf - the entries of a main.cf text, and its errors by line."""
    entries: list[Entry] = []
    errors: list[str] = []
    for first, last, line in logical_lines(text):
        if line[0].isspace():
            errors.append(f"{path}, line {first}: text starts with white space: "
                          f"\"{line.strip()}\"")
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq:
            errors.append(f"{path}, line {first}: missing '=' after attribute name: \"{name}\"")
            continue
        if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            errors.append(f"{path}, line {first}: bad parameter name: \"{name}\"")
            continue
        entries.append(Entry(name, value.strip(), first, last))
    return entries, errors


def _fqdn() -> str:
    """_fqdn - the machine's fully qualified name, as Postfix derives myhostname.

    A name without a dot that the resolver cannot complete gets
    `.localdomain` appended, so that mydomain has something to take."""
    name = socket.gethostname()
    if "." not in name:
        try:
            full = socket.getfqdn(name)
        except OSError:
            full = name
        name = full if "." in full else name + ".localdomain"
    return name.lower()


def _local_networks(style: str) -> str:
    """_local_networks - the mynetworks default for mynetworks_style.

    host: each local address alone; subnet: the networks of the local
    interfaces; class: those networks widened to their class A/B/C."""
    nets: list[str] = []
    for addr, prefix in _interface_addresses():
        if style == "host":
            prefix = addr.max_prefixlen
        elif style == "class" and addr.version == 4:
            first = int(str(addr).split(".")[0])
            prefix = 8 if first < 128 else 16 if first < 192 else 24
        net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
        text = str(net) if net.version == 4 else f"[{net.network_address}]/{net.prefixlen}"
        if text not in nets:
            nets.append(text)
    # IPv4 networks first, as Postfix lists them.
    return " ".join(sorted(nets, key=lambda n: n.startswith("[")))


def _interface_addresses() -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """_interface_addresses - (address, prefix length) of each local interface
    address that has a netmask; loopback when there is none."""
    found = [(ip, prefix) for ip, prefix in interfaces.interface_addresses()
             if prefix is not None]
    return found or list(interfaces.LOOPBACK)


T = TypeVar("T")


class Config:
    """One program's view of main.cf plus its master.cf -o overrides."""

    def __init__(self, config_dir: str, values: dict[str, str],
                 overrides: dict[str, str] | None = None,
                 entries: list[Entry] | None = None) -> None:
        self.config_dir = config_dir
        self.main_cf = os.path.join(config_dir, "main.cf")
        self.values = values
        self.overrides = dict(overrides or {})
        self.entries = entries or []
        self._cache: dict[str, str] = {}
        self._derived: dict[tuple, Any] = {}

    # -- raw values --------------------------------------------------------
    def raw(self, name: str) -> str | None:
        """raw - the unexpanded value: override, main.cf, then default."""
        if name in self.overrides:
            return self.overrides[name]
        if name in self.values:
            return self.values[name]
        return self.default(name)

    def default(self, name: str) -> str | None:
        """default - the unexpanded default of NAME (computed ones included)."""
        p = param(name)
        if p is None:
            return None
        if p.default is not None:
            return p.default
        return self._computed_default(name)

    def _computed_default(self, name: str) -> str:
        if name in SITE_DEFAULTS and name != "config_directory":
            return SITE_DEFAULTS[name]
        if name == "myhostname":
            return _fqdn()
        if name == "mydomain":
            host = self.get("myhostname")
            return host.partition(".")[2] if "." in host else "localdomain"
        if name == "config_directory":
            return self.config_dir
        if name in ("daemon_directory",):
            return str(PROJECT_ROOT / "libexec")
        if name == "command_directory":
            return str(Path(sys.executable).parent)
        if name in ("sendmail_path", "newaliases_path", "mailq_path"):
            cmd = {"sendmail_path": "sendmail", "newaliases_path": "newaliases",
                   "mailq_path": "mailq"}[name]
            return os.path.join(str(Path(sys.executable).parent), cmd)
        if name == "mynetworks":
            return _local_networks(self.get("mynetworks_style"))
        if name == "parent_domain_matches_subdomains":
            return ("debug_peer_list,fast_flush_domains,mynetworks,"
                    "permit_mx_backup_networks,qmqpd_authorized_clients,"
                    "relay_domains,smtpd_access_maps")
        if name == "process_name":
            return os.path.basename(sys.argv[0] or "pymaster")
        if name == "process_id":
            return str(os.getpid())
        return ""

    def is_set(self, name: str) -> bool:
        """is_set - whether main.cf or an override sets NAME explicitly."""
        return name in self.overrides or name in self.values

    # -- expansion ---------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str:
        """get - the value of NAME with every $name expanded."""
        if name in self._cache:
            return self._cache[name]
        raw = self.raw(name)
        if raw is None:
            return default if default is not None else ""
        value = normalise_value(name, self.expand(raw, (name,)))
        self._cache[name] = value
        return value

    __getitem__ = get

    def expand(self, text: str, stack: tuple[str, ...] = ()) -> str:
        """expand - replace $name forms in TEXT; detect recursive definitions."""
        if "$" not in text:
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            c = text[i]
            if c != "$":
                j = text.find("$", i)
                j = n if j < 0 else j
                out.append(text[i:j])
                i = j
                continue
            i += 1
            if i >= n:
                out.append("$")
                break
            c = text[i]
            if c == "$":
                out.append("$")
                i += 1
            elif c in "{(":
                close = "}" if c == "{" else ")"
                end = _matching(text, i, c, close)
                if end < 0:
                    raise ConfigError(f"syntax error in \"{text}\": missing '{close}'")
                out.append(self._expand_braced(text[i + 1:end], stack))
                i = end + 1
            else:
                m = re.match(r"[A-Za-z0-9_]+", text[i:])
                if not m:
                    out.append("$")
                    continue
                out.append(self._lookup(m.group(0), stack))
                i += m.end()
        return "".join(out)

    def _lookup(self, name: str, stack: tuple[str, ...]) -> str:
        if name in stack:
            raise ConfigError(f"recursive definition of parameter \"{stack[0]}\" "
                              f"(via {' -> '.join(stack + (name,))})")
        if name in self._cache:
            return self._cache[name]
        raw = self.raw(name)
        if raw is None:
            return ""
        value = normalise_value(name, self.expand(raw, stack + (name,)))
        self._cache[name] = value
        return value

    def _expand_braced(self, inner: str, stack: tuple[str, ...]) -> str:
        if inner.lstrip().startswith("{"):
            return self._expand_relational(inner, stack)
        m = re.match(r"([A-Za-z0-9_]+)(?:([?:])(.*))?$", inner, re.S)
        if not m:
            raise ConfigError(f"bad parameter name in \"${{{inner}}}\"")
        name, op, rest = m.group(1), m.group(2), m.group(3)
        value = self._lookup(name, stack)
        if op is None:
            return value
        if_set, if_unset = rest, ""
        if op == "?" and rest.startswith("{"):
            # ${name?{value}:{value}}: two brace-delimited alternatives.
            end = _matching(rest, 0, "{", "}")
            if_set = rest[1:end] if end > 0 else rest
            tail = rest[end + 1:] if end > 0 else ""
            if tail.startswith(":{") and tail.endswith("}"):
                if_unset = tail[2:-1]
            elif tail:
                raise ConfigError(f"syntax error in \"${{{inner}}}\"")
        elif op == ":" and rest.startswith("{") and rest.endswith("}"):
            if_unset = rest[1:-1]
        elif op == ":":
            if_unset = rest
        if op == "?":
            return self.expand(if_set, stack) if value else self.expand(if_unset, stack)
        # postconf(5): ${name:value} is value when name is empty, else nothing.
        return "" if value else self.expand(if_unset, stack)

    def _expand_relational(self, inner: str, stack: tuple[str, ...]) -> str:
        """_expand_relational - `${{a} op {b} ? {x} : {y}}` (Postfix 3.0 and later).

        op is ==, !=, <, <=, >, >= (integers for the ordering ones) or one of
        those followed by `level`, comparing compatibility levels like 3.6."""
        groups: list[str] = []
        rest = inner.strip()
        m = None
        for want in ("a", "op", "b", "?", "x", ":", "y"):
            if want in ("a", "b", "x", "y"):
                if want == "y" and not rest:
                    break
                end = _matching(rest, 0, "{", "}") if rest.startswith("{") else -1
                if end < 0:
                    raise ConfigError(f"syntax error in \"${{{inner}}}\": expected '{{'")
                groups.append(rest[1:end])
                rest = rest[end + 1:].lstrip()
            elif want == "op":
                m = re.match(r"(==|!=|<=|>=|<|>)(level)?", rest)
                if not m:
                    raise ConfigError(f"syntax error in \"${{{inner}}}\": bad operator")
                rest = rest[m.end():].lstrip()
            else:
                if not rest.startswith(want):
                    if want == ":" and not rest:
                        break
                    raise ConfigError(f"syntax error in \"${{{inner}}}\": expected '{want}'")
                rest = rest[1:].lstrip()
        left, right = (self.expand(g.strip(), stack) for g in groups[:2])
        assert m is not None  # the "op" step matched or raised
        truth = _compare(left, m.group(1), right, bool(m.group(2)), inner)
        chosen = groups[2] if truth else (groups[3] if len(groups) > 3 else "")
        return self.expand(chosen, stack)

    # -- typed access ------------------------------------------------------
    def bool(self, name: str) -> bool:
        value = self.get(name).strip().lower()
        if value in ("yes", "true", "1", "on"):
            return True
        if value in ("no", "false", "0", "off", ""):
            return False
        raise ConfigError(f"bad boolean configuration: {name} = {value}")

    def int(self, name: str) -> int:
        value = self.get(name).strip()
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"bad numerical configuration: {name} = {value}") from None

    def time(self, name: str) -> builtins.int:  # int here is the method above
        """time - NAME in seconds; a bare number is in the parameter's unit."""
        p = param(name)
        return parse_time(self.get(name), p.unit if p else "s", name)

    def size(self, name: str) -> builtins.int:
        return self.int(name)

    def list(self, name: str) -> list[str]:
        """list - the elements of NAME; in a match list, `/file` entries are
        replaced by the words of that file."""
        items = split_list(self.get(name))
        if name in MATCH_LISTS:
            items = _read_list_files(items, name)
        return items

    def derived(self, build: Callable[..., T], *args: Any) -> T:
        """derived - what BUILD(self, *ARGS) makes (a rewriter, opened tables,
        a program's settings), built on first use and kept with this Config:
        a program reads its Config for every message, and building these
        each time would parse values or open tables per message."""
        key = (build, *args)
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = build(self, *args)
            return value

    def with_overrides(self, overrides: dict[str, str]) -> "Config":
        """with_overrides - a copy of this Config with -o NAME=VALUE on top."""
        merged = dict(self.overrides)
        merged.update(overrides)
        return Config(self.config_dir, self.values, merged, self.entries)


def _compare(left: str, op: str, right: str, level: bool, text: str) -> bool:
    """_compare - the relation of a `${{a} op {b} ? …}` expression."""
    if op in ("==", "!=") and not level:
        return (left == right) == (op == "==")
    try:
        if level:
            a = tuple(int(x) for x in left.split(".")) if left else (0,)
            b = tuple(int(x) for x in right.split(".")) if right else (0,)
        else:
            a, b = (int(left),), (int(right),)  # compare as numbers alone do
    except ValueError:
        raise ConfigError(f"bad {'level' if level else 'numerical'} operand in "
                          f"\"${{{text}}}\"") from None
    return {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b,
            ">": a > b, ">=": a >= b}[op]


def normalise_value(name: str, value: str) -> str:
    """_normalise - tidy `$config_directory/../spool` style directory paths.

    Only the *_directory parameters: their values are single absolute paths,
    and a path with `..` in it would confuse the chroot and the log."""
    if name.endswith("_directory") and value.startswith("/"):
        return os.path.normpath(value)
    return value


def _read_list_files(items: list[str], name: str) -> list[str]:
    """_read_list_files - expand `/file` entries of match list NAME."""
    out: list[str] = []
    for item in items:
        if not item.startswith("/"):
            out.append(item)
            continue
        try:
            with open(item, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"{name}: open {item}: {e.strerror}") from None
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            out.extend(split_list(line))
    return out


def _matching(text: str, start: int, open_: str, close: str) -> int:
    """_matching - index of the bracket closing the one at START, or -1."""
    depth = 0
    for k in range(start, len(text)):
        if text[k] == open_:
            depth += 1
        elif text[k] == close:
            depth -= 1
            if depth == 0:
                return k
    return -1


def parse_time(value: str, unit: str = "s", name: str = "") -> int:
    """parse_time - "5d", "300s", "300" (in UNIT) as seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw]?)\s*", value)
    if not m:
        raise ConfigError(f"bad time configuration: {name} = {value}" if name
                          else f"bad time value: {value}")
    return int(m.group(1)) * TIME_UNITS[m.group(2) or unit]


def read_main_cf(config_dir: str) -> tuple[dict[str, str], list[Entry]]:
    """read_main_cf - NAME -> raw value for DIR/main.cf; raises on a bad line."""
    path = os.path.join(config_dir, "main.cf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"open {path}: No such file or directory") from None
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror}") from None
    entries, errors = parse_main_cf(text, path)
    if errors:
        raise ConfigError(errors[0])
    return {e.name: e.value for e in entries}, entries


def load_config(config_dir: str | None = None,
                overrides: dict[str, str] | None = None) -> Config:
    """load_config - main.cf of CONFIG_DIR (or $MAIL_CONFIG, or /etc/postfix)."""
    config_dir = os.path.abspath(config_dir_from_env(config_dir))
    values, entries = read_main_cf(config_dir)
    return Config(config_dir, values, overrides, entries)


def default_config(config_dir: str | None = None) -> Config:
    """default_config - a configuration of the table's defaults alone (no
    main.cf read): for code that needs a default before main.cf loads."""
    return Config(config_dir or DEFAULT_CONFIG_DIR, {})


def known_parameter(name: str) -> bool:
    """known_parameter - whether NAME is in the parameter table."""
    return name in PARAMS


# Lines logged before a program reads main.cf (a fatal error in it, say)
# carry the table's syslog_name; every program imports this module first.
log.set_syslog_name(default_config().get("syslog_name"))
