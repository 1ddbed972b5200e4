"""Tables made of tables: unionmap: and pipemap: (proxy: is in proxy.py).

  unionmap:{ t1, t2, ... }   every table is asked; the values found are
                             joined with commas (not found when none has it)
  pipemap:{ t1, t2, ... }    t1's value is the key for t2, and so on; not
                             found as soon as one stage has no value

Interface:
    UnionTable / PipeTable(type, name, cfg=None) .lookup(key)
"""

from __future__ import annotations

from pymaster.util.tables import Table, TableError, open_table
from pymaster.util.tables.simple import braced_items


class _Composite(Table):
    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)
        specs = braced_items(name)
        if not specs:
            raise TableError(f"{type_}:{name}: empty table list")
        self.tables = [open_table(spec, cfg) for spec in specs]
        self.fixed = all(t.fixed for t in self.tables)
        self.remote = any(t.remote for t in self.tables)


class UnionTable(_Composite):
    """unionmap: every table's answer, comma-joined."""

    def lookup(self, key: str) -> str | None:
        found = [v for v in (t.lookup(key) for t in self.tables) if v is not None]
        return ",".join(found) if found else None


class PipeTable(_Composite):
    """pipemap: each answer is the next table's key."""

    def lookup(self, key: str) -> str | None:
        value: str | None = key
        for table in self.tables:
            assert value is not None  # the key, or the previous table's answer
            value = table.lookup(value)
            if value is None:
                return None
        return value

