"""Tables without a file: static:, inline:, fail:, environ: and unix:.

  static:VALUE           every key maps to VALUE (`static:{a value}` may hold
                         white space)
  inline:{ k=v, {k = v w} }   a small table written in main.cf
  fail:NAME              every lookup is a temporary failure (tests, and
                         to make mail wait)
  environ:NAME           the process environment
  unix:passwd.byname     getpwnam(3): "name:passwd:uid:gid:gecos:dir:shell"
  unix:group.byname      getgrnam(3): "name:passwd:gid:member,member"

Interface: the Table classes below, and `braced_items(text)` for the
`{ a, {b c} }` list syntax that inline:, unionmap: and pipemap: share.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import Iterator

from pymaster.util.strings import split_list
from pymaster.util.tables import Table, TableError


def strip_braces(text: str) -> str | None:
    """strip_braces - the inside of "{ ... }", or None when TEXT is not braced."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        return text[1:-1].strip()
    return None


def braced_items(text: str) -> list[str]:
    """braced_items - the comma/space separated elements of "{ a, {b c}, d }".

    An element in braces keeps its white space and commas."""
    inner = strip_braces(text)
    if inner is None:
        raise TableError(f"missing braces in \"{text}\"")
    if not _balanced(inner):
        raise TableError(f"unbalanced braces in \"{text}\"")
    return split_list(inner)


def _balanced(text: str) -> bool:
    """_balanced - every } in TEXT closes an earlier {, and all are closed."""
    depth = 0
    for c in text:
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


class StaticTable(Table):
    """static:VALUE - the same answer for every key."""

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)
        inner = strip_braces(name)
        self.value = inner if inner is not None else name

    def lookup(self, key: str) -> str | None:
        return self.value


class InlineTable(Table):
    """inline:{ key=value, ... } - a table written in the spec itself."""

    def __init__(self, type_: str, name: str, cfg=None, fold: bool = True, **_options) -> None:
        super().__init__(type_, name, cfg)
        self.fold = fold
        self.table: dict[str, str] = {}
        for item in braced_items(name):
            inner = strip_braces(item)
            item = inner if inner is not None else item
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise TableError(f"{self.spec}: \"{item}\": need \"name=value\"")
            key = key.strip()
            self.table[key.lower() if fold else key] = value.strip()

    def lookup(self, key: str) -> str | None:
        return self.table.get(key.lower() if self.fold else key)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(self.table.items()))


class FailTable(Table):
    """fail:NAME - always a temporary failure."""

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)

    def lookup(self, key: str) -> str | None:
        raise TableError(f"table {self.spec}: query error: Application error")

    def items(self) -> Iterator[tuple[str, str]]:
        raise TableError(f"table {self.spec}: query error: Application error")


class EnvironTable(Table):
    """environ:NAME - the process environment."""

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)

    def lookup(self, key: str) -> str | None:
        return os.environ.get(key)

    def items(self) -> Iterator[tuple[str, str]]:
        return iter(list(os.environ.items()))


class UnixTable(Table):
    """unix:passwd.byname and unix:group.byname - the system databases."""

    def __init__(self, type_: str, name: str, cfg=None, **_options) -> None:
        super().__init__(type_, name, cfg)
        if name not in ("passwd.byname", "group.byname"):
            raise TableError(f"unknown table: unix:{name}")

    def lookup(self, key: str) -> str | None:
        # Postfix folds the key for the passwd map: user names are lower case.
        key = key.lower()
        try:
            if self.name == "passwd.byname":
                pw = pwd.getpwnam(key)
                return ":".join([pw.pw_name, pw.pw_passwd, str(pw.pw_uid), str(pw.pw_gid),
                                 pw.pw_gecos, pw.pw_dir, pw.pw_shell])
            gr = grp.getgrnam(key)
            return ":".join([gr.gr_name, gr.gr_passwd or "", str(gr.gr_gid), ",".join(gr.gr_mem)])
        except KeyError:
            return None
        except (OSError, UnicodeError) as e:
            raise TableError(f"table {self.spec}: lookup error: {e}") from None
