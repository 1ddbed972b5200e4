"""texthash: tables: the postmap source file itself, read into memory.

`texthash:/etc/postfix/virtual` reads the text file (postmap's input
format) without building an index; Postfix reads it once at open, we read it
again whenever the file changes. Keys are folded to lower case.

Interface:
    TextHashTable(type, name, cfg=None, fold=True) .lookup(key), .items()
"""

from __future__ import annotations

from typing import Iterator

from pymaster.util import log
from pymaster.util.tables import FileTable, TableError
from pymaster.util.tables.source import read_entries


class TextHashTable(FileTable):
    """The text table NAME, held in a dict."""

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True) -> None:
        super().__init__(type_, name, cfg)
        self.path = name
        self.fold = fold

    def load(self) -> dict[str, str]:
        try:
            return read_entries(self.path, log.warning, self.fold)
        except OSError as e:
            raise TableError(f"open database {self.path}: {e.strerror}") from None

    def lookup(self, key: str) -> str | None:
        return self.current().get(key.lower() if self.fold else key)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self.current().items()))
