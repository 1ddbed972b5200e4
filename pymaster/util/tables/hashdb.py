"""hash:, btree: and cdb: tables: indexed files that postmap builds.

`hash:/etc/postfix/virtual` and `btree:/etc/postfix/virtual` read
`/etc/postfix/virtual.db`; `cdb:/etc/postfix/virtual` reads
`/etc/postfix/virtual.cdb`. The files are constant databases
(pymaster.util.tables.cdb); Python here has no Berkeley DB, so a `.db` file left
by Postfix cannot be read and says so: run postmap again.

Keys are folded to lower case when built and when looked up, as Postfix
does for these types; `fold=False` (postmap -f) keeps case.

Interface:
    HashTable / CdbTable(type, name, cfg=None, fold=True)
        .lookup(key), .items(), .db_path
    suffix_for(type) -> ".db" | ".cdb"
    flavour_for(type) -> cdb flavour
    build(type, name, entries, nul=False, mode=0o644)   write NAME.suffix
"""

from __future__ import annotations

from typing import Iterable, Iterator

from pymaster.util.tables import FileTable, TableError, cdb

_SURR = "surrogateescape"


def suffix_for(type_: str) -> str:
    return ".cdb" if type_ == "cdb" else ".db"


def flavour_for(type_: str) -> str:
    return cdb.FLAVOUR_CDB if type_ == "cdb" else cdb.FLAVOUR_PYDB


class HashTable(FileTable):
    """A hash: or btree: table: NAME.db, pymaster's constant database."""

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True) -> None:
        super().__init__(type_, name, cfg)
        self.fold = fold
        self.path = self.db_path = name + suffix_for(type_)
        self._nul = False

    def load(self) -> cdb.Reader:
        try:
            reader = cdb.Reader(self.path, flavour_for(self.type))
        except OSError as e:
            raise TableError(f"open database {self.path}: {e.strerror}") from None
        except cdb.FormatError as e:
            raise TableError(str(e)) from None
        self._nul = bool(reader.flags & cdb.FLAG_NUL)
        return reader

    def lookup(self, key: str) -> str | None:
        reader = self.current()
        if self.fold:
            key = key.lower()
        k = key.encode("utf-8", _SURR)
        if self._nul:
            k += b"\0"
        value = reader.get(k)
        if value is None:
            return None
        if self._nul:
            value = value[:-1]
        return value.decode("utf-8", _SURR)

    def items(self) -> Iterator[tuple[str, str]]:
        for key, value in self.current().items():
            yield (key.rstrip(b"\0").decode("utf-8", _SURR),
                   value.rstrip(b"\0").decode("utf-8", _SURR))


class CdbTable(HashTable):
    """A cdb: table: NAME.cdb in the genuine cdb format (tinycdb compatible).

    Postfix may have written keys with or without a terminating NUL, so a
    lookup tries both, as Postfix's own cdb reader does."""

    def lookup(self, key: str) -> str | None:
        reader = self.current()
        if self.fold:
            key = key.lower()
        k = key.encode("utf-8", _SURR)
        value = reader.get(k)
        if value is None:
            value = reader.get(k + b"\0")
        if value is None:
            return None
        return value.rstrip(b"\0").decode("utf-8", _SURR)


def build(type_: str, name: str, entries: Iterable[tuple[str, str]],
          nul: bool = False, mode: int = 0o644) -> str:
    """build - write the indexed file of table TYPE:NAME; returns its path."""
    path = name + suffix_for(type_)
    tail = b"\0" if nul else b""

    def encoded():
        for key, value in entries:
            yield (key.encode("utf-8", _SURR) + tail, value.encode("utf-8", _SURR) + tail)

    flags = cdb.FLAG_NUL if nul and type_ != "cdb" else 0
    cdb.write(path, encoded(), flavour_for(type_), flags, mode)
    return path
