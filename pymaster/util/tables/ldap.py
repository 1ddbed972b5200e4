"""ldap: tables: a search of an LDAP directory, per ldap_table(5).

`ldap:/etc/postfix/ldap-aliases.cf` names a file of `name = value` lines:

    server_host = ldap://ldap1:389 ldaps://ldap2 ldapi://%2Frun%2Fslapd%2Fldapi
                  or host names (host:port) with server_port (default 389)
    search_base = ou=people, dc=example, dc=com    (% escapes, RFC 4514 quoted)
    query_filter = (mail=%s)                        (default mailacceptinggeneralid=%s;
                                                    % escapes, RFC 4515 quoted)
    scope = sub | one | base                        (default sub)
    bind = yes | simple | no | none | sasl          (default yes: a simple bind,
                                                    anonymous when bind_dn is empty)
    bind_dn, bind_pw, sasl_mechs (EXTERNAL, PLAIN, DIGEST-MD5), sasl_authz_id,
    sasl_realm
    result_attribute = maildrop                     (default maildrop)
    special_result_attribute                        DNs or ldap URLs to follow
    terminal_result_attribute, leaf_result_attribute
    result_format (result_filter), domain, expansion_limit   (dbcommon)
    size_limit = $expansion_limit                   entries per search; more is
                                                    a temporary failure
    recursion_limit = 1000                          depth of special attributes
    timeout = 10                                    seconds per operation
    dereference = 0..3                              never, searching, finding, always
    chase_referrals = no, version = 3
    start_tls = no, tls_ca_cert_file, tls_ca_cert_dir, tls_cert, tls_key,
    tls_require_cert = no, tls_cipher_suite

How an entry answers (ldap_table(5)): when it holds a terminal result
attribute, only those are returned; otherwise its result attributes, its
leaf attributes when it holds no special attribute, and for each special
attribute value a base search of that DN (or the search an ldap:// URL
names), recursively. Values go through result_format and are joined with
commas. A search base built from the key that does not exist means "not
found"; a fixed one that does not exist is a temporary failure.

Servers are tried in the order given; the connection is kept and made anew
once when the server closed it. The driver is ldap3 (pure Python), imported
when an ldap: table is opened. Pymaster's default `version` is 3, where
Postfix's is 2: current servers refuse LDAPv2 binds.

Interface:
    LdapTable(type, name, cfg=None) .lookup(key)
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import unquote, urlsplit

from pymaster.util import log
from pymaster.util.strings import split_list
from pymaster.util.tables import Table, TableError
from pymaster.util.tables.dbcommon import (
    DomainFilter,
    Templates,
    admitted_key,
    join_results,
    ldap_dn_quote,
    ldap_filter_quote,
    read_settings,
)

SCOPES = {"sub": "SUBTREE", "one": "LEVEL", "base": "BASE"}
DEREF = {0: "DEREF_NEVER", 1: "DEREF_SEARCH", 2: "DEREF_BASE", 3: "DEREF_ALWAYS"}
NO_SUCH_OBJECT = 32
# The texts OpenLDAP's ldap_err2string gives the codes a lookup meets.
_CODE_TEXT = {2: "Protocol error", 3: "Timelimit exceeded", 4: "Size limit exceeded",
              10: "Referral", 13: "Confidentiality required", 32: "No such object",
              34: "Invalid DN syntax", 48: "Inappropriate authentication",
              49: "Invalid credentials", 50: "Insufficient access",
              53: "Server is unwilling to perform"}
IGNORED = ("cache", "cache_expiry", "cache_size")


class LdapTable(Table):
    """ldap:/path/to/config.cf."""

    remote = True
    driver = "ldap3"
    driver_package = "ldap3"

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True,
                 **_options) -> None:
        super().__init__(type_, name, cfg)
        self.fold = fold
        self._ldap3 = self.load_driver(self.spec)
        s = self.settings = read_settings(name, cfg)
        for ignored in IGNORED:
            if s.get(ignored):
                log.warning(f"{self.spec}: ignoring {ignored} parameter: not supported")
        fmt = s.get("result_format") or s.get("result_filter") or "%s"
        filter_ = s.get("query_filter", "mailacceptinggeneralid=%s")
        if "%" not in filter_.replace("%%", ""):
            log.warning(f"dict_ldap_open: {name}: Fixed query_filter {filter_} "
                        "is probably useless")
        self.base = s.get("search_base")
        self.filter = Templates(filter_, fmt, self.spec)
        self.base_template = Templates(self.base, "%s", self.spec)
        self.dynamic_base = "%" in self.base.replace("%%", "")
        self.domains = DomainFilter(s.get("domain"), cfg, self.spec)
        self.limit = s.get_int("expansion_limit", 0)
        self.size_limit = s.get_int("size_limit", self.limit)
        self.recursion_limit = s.get_int("recursion_limit", 1000, minimum=1)
        self.timeout = s.get_int("timeout", 10, minimum=1)
        self._attributes(s)
        self._options(s)
        self._lock = threading.Lock()
        self._conn: Any = None

    def _attributes(self, s) -> None:
        self.result_attrs = split_list(s.get("result_attribute", "maildrop"))
        self.special_attrs = split_list(s.get("special_result_attribute"))
        self.terminal_attrs = split_list(s.get("terminal_result_attribute"))
        self.leaf_attrs = split_list(s.get("leaf_result_attribute"))
        self.all_attrs = list(dict.fromkeys(self.result_attrs + self.special_attrs
                                            + self.terminal_attrs + self.leaf_attrs))

    def _options(self, s) -> None:
        scope = s.get("scope", "sub").lower()
        if scope not in SCOPES:
            raise TableError(f"{self.spec}: unrecognized value for scope: {scope}")
        self.scope = getattr(self._ldap3, SCOPES[scope])
        deref = s.get_int("dereference", 0)
        if deref not in DEREF:
            raise TableError(f"{self.spec}: unrecognized value for dereference: {deref}")
        self.deref = getattr(self._ldap3, DEREF[deref])
        self.bind = s.get("bind", "yes").lower()
        if self.bind not in ("yes", "simple", "no", "none", "sasl"):
            raise TableError(f"{self.spec}: unsupported value for bind: {self.bind}")
        self.version = s.get_int("version", 3, minimum=2)
        self.start_tls = s.get_bool("start_tls", False)
        self.referrals = s.get_bool("chase_referrals", False)
        port = s.get_int("server_port", 389)
        self.servers = [_server_url(h, port) for h in
                        split_list(s.get("server_host", "localhost"))] or \
            [_server_url("localhost", port)]

    # -- connection ------------------------------------------------------------------

    def _tls(self) -> Any:
        # ssl is not imported with this module: every process imports every
        # table type, and ssl costs about 4 MB per process. ldap3, loaded by
        # __init__ before the jail, has imported it, so this needs no file.
        import ssl
        s = self.settings
        require = s.get_bool("tls_require_cert", False)
        return self._ldap3.Tls(
            validate=ssl.CERT_REQUIRED if require else ssl.CERT_NONE,
            ca_certs_file=s.get("tls_ca_cert_file") or None,
            ca_certs_path=s.get("tls_ca_cert_dir") or None,
            local_certificate_file=s.get("tls_cert") or None,
            local_private_key_file=s.get("tls_key") or None,
            ciphers=s.get("tls_cipher_suite") or None)

    def _connect(self, url: str) -> Any:
        ldap3 = self._ldap3
        s = self.settings
        server = ldap3.Server(url, use_ssl=url.startswith("ldaps:"), tls=self._tls(),
                              get_info=ldap3.NONE, connect_timeout=self.timeout)
        args: dict[str, Any] = {"version": self.version, "receive_timeout": self.timeout,
                                "auto_referrals": self.referrals, "read_only": True,
                                "raise_exceptions": False}
        if self.bind in ("yes", "simple") and s.get("bind_dn"):
            args.update(authentication=ldap3.SIMPLE, user=s.get("bind_dn"),
                        password=s.get("bind_pw"))
        elif self.bind == "sasl":
            mech = (split_list(s.get("sasl_mechs")) or ["EXTERNAL"])[0].upper()
            args.update(authentication=ldap3.SASL, sasl_mechanism=mech,
                        sasl_credentials=self._sasl_credentials(mech),
                        user=s.get("bind_dn") or None, password=s.get("bind_pw") or None)
        conn = ldap3.Connection(server, **args)
        dn = s.get("bind_dn") or "empty or implicit"
        try:
            conn.open()
            if self.start_tls and not conn.start_tls():
                raise _Refused(f"dict_ldap_connect: Unable to set STARTTLS: {_reason(conn)}")
            if self.bind not in ("no", "none") and not conn.bind():
                raise _Refused(f"dict_ldap_connect: Unable to bind to server {url} with dn "
                               f"{dn}: {_reason(conn)}")
        except _Refused:
            conn.unbind()
            raise
        except Exception as e:          # the driver's failures, whatever their class
            conn.unbind()
            raise _Refused(f"dict_ldap_connect: Unable to bind to server {url} with dn "
                           f"{dn}: -1 (Can't contact LDAP server: {e})") from None
        return conn

    def _sasl_credentials(self, mech: str) -> Any:
        """What ldap3 takes for MECH: the authorization identity for EXTERNAL,
        (authzid, user, password) for PLAIN, (realm, user, password, authzid)
        for DIGEST-MD5."""
        s = self.settings
        authz = s.get("sasl_authz_id")
        if mech == "EXTERNAL":
            return authz
        if mech == "PLAIN":
            return (authz, s.get("bind_dn"), s.get("bind_pw"))
        if mech == "DIGEST-MD5":
            return (s.get("sasl_realm") or None, s.get("bind_dn"), s.get("bind_pw"),
                    authz or None)
        raise _Refused(f"dict_ldap_connect: unsupported SASL mechanism: {mech}")

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        for url in self.servers:
            try:
                self._conn = self._connect(url)
                return self._conn
            except _Refused as e:
                log.warning(str(e))
        raise TableError(f"table {self.spec}: query error")

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unbind()
            except Exception:           # a broken connection: nothing left to close
                pass

    # -- lookup ----------------------------------------------------------------------

    def lookup(self, key: str) -> str | None:
        admitted = admitted_key(key, self.fold, self.domains)
        if admitted is None:
            return None
        key = admitted
        base = self.base_template.expand_query(key, ldap_dn_quote)
        if base is None:
            return None
        query = self.filter.expand_query(key, ldap_filter_quote)
        if query is None:
            return None
        if not query.startswith("("):
            query = f"({query})"
        with self._lock:
            values = self._values(base, query, self.scope, self.all_attrs, 0)
        return join_results(values, key, self.filter, self.limit,
                            f"dict_ldap_get_values[1]: {self.name}")

    def _search(self, base: str, query: str, scope: Any, attrs: list[str],
                top: bool) -> list[dict]:
        """_search - the entries found; a second try on a new connection when the
        kept one broke; TableError when the search fails."""
        ldap3 = self._ldap3
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.search(base, query, search_scope=scope, dereference_aliases=self.deref,
                            attributes=attrs or [ldap3.NO_ATTRIBUTES],
                            size_limit=self.size_limit, time_limit=self.timeout)
            except Exception as e:      # the driver's failures, whatever their class
                self._drop()
                if attempt == 2:
                    log.warning(f"dict_ldap_lookup: Search error -1: {e}")
                    raise TableError(f"table {self.spec}: query error") from None
                continue
            break
        result = conn.result or {}
        code = result.get("result", 0)
        if code == NO_SUCH_OBJECT:
            if top and self.dynamic_base:
                return []       # a base made from the key: the key is not there
            log.warning(f"dict_ldap_lookup: {self.name}: Search base '{base}' not found: "
                        f"{code}: No such object")
            raise TableError(f"table {self.spec}: query error")
        if code != 0:
            log.warning(f"dict_ldap_lookup: Search error {code}: {_code_text(result)}")
            raise TableError(f"table {self.spec}: query error")
        return [e for e in conn.response or () if e.get("type") == "searchResEntry"]

    def _values(self, base: str, query: str, scope: Any, attrs: list[str],
                depth: int) -> list[str]:
        """_values - the result values of a search and of the entries it refers to."""
        if depth > self.recursion_limit:
            raise TableError(f"{self.spec}: Recursion limit exceeded for special "
                             f"attribute references under {base}")
        values: list[str] = []
        for entry in self._search(base, query, scope, attrs, top=depth == 0):
            values += self._entry_values(entry, depth)
        return values

    def _entry_values(self, entry: dict, depth: int) -> list[str]:
        found = {name.lower(): [_text(v) for v in vals]
                 for name, vals in (entry.get("raw_attributes") or {}).items() if vals}
        terminal = [v for a in self.terminal_attrs for v in found.get(a.lower(), ())]
        if terminal:
            return terminal
        special = [v for a in self.special_attrs for v in found.get(a.lower(), ())]
        values = [v for a in self.result_attrs for v in found.get(a.lower(), ())]
        if not special:
            values += [v for a in self.leaf_attrs for v in found.get(a.lower(), ())]
        for ref in special:
            values += self._follow(ref, depth + 1)
        return values

    def _follow(self, ref: str, depth: int) -> list[str]:
        """_follow - the values of the entry a DN names, or of an ldap URL's search."""
        ldap3 = self._ldap3
        if not ref.lower().startswith("ldap"):
            return self._values(ref, "(objectClass=*)", ldap3.BASE, self.all_attrs, depth)
        url = urlsplit(ref)
        parts = (url.query.split("?") + ["", "", ""])[:3]
        wanted, scope, query = parts
        table_attrs = {a.lower(): a for a in self.all_attrs}
        attrs = [table_attrs[a.lower()] for a in split_list(wanted) if a.lower() in table_attrs] \
            if wanted else self.all_attrs
        return self._values(unquote(url.path.lstrip("/")), unquote(query) or "(objectClass=*)",
                            getattr(ldap3, SCOPES.get(scope or "base", "BASE")), attrs, depth)


class _Refused(Exception):
    """A server that could not be reached or bound to: Postfix's warning text."""


def _server_url(host: str, port: int) -> str:
    """_server_url - an ldap URL for a server_host element (host, host:port, URL)."""
    if "://" in host:
        return host.rstrip("/")
    has_port = "]:" in host if host.startswith("[") else ":" in host
    return f"ldap://{host}" if has_port else f"ldap://{host}:{port}"


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _code_text(result: dict) -> str:
    code = result.get("result", -1)
    return _CODE_TEXT.get(code) or str(result.get("description") or result.get("message"))


def _reason(conn: Any) -> str:
    """_reason - "49 (Invalid credentials)": the last result as Postfix words it."""
    result = conn.result or {}
    return f"{result.get('result', -1)} ({_code_text(result)})"
