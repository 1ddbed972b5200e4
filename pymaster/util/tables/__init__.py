"""Lookup tables: one interface over every `type:name` table Postfix knows.

A table answers one question, `lookup(key)`: the value, or None when the
key is not there. A table that cannot answer right now (a file that cannot
be read, a database that is down, `fail:`) raises TableError instead, so the
caller defers the mail and never bounces it for a temporary problem.

Tables are opened once per process and cached by their spec; a file-based
table notices when its file was rebuilt (postmap replaces it atomically)
and reopens itself, so `postmap` without `postfix reload` works.

Interface:
    open_table(spec, cfg=None) -> Table     "hash:/etc/postfix/virtual", cached
    create_table(spec, cfg=None) -> Table   the same, never cached (postmap -f)
    split_spec(spec) -> (type, name)
    TableError                               temporary failure / bad table
    TableUnavailable(spec, reason)           a TableError: a table that cannot be
                                             opened (unsupported type, missing
                                             file); .warning is Postfix's line
    UnavailableTable                         what open_table gives for such a
                                             table: every lookup raises
                                             TableUnavailable, so a service
                                             defers instead of dying at start-up
    Table.lookup(key) -> str | None
    Table.items() -> iterator of (key, value)   for the types that can list
    .update(key, value), .delete(key) -> bool   only the writable types (lmdb,
                                             memcache, proxy:): postmap -i/-d,
                                             proxywrite and the verify cache
                                             look for these methods
    Table.creatable                          the class takes create=True: a
                                             writer may start a missing file
    Table.fixed                              False for pattern tables (regexp,
                                             pcre, cidr): they are asked only
                                             the full key of a lookup order
    Table.remote                             True when a lookup waits on another
                                             process or the network (socketmap,
                                             proxy:, databases): an event loop
                                             asks such a table from a thread
    Table.driver, Table.driver_package       the module a lookup needs, its package
    Table.prepare()                          (class method) import what lookups of
                                             the type need (a database driver)
    Table.load_driver(spec)                  (class method) that driver's module
    prepare_type(spec)                       prepare() the type of SPEC, under any
                                             proxy: prefixes (before a chroot)
    TYPES                                    type name -> "module:Class"
    CHECK_INTERVAL                           seconds between file change checks
    preload(named=None)                      import every table type now (the
                                             database types only when in NAMED,
                                             if given): a service calls it
                                             before chroot and privilege drop
                                             hide Python's library
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Iterable, Iterator

from pymaster.util import log

# How often (seconds) a file table looks whether its file was replaced; a
# stat() per lookup would halve the lookup rate.
CHECK_INTERVAL = 1.0

TYPES: dict[str, str] = {
    "hash": "hashdb:HashTable",
    "btree": "hashdb:HashTable",
    "cdb": "hashdb:CdbTable",
    "texthash": "texthash:TextHashTable",
    "regexp": "regexp:RegexpTable",
    "pcre": "regexp:PcreTable",
    "cidr": "cidr:CidrTable",
    "static": "simple:StaticTable",
    "inline": "simple:InlineTable",
    "fail": "simple:FailTable",
    "environ": "simple:EnvironTable",
    "unix": "simple:UnixTable",
    "sqlite": "sqlite:SqliteTable",
    "mysql": "mysql:MysqlTable",
    "pgsql": "pgsql:PgsqlTable",
    "ldap": "ldap:LdapTable",
    "lmdb": "lmdb:LmdbTable",
    "memcache": "memcache:MemcacheTable",
    "socketmap": "socketmap:SocketmapTable",
    "unionmap": "composite:UnionTable",
    "pipemap": "composite:PipeTable",
    "proxy": "proxy:ProxyTable",
}

_cache: dict[str, "Table"] = {}


class TableError(Exception):
    """A table that cannot answer now (the caller defers), or a bad table spec."""


class TableUnavailable(TableError):
    """A table that could not be opened at all (Postfix's configuration error).

    str() is the reason alone (postmap's fatal line); `warning` is the line a
    service logs: "hash:/x is unavailable. open database /x.db: No such file"."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(reason)
        self.spec = spec
        self.reason = reason

    @property
    def warning(self) -> str:
        return f"{self.spec} is unavailable. {self.reason}"


class Table:
    """The interface every table type implements."""

    type = ""
    fixed = True        # exact-key table (Postfix DICT_FLAG_FIXED)
    remote = False      # a lookup may wait on another process or the network
    creatable = False   # takes create=True (a writer may start a missing file)
    driver = ""         # the Python module a lookup needs (a database driver)
    driver_package = "" # the package that installs it

    def __init__(self, type_: str, name: str, cfg=None) -> None:
        self.type = type_
        self.name = name
        self.cfg = cfg

    @property
    def spec(self) -> str:
        return f"{self.type}:{self.name}"

    @classmethod
    def prepare(cls) -> None:
        """prepare - import now what a lookup of this type will need later.

        A database driver is imported only when a table of its type is
        configured, but before the service's chroot hides the library."""
        try:
            cls.load_driver()
        except TableError:
            pass                # the table's opening says so

    @classmethod
    def load_driver(cls, spec: str = ""):
        """load_driver - the module `driver` names (None without one); TableError
        naming SPEC and the package to install when it is missing."""
        if not cls.driver:
            return None
        try:
            return importlib.import_module(cls.driver)
        except ImportError:
            raise TableError(f"{spec or cls.__name__}: this table type needs the Python "
                             f"package {cls.driver_package}, which is not installed") from None

    def lookup(self, key: str) -> str | None:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[str, str]]:
        raise TableError(f"table {self.spec}: sequential access is not supported")

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__} {self.spec}>"


class FileTable(Table):
    """A table loaded from one file, reloaded when the file is replaced.

    Subclasses set `self.path` and implement `load()`; `current()` returns
    whatever load() built, reloading when (inode, size, mtime) changed."""

    path = ""

    def __init__(self, type_: str, name: str, cfg=None) -> None:
        super().__init__(type_, name, cfg)
        self._stamp: tuple | None = None
        self._data = None
        self._checked = 0.0
        self._error: str | None = None

    def load(self):
        raise NotImplementedError

    def current(self):
        now = time.monotonic()
        if self._data is not None and now - self._checked < CHECK_INTERVAL:
            return self._data
        self._checked = now
        try:
            st = os.stat(self.path)
        except OSError as e:
            if self._data is not None and self._error is None:
                # A file replaced by rename is never missing; a deleted one
                # leaves the last good copy in use, as Postfix's open map does.
                return self._data
            raise TableUnavailable(self.spec, f"open database {self.path}: {e.strerror}") \
                from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._data = self.load()
            self._stamp = stamp
        return self._data


class UnavailableTable(Table):
    """A table open_table could not open: each lookup reports why, and fails."""

    def __init__(self, type_: str, name: str, reason: str) -> None:
        super().__init__(type_, name)
        self.reason = reason

    def lookup(self, key: str) -> str | None:
        raise TableUnavailable(self.spec, self.reason)


def split_spec(spec: str) -> tuple[str, str]:
    """split_spec - "type:name" as (type, name); TableError when there is no type."""
    type_, colon, name = spec.strip().partition(":")
    if not colon or not type_ or not type_.replace("_", "").isalnum():
        raise TableError(f"need dictionary type:name, got \"{spec}\"")
    return type_, name


def table_class(type_: str):
    """table_class - the class (or opener function) that implements TYPE."""
    target = TYPES.get(type_)
    if target is None:
        raise TableError(f"unsupported dictionary type: {type_}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(f"pymaster.util.tables.{module}"), attr)


def create_table(spec: str, cfg=None, **options) -> Table:
    """create_table - a new Table for SPEC, bypassing the cache."""
    type_, name = split_spec(spec)
    return table_class(type_)(type_, name, cfg, **options)


def open_table(spec: str, cfg=None) -> Table:
    """open_table - the process's Table for SPEC, opened on first use.

    A table that cannot be opened (a type pymaster does not support, such as
    nis:, or one whose opening fails, such as mysql: without its driver) is
    logged as an error once and stands in as an UnavailableTable, as Postfix's
    daemons keep running and answer every lookup with a temporary failure; a
    spec without a type is still a TableError."""
    spec = spec.strip()
    table = _cache.get(spec)
    if table is None:
        type_, name = split_spec(spec)
        try:
            table = create_table(spec, cfg)
        except TableUnavailable as e:
            log.error(e.reason)
            table = UnavailableTable(type_, name, e.reason)
        except TableError as e:
            log.error(str(e))
            table = UnavailableTable(type_, name, str(e))
        _cache[spec] = table
    return table


# Database types: their modules (with the shared dbcommon and sql code) cost
# about 0.45 MB in every process, and a table of theirs cannot work without
# its driver, which is imported only when the configuration names the type.
DATABASE_TYPES = frozenset({"sqlite", "mysql", "pgsql", "ldap", "lmdb", "memcache"})


def preload(named: Iterable[str] | None = None) -> None:
    """preload - import the module of every table type (of every type but
    the database ones NAMED leaves out, when NAMED is given).

    Types are otherwise imported on first use, which may come after the
    service has chrooted or dropped privileges and can no longer read the
    interpreter's library."""
    wanted = set(TYPES) if named is None else \
        {t for t in TYPES if t not in DATABASE_TYPES or t in set(named)}
    for target in {TYPES[t] for t in wanted}:
        importlib.import_module(f"pymaster.util.tables.{target.partition(':')[0]}")
    importlib.import_module("pymaster.util.tables.source")
    # socket.getaddrinfo() encodes a host name with the idna codec, imported on
    # its first use: a network table (memcache:, ldap: …) that connects after
    # the privilege drop could no longer load it ("unknown encoding: idna").
    importlib.import_module("encodings.idna")


def prepare_type(spec: str) -> None:
    """prepare_type - Table.prepare() of SPEC's type, looking through proxy:.

    A proxy:mysql: table in main.cf is opened by the proxymap service, which
    must import the driver before its chroot like any other program."""
    while spec.startswith("proxy:"):
        spec = spec[len("proxy:"):]
    type_, colon, _ = spec.partition(":")
    if colon and type_ in TYPES:
        table_class(type_).prepare()


def clear_cache() -> None:
    """clear_cache - forget every opened table (for tests and reloads)."""
    _cache.clear()
