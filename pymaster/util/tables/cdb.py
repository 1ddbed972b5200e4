"""The indexed on-disk format behind hash:, btree: and cdb: tables.

A constant database in D. J. Bernstein's cdb layout: a fixed table of 256
(position, slot count) pairs, the records (key length, value length, key,
value), then 256 open-addressing hash tables of (hash, record position)
slots. A lookup reads two or three small pieces of the file through mmap,
so opening is instant and a lookup never reads the whole file.

Two flavours share the code:
  * genuine cdb (no header, djb hash), for `cdb:` files, readable by
    tinycdb and by Postfix's cdb tables;
  * pymaster's `.db` files for `hash:`/`btree:`: a 16-byte header with a
    magic and flags before the same layout, hashed with zlib.crc32, which
    Python computes in C (the djb hash would cost a Python loop per key).

A database is built in memory and replaces the old file atomically (temp
file, fsync, rename): a running reader keeps its mmap of the old file and
never sees half a table.

Interface:
    Reader(path, flavour) .get(key: bytes) -> bytes | None, .items(), .flags
    write(path, items, flavour, flags=0, mode=0o644)
    FLAVOUR_CDB, FLAVOUR_PYDB; FLAG_NUL (keys and values end in a NUL byte)
    FormatError
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from array import array
from typing import Iterable, Iterator
from zlib import crc32

from pymaster.util import safeio

FLAVOUR_CDB = "cdb"
FLAVOUR_PYDB = "pydb"
MAGIC = b"PYMDB\x01"
HEADER_SIZE = 16
FLAG_NUL = 1
_PAIR = struct.Struct("<II")


class FormatError(Exception):
    """A file that is not a database of the expected kind."""


def djb_hash(key: bytes) -> int:
    """djb_hash - cdb's hash function."""
    h = 5381
    for c in key:
        h = (((h << 5) + h) ^ c) & 0xFFFFFFFF
    return h


def _base(flavour: str) -> int:
    return HEADER_SIZE if flavour == FLAVOUR_PYDB else 0


def _hash_function(flavour: str):
    return crc32 if flavour == FLAVOUR_PYDB else djb_hash


class Reader:
    """Read-only access to one database file through mmap."""

    def __init__(self, path: str, flavour: str) -> None:
        self.path = path
        self.flags = 0
        self._hash = _hash_function(flavour)
        self._base = _base(flavour)
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < self._base + 2048:
                raise FormatError(f"{path}: file too short for a {flavour} database")
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if flavour == FLAVOUR_PYDB:
            if self._mm[:len(MAGIC)] != MAGIC:
                raise FormatError(f"{path}: not a pymaster database file "
                                  "(rebuild it with postmap)")
            self.flags = self._mm[len(MAGIC)]
        self._index = [_PAIR.unpack_from(self._mm, self._base + 8 * i) for i in range(256)]

    def get(self, key: bytes) -> bytes | None:
        """get - the value stored under KEY, or None."""
        h = self._hash(key)
        table, nslots = self._index[h & 255]
        if not nslots:
            return None
        mm = self._mm
        unpack = _PAIR.unpack_from
        slot = (h >> 8) % nslots
        for _ in range(nslots):
            sh, pos = unpack(mm, table + 8 * slot)
            if not pos:
                return None
            if sh == h:
                klen, vlen = unpack(mm, pos)
                if mm[pos + 8:pos + 8 + klen] == key:
                    return mm[pos + 8 + klen:pos + 8 + klen + vlen]
            slot += 1
            if slot == nslots:
                slot = 0
        return None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """items - every (key, value) in the order they were written."""
        mm = self._mm
        end = min((t for t, n in self._index), default=len(mm))
        pos = self._base + 2048
        while pos < end:
            klen, vlen = _PAIR.unpack_from(mm, pos)
            pos += 8
            yield mm[pos:pos + klen], mm[pos + klen:pos + klen + vlen]
            pos += klen + vlen

    def close(self) -> None:
        self._mm.close()


def _slot_tables(buckets: list[list[tuple[int, int]]], start: int):
    """_slot_tables - the 256-entry index and the hash table bytes after START."""
    index = array("I")
    chunks = []
    pos = start
    for bucket in buckets:
        n = 2 * len(bucket)
        index.append(pos)
        index.append(n)
        if not n:
            continue
        slots = array("I", bytes(8 * n))
        for h, rpos in bucket:
            i = (h >> 8) % n
            while slots[2 * i + 1]:
                i = i + 1 if i + 1 < n else 0
            slots[2 * i] = h
            slots[2 * i + 1] = rpos
        chunks.append(slots)
        pos += 8 * n
    if pos > 0xFFFFFFFF:
        raise FormatError("database larger than 4 GB")
    return index, chunks


def _le(a: array) -> bytes:
    if sys.byteorder != "little":
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def encode(items: Iterable[tuple[bytes, bytes]], flavour: str, flags: int = 0) -> bytes:
    """encode - the complete database file for ITEMS (keys must be unique)."""
    base = _base(flavour)
    hashfn = _hash_function(flavour)
    buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    records = []
    pos = base + 2048
    pack = _PAIR.pack
    for key, value in items:
        h = hashfn(key)
        buckets[h & 255].append((h, pos))
        records.append(pack(len(key), len(value)) + key + value)
        pos += 8 + len(key) + len(value)
    index, tables = _slot_tables(buckets, pos)
    header = MAGIC + bytes([flags]) + bytes(HEADER_SIZE - len(MAGIC) - 1) if base else b""
    return b"".join([header, _le(index), *records, *(_le(t) for t in tables)])


def write(path: str, items: Iterable[tuple[bytes, bytes]], flavour: str,
          flags: int = 0, mode: int = 0o644) -> None:
    """write - replace PATH atomically with a database holding ITEMS."""
    safeio.write_file(path, encode(items, flavour, flags), mode)
