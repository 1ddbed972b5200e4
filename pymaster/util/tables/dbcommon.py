"""What the database tables share: the .cf file, the % templates, the keys.

mysql:, pgsql:, ldap:, sqlite: and memcache: tables are configured by a file
of `name = value` lines (main.cf's syntax: `#` comments, continuation lines
that start with white space, no `$name` expansion). A name that starts with
neither `/` nor `.` is Postfix's obsolete form: the settings are main.cf
parameters `NAME_setting`.

The query (SQL `query`, LDAP `query_filter` and `search_base`, memcache
`key_format`) and `result_format` are templates with these escapes
(mysql_table(5), ldap_table(5)):

    %%        a percent sign
    %s %S     the key (quoted for the query language in a query)
    %u %U     the key's local part, the whole key when it has no @
    %d %D     the key's domain
    %1..%9    the key's domain labels counted from the right (%1 = com)

In result_format the lower-case %s %u %d take the result value and the
upper-case ones and the digits the key. A template that needs a part the key
lacks (%d of a bare name, %u of "@domain", %3 of "a@b.c") suppresses the
lookup: it answers "not found" without asking the server; a result value that
lacks a part (%d of a value without @) is skipped. A `domain` list limits
lookups to keys `user@domain` whose domain is on it (names, /file/name,
type:table). The tables stay exact-key tables (Table.fixed) even when the
query uses a part of the key, as Postfix's do (partial keys would break
recipient_delimiter lookups).

Results: each value through result_format, joined with commas; an empty
value (and an empty key) is skipped with Postfix's warning; more than
`expansion_limit` (when not 0) is a temporary failure.

Interface:
    read_settings(name, cfg=None) -> Settings        the .cf file (or main.cf form)
    Settings.get(name, default) .get_int(name, default, minimum) .get_bool(...)
    Settings.path                                   what to name in messages
    Templates(query, result_format, spec)           the parsed pair
        .expand_query(key, quote) -> str | None     None: do not ask
        .add_result(out, value, key) -> bool        one value through result_format
    DomainFilter(value, cfg, spec) .allows(key)     the `domain` list
    join_results(values, key, templates, limit, label) -> str | None
    usable_key(key) -> bool                         a key a query may carry
    admitted_key(key, fold, domains) -> str | None  the key to ask, or None
    sql_quote(text) -> str ; ldap_filter_quote(text) -> str ; ldap_dn_quote(text) -> str
    HostList(hosts, retry_interval)                 random order, failed hosts rested
"""

from __future__ import annotations

# Drivers encode server host names with this codec when they connect, which
# for a chrooted service is after the jail hides Python's library.
import encodings.idna  # noqa: F401
import random
import time
from typing import Callable, Iterator

from pymaster.util import log
from pymaster.util.strings import split_list
from pymaster.util.tables import TableError, open_table
from pymaster.util.tables.source import logical_lines

Quote = Callable[[str], str]

# Escapes and what each needs of the key (query) or of the value (result).
_KEY_PARTS = {"s": "", "u": "user", "d": "domain", "S": "", "U": "user", "D": "domain"}


def _no_quote(text: str) -> str:
    return text


class Settings:
    """The `name = value` settings of one database table."""

    def __init__(self, path: str, values: dict[str, str]) -> None:
        self.path = path
        self.values = values

    def get(self, name: str, default: str = "") -> str:
        return self.values.get(name, default)

    def get_int(self, name: str, default: int, minimum: int = 0) -> int:
        text = self.values.get(name)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            raise TableError(f"{self.path}: bad numerical configuration: "
                             f"{name} = {text}") from None
        if value < minimum:
            raise TableError(f"{self.path}: invalid {name} parameter value {value} "
                             f"< {minimum}")
        return value

    def get_bool(self, name: str, default: bool) -> bool:
        text = self.values.get(name, "").strip()
        if not text:
            return default
        # Only yes and no, as Postfix's parser of these files takes them.
        if text.lower() == "yes":
            return True
        if text.lower() == "no":
            return False
        raise TableError(f"{self.path}: bad boolean configuration: {name} = {text}")


def read_settings(name: str, cfg=None) -> Settings:
    """read_settings - the settings of table NAME: its .cf file, or main.cf's NAME_*."""
    if not name.startswith(("/", ".")):
        return _main_cf_settings(name, cfg)
    values: dict[str, str] = {}
    try:
        with open(name, encoding="utf-8", errors="surrogateescape") as f:
            for lineno, text in logical_lines(f):
                key, eq, value = text.partition("=")
                if not eq:
                    raise TableError(f"{name}, line {lineno}: missing '=' after attribute "
                                     f"name: \"{key.strip()}\"")
                values[key.strip()] = value.strip()
    except OSError as e:
        raise TableError(f"open {name}: {e.strerror}") from None
    return Settings(name, values)


def _main_cf_settings(name: str, cfg) -> Settings:
    """The obsolete form: `NAME_hosts = …` in main.cf."""
    values: dict[str, str] = {}
    prefix = name + "_"
    for key in dict(getattr(cfg, "values", None) or {}):
        if key.startswith(prefix):
            values[key[len(prefix):]] = str(cfg.get(key))
    return Settings(name, values)


def admitted_key(key: str, fold: bool, domains: "DomainFilter") -> str | None:
    """admitted_key - KEY as a query takes it (folded), or None when it is not
    looked up at all: not valid UTF-8, or outside `domain`."""
    if not usable_key(key):
        return None
    if fold:
        key = key.lower()
    return key if domains.allows(key) else None


def usable_key(key: str) -> bool:
    """usable_key - False for a key that is not valid UTF-8 (Postfix skips those)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in key


class Templates:
    """A query template and a result_format, parsed together.

    Parsed together because a part that result_format takes from the key
    (%D, %U, %1..) suppresses the lookup of a key without it, as the query's
    own escapes do."""

    def __init__(self, query: str, result_format: str, spec: str) -> None:
        self.spec = spec
        self.query = query
        self.result_format = result_format or "%s"
        self.key_needs: set[str] = set()     # "user", "domain"
        self.value_needs: set[str] = set()
        self.labels = 0                       # the highest %1..%9
        self._scan(self.query, is_query=True)
        self._scan(self.result_format, is_query=False)

    def _scan(self, template: str, is_query: bool) -> None:
        for escape in _escapes(template, self.spec, "query" if is_query else "result"):
            if escape in "123456789":
                self.labels = max(self.labels, int(escape))
                self.key_needs.add("domain")
            elif escape in "ud" and not is_query:
                self.value_needs.add(_KEY_PARTS[escape])
            elif _KEY_PARTS.get(escape):
                self.key_needs.add(_KEY_PARTS[escape])

    def expand_query(self, key: str, quote: Quote) -> str | None:
        """expand_query - the query for KEY; None when KEY lacks a part it needs."""
        if not key:
            log.warning(f"table \"{self.spec}\": empty query string -- ignored")
            return None
        parts = _parts(key, self.key_needs, self.labels)
        if parts is None:
            return None
        return _expand(self.query, parts, parts, quote)

    def add_result(self, out: list[str], value: str, key: str) -> bool:
        """add_result - VALUE through result_format onto OUT; False when skipped."""
        if not value:
            log.warning(f"table \"{self.spec}\": empty lookup result for: \"{key}\""
                        " -- ignored")
            return False
        value_parts = _parts(value, self.value_needs, 0)
        key_parts = _parts(key, self.key_needs, self.labels)
        if value_parts is None or key_parts is None:
            return False
        out.append(_expand(self.result_format, value_parts, key_parts, _no_quote))
        return True


def _escapes(template: str, spec: str, kind: str) -> Iterator[str]:
    """The escape letters of TEMPLATE; TableError for an unknown one."""
    i = 0
    while i < len(template):
        if template[i] != "%":
            i += 1
            continue
        e = template[i + 1:i + 2]
        if e != "%" and (not e or (e not in _KEY_PARTS and e not in "123456789")):
            raise TableError(f"db_common_parse: {spec}: Invalid {kind} template: {template}")
        if e != "%":
            yield e
        i += 2


def _parts(text: str, needs: set[str], labels: int) -> dict[str, str] | None:
    """The parts of an address TEXT (s, u, d, 1..9); None when a needed one is missing."""
    local, at, domain = text.rpartition("@")
    if not at:
        local, domain = text, ""
    if "domain" in needs and not domain:
        return None
    if "user" in needs and at and not local:
        return None
    parts = {"s": text, "u": local, "d": domain}
    names = domain.split(".")[::-1] if domain else []
    if labels > len(names) or not all(names[:labels]):
        return None
    for n, label in enumerate(names[:9], 1):
        parts[str(n)] = label
    return parts


def _expand(template: str, lower: dict[str, str], upper: dict[str, str], quote: Quote) -> str:
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c != "%" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = template[i + 1]
        i += 2
        if e == "%":
            out.append("%")
        elif e in "sud":
            out.append(quote(lower[e]))
        else:
            out.append(quote(upper[e.lower()]))
    return "".join(out)


def join_results(values: list[str], key: str, templates: Templates, limit: int,
                 label: str) -> str | None:
    """join_results - the table's answer: each value formatted, joined with commas.

    More than LIMIT (when not 0) values is a temporary failure (TableError),
    warned about as "LABEL: Expansion limit exceeded" (LABEL names the lookup
    function and table, as Postfix's warning does)."""
    out: list[str] = []
    for value in values:
        if templates.add_result(out, value, key) and limit and len(out) > limit:
            log.warning(f"{label}: Expansion limit exceeded for key: '{key}'")
            raise TableError(f"table {templates.spec}: query error")
    return ",".join(out) if out else None


class DomainFilter:
    """The `domain` setting: only keys user@domain with a listed domain are asked."""

    def __init__(self, value: str, cfg, spec: str) -> None:
        self.cfg = cfg
        self.spec = spec
        self.items: list[tuple[bool, str]] = []
        for item in split_list(value):
            negate = item.startswith("!")
            item = item.lstrip("!")
            if item.startswith("/"):
                self.items += [(negate, word) for word in _file_words(item)]
            else:
                self.items.append((negate, item))

    def __bool__(self) -> bool:
        return bool(self.items)

    def allows(self, key: str) -> bool:
        """allows - whether KEY may be looked up; TableError when a listed table fails."""
        if not self.items:
            return True
        local, at, domain = key.rpartition("@")
        if not at or not local or not domain:
            return False
        domain = domain.lower()
        for negate, item in self.items:
            if ":" in item and not item.startswith("["):
                found = open_table(item, self.cfg).lookup(domain) is not None
            else:
                found = item.lower() == domain
            if found:
                return not negate
        return False


def _file_words(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return [w for line in f if not line.lstrip().startswith("#")
                    for w in split_list(line)]
    except OSError as e:
        raise TableError(f"open {path}: {e.strerror}") from None


def sql_quote(text: str) -> str:
    """sql_quote - TEXT safe inside '…' of a standard SQL string (PostgreSQL, SQLite)."""
    return text.replace("'", "''")


def mysql_quote(text: str) -> str:
    """mysql_quote - TEXT safe inside '…' or "…" of MySQL (mysql_real_escape_string)."""
    table = {"\0": "\\0", "\n": "\\n", "\r": "\\r", "\\": "\\\\", "'": "\\'",
             '"': '\\"', "\x1a": "\\Z"}
    return "".join(table.get(c, c) for c in text)


def ldap_filter_quote(text: str) -> str:
    """ldap_filter_quote - TEXT as a value in an LDAP search filter (RFC 4515 escapes)."""
    return "".join(f"\\{ord(c):02X}" if c in "*()\\\0" else c for c in text)


def ldap_dn_quote(text: str) -> str:
    """ldap_dn_quote - TEXT as an attribute value in a DN (RFC 4514 escapes)."""
    out = []
    for i, c in enumerate(text):
        edge = (i == 0 and c in " #") or (i == len(text) - 1 and c == " ")
        out.append(f"\\{ord(c):02X}" if edge or c in ',+"\\<>;=\0' else c)
    return "".join(out)


class HostList:
    """Database hosts as Postfix tries them: in random order, each failed host
    left alone for `retry_interval` seconds (then tried again)."""

    def __init__(self, hosts: list[str], retry_interval: int,
                 first: Callable[[str], bool] = lambda h: False) -> None:
        self.hosts = hosts
        self.retry_interval = retry_interval
        self.first = first          # hosts tried before the others (mysql: unix sockets)
        self._failed: dict[str, float] = {}

    def order(self) -> list[str]:
        """order - the hosts to try now: the rested ones first, shuffled."""
        now = time.monotonic()
        ready = [h for h in self.hosts if self._failed.get(h, 0.0) <= now]
        random.shuffle(ready)
        ready.sort(key=lambda h: not self.first(h))
        return ready

    def failed(self, host: str) -> None:
        self._failed[host] = time.monotonic() + self.retry_interval

    def worked(self, host: str) -> None:
        self._failed.pop(host, None)
