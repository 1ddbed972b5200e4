"""memcache: tables: a memcached server as a lookup table, per memcache_table(5).

`memcache:/etc/postfix/memcache-verify.cf` names a file of `name = value`
lines (main.cf syntax):

    memcache = inet:127.0.0.1:11211    the server: inet:host:port, inet:[v6]:port
                                       or unix:/path (default inet:localhost:11211)
    backup = proxy:btree:/var/lib/postfix/verify_cache
                                       a persistent table behind the cache: asked on
                                       a miss (its answer is then cached), written
                                       with every update and delete, and the one
                                       that lists entries (items)
    key_format = verify:%s             the memcache key (%s %u %d %1-%9 as in the
                                       SQL tables; not applied to backup requests)
    domain = example.com, hash:/x      only user@domain keys of these domains
    ttl = 3600     flags = 0           what an update stores with the value
    data_size_limit = 10240  line_size_limit = 1024    reply limits in bytes
    max_try = 2  retry_pause = 1  timeout = 2          error handling

The client speaks memcached's text protocol over one kept connection (`get`,
`set`, `delete`), serialised by a lock, because smtpd asks remote tables
from several threads. A command that fails (timeout, reset, garbled reply)
is tried `max_try` times, `retry_pause` seconds apart, on a new connection;
a server that refuses the connection is not retried. Without a backup a
failure is a TableError (the caller defers); with one, the cache is only a
cache: a failed get falls through to the backup, a failed set or delete is
logged and the backup's answer stands.

Keys are folded to lower case unless the table is opened with fold=False
(postmap -f). memcached refuses keys over 250 bytes or with white space or
control characters: such a key is not looked up (not found) and not stored
(a warning), as is a key whose key_format expansion is empty (%u of
"@domain", %d of a bare name) or outside `domain`.

Interface:
    MemcacheTable(type, name, cfg=None, fold=True)
        .lookup(key) .update(key, value) .delete(key) -> bool .items()
    parse_server(spec) -> (family, address)
"""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import Any, Iterator

from pymaster.util import log
from pymaster.util.tables import Table, TableError, TableUnavailable, open_table
from pymaster.util.tables.dbcommon import DomainFilter, Templates, read_settings

# memcache_table(5)'s defaults, and the least value each number may take.
DEFAULTS = {"memcache": "inet:localhost:11211", "backup": "", "key_format": "%s", "domain": ""}
NUMBERS = {"flags": (0, 0), "ttl": (3600, 0), "data_size_limit": (10240, 1),
           "line_size_limit": (1024, 1), "max_try": (2, 1), "retry_pause": (1, 0),
           "timeout": (2, 1)}
MAX_KEY = 250                           # memcached's own key length limit
_BAD_KEY = re.compile(rb"[\x00-\x20\x7f]")
_SURR = "surrogateescape"


class _Refused(Exception):
    """The server accepts no connection (memcache_table(5): no retry); the reason."""


class _Failed(Exception):
    """A command that failed on an open connection (worth another try)."""


def parse_server(spec: str) -> tuple[int, str | tuple[str, int]]:
    """parse_server - (address family, connect address) of a `memcache` value."""
    kind, colon, rest = spec.strip().partition(":")
    if colon and kind == "unix" and rest:
        return socket.AF_UNIX, rest
    if not colon or kind != "inet":
        # A bare host:port is taken as inet, as Postfix's memcache client does.
        kind, rest = "inet", spec.strip()
    m = re.fullmatch(r"\[([^\]]+)\]:(\S+)|([^:\s]+):(\S+)", rest)
    if not m:
        raise TableError(f"memcache: bad server address \"{spec}\"")
    host = m.group(1) or m.group(3)
    port_text = m.group(2) or m.group(4)
    try:
        port = int(port_text) if port_text.isdigit() else socket.getservbyname(port_text)
    except OSError:
        raise TableError(f"memcache: unknown port \"{port_text}\" in \"{spec}\"") from None
    return (socket.AF_INET6 if m.group(1) else socket.AF_INET), (host, port)


class _Connection:
    """One kept connection to the server and the text protocol over it."""

    def __init__(self, server: str, settings: dict[str, int]) -> None:
        self.server = server
        self.family, self.address = parse_server(server)
        # How Postfix's connect warning names the server: host:port or the path.
        self.where = server.partition(":")[2] if server.startswith(("inet:", "unix:")) \
            else server
        self.timeout = settings["timeout"]
        self.line_limit = settings["line_size_limit"]
        self.data_limit = settings["data_size_limit"]
        self.sock: socket.socket | None = None
        self.reader: Any = None             # the socket's buffered reader while connected

    def _connect(self) -> None:
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.address)
            else:
                sock = socket.create_connection(self.address, self.timeout)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            log.warning(f"connect to {self.where}: {e.strerror}")
            raise _Refused(e.strerror) from None
        except OSError as e:
            log.warning(f"connect to {self.where}: {e.strerror or e}")
            raise _Failed(str(e.strerror or e)) from None
        self.sock, self.reader = sock, sock.makefile("rb")

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
        self.sock = self.reader = None

    def _line(self) -> bytes:
        line = self.reader.readline(self.line_limit + 2)
        if not line:
            raise _Failed(f"{self.server}: connection closed by server")
        if not line.endswith(b"\r\n"):
            raise _Failed(f"{self.server}: reply line longer than {self.line_limit} bytes")
        return line[:-2]

    def command(self, request: bytes) -> bytes:
        """command - send REQUEST, return the first reply line."""
        if self.sock is None:
            self._connect()
        assert self.sock is not None
        try:
            self.sock.sendall(request)
            return self._line()
        except OSError as e:
            raise _Failed(f"{self.server}: {e.strerror or e}") from None

    def get(self, key: bytes) -> bytes | None:
        line = self.command(b"get " + key + b"\r\n")
        if line == b"END":
            return None
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE" or not parts[3].isdigit():
            raise _Failed(f"{self.server}: unexpected reply: {_shown(line)}")
        size = int(parts[3])
        if size > self.data_limit:
            raise _Failed(f"{self.server}: reply data longer than {self.data_limit} bytes")
        try:
            data = self.reader.read(size + 2)
        except OSError as e:
            raise _Failed(f"{self.server}: {e.strerror or e}") from None
        if len(data) != size + 2 or not data.endswith(b"\r\n") or self._line() != b"END":
            raise _Failed(f"{self.server}: malformed reply data")
        return data[:-2]

    def set(self, key: bytes, value: bytes, flags: int, ttl: int) -> None:
        head = b"set %s %d %d %d\r\n" % (key, flags, ttl, len(value))
        line = self.command(head + value + b"\r\n")
        if line != b"STORED":
            raise _Failed(f"{self.server}: set refused: {_shown(line)}")

    def delete(self, key: bytes) -> bool:
        line = self.command(b"delete " + key + b"\r\n")
        if line not in (b"DELETED", b"NOT_FOUND"):
            raise _Failed(f"{self.server}: unexpected reply: {_shown(line)}")
        return line == b"DELETED"


def _shown(line: bytes) -> str:
    return line.decode("ascii", "backslashreplace")


class MemcacheTable(Table):
    """memcache:/path/to/config.cf."""

    remote = True

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.fold = fold
        try:
            read = read_settings(name, cfg)
        except TableError as e:
            raise TableUnavailable(self.spec, str(e)) from None
        settings = {key: read.get(key) or default for key, default in DEFAULTS.items()}
        self.numbers = {key: read.get_int(key, default, least)
                        for key, (default, least) in NUMBERS.items()}
        self.key_format = Templates(settings["key_format"], "%s", self.spec)
        self.domains = DomainFilter(settings["domain"], cfg, self.spec)
        self.backup: Table | None = open_table(settings["backup"], cfg) \
            if settings["backup"] else None
        self.conn = _Connection(settings["memcache"], self.numbers)
        self.lock = threading.Lock()

    # -- keys --------------------------------------------------------------
    def _key(self, key: str, writing: bool) -> bytes | None:
        """_key - the memcache key for KEY; None when it must not be used."""
        if not self.domains.allows(key):
            return self._skip(writing, f"key \"{key}\" is outside the domain list")
        expanded = self.key_format.expand_query(key, quote=str)
        if expanded is None:
            return self._skip(writing, f"key_format expansion of \"{key}\" is empty")
        raw = expanded.encode("utf-8", _SURR)
        if len(raw) > MAX_KEY or _BAD_KEY.search(raw):
            return self._skip(writing, f"skipping key with blank or control character "
                                    f"or over {MAX_KEY} bytes: \"{expanded}\"")
        return raw

    def _skip(self, warn: bool, text: str) -> bytes | None:
        """_skip - no key; an update says why (a lookup is silent, as Postfix's)."""
        if warn:
            log.warning(f"{self.spec}: {text}")
        return None

    # -- the protocol, with retries ----------------------------------------
    def _call(self, what: str, fn):
        """_call - FN(connection) under the lock, tried max_try times.

        A kept connection that the server closed while idle (a restart, its
        idle timeout) fails the first command on it: that try is not
        counted and is repeated at once on a new connection (every command
        here may be repeated: get, set and delete are idempotent)."""
        tries = self.numbers["max_try"]
        attempt = 0
        with self.lock:
            while True:
                kept = self.conn.sock is not None
                try:
                    return fn(self.conn)
                except _Refused as e:
                    self.conn.close()
                    raise TableError(f"table {self.spec}: {what} error: {e}") from None
                except _Failed as e:
                    self.conn.close()
                    if kept:
                        continue
                    attempt += 1
                    if attempt == tries:
                        raise TableError(f"table {self.spec}: {what} error: {e}") from None
                    time.sleep(self.numbers["retry_pause"])

    # -- the table interface -------------------------------------------------
    def lookup(self, key: str) -> str | None:
        if self.fold:
            key = key.lower()
        mkey = self._key(key, writing=False)
        if mkey is None:
            return None
        try:
            value = self._call("query", lambda c: c.get(mkey))
        except TableError as e:
            if self.backup is None:
                raise
            log.warning(str(e))
            return self.backup.lookup(key)
        if value is not None:
            return value.decode("utf-8", _SURR)
        if self.backup is None:
            return None
        found = self.backup.lookup(key)
        if found is not None:
            self._store_quietly(mkey, found)
        return found

    def update(self, key: str, value: str) -> None:
        """update - store VALUE under KEY in the backup (if any) and the cache."""
        if self.fold:
            key = key.lower()
        mkey = self._key(key, writing=True)
        if mkey is None:
            return
        if self.backup is not None:
            _writable(self.backup, "update").update(key, value)
            self._store_quietly(mkey, value)
            return
        self._set(mkey, value)

    def delete(self, key: str) -> bool:
        """delete - remove KEY from the cache and the backup; False when absent."""
        if self.fold:
            key = key.lower()
        mkey = self._key(key, writing=True)
        if mkey is None:
            return False
        if self.backup is None:
            return bool(self._call("delete", lambda c: c.delete(mkey)))
        found = _writable(self.backup, "delete").delete(key) is not False
        try:
            self._call("delete", lambda c: c.delete(mkey))
        except TableError as e:
            log.warning(str(e))
        return found

    def items(self) -> Iterator[tuple[str, str]]:
        """items - the backup's entries; none (a warning) without a backup,
        as Postfix's postmap -s shows it."""
        if self.backup is None:
            log.warning(f"database {self.spec}: first/next support requires backup database")
            return iter(())
        return self.backup.items()

    def _set(self, mkey: bytes, value: str) -> None:
        data = value.encode("utf-8", _SURR)
        flags, ttl = self.numbers["flags"], self.numbers["ttl"]
        self._call("update", lambda c: c.set(mkey, data, flags, ttl))

    def _store_quietly(self, mkey: bytes, value: str) -> None:
        """_store_quietly - refresh the cache from the backup: a failure is only logged."""
        try:
            self._set(mkey, value)
        except TableError as e:
            log.warning(str(e))

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _writable(table: Table, op: str):
    if not hasattr(table, op):
        raise TableError(f"table {table.spec} does not support updates")
    return table
