"""postmap: build, query, list and update lookup tables, as postmap(1).

    postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [type:]file...

Without -q, -d, -s or -i, each named table is rebuilt from its text file
(`postmap hash:/etc/postfix/virtual` writes /etc/postfix/virtual.db); the
type defaults to $default_database_type. -q KEY prints the first value
found in the named tables (exit 0 found, 1 not found); `-q -` reads keys
from standard input and prints `key<TAB>value` for each one found; with -h
and/or -b the input is a message whose header lines and/or body lines are
the keys (header_checks/body_checks testing). -s lists every entry, -d KEY
deletes (`-d -`: keys from standard input), -i adds entries read from
standard input. -f keeps keys' case, -r replaces and -w silently ignores
duplicate entries, -n/-N store keys without/with a terminating NUL, -p
creates new files mode 0644 instead of copying the source file's mode.
Errors are `postmap: fatal: ...` with exit status 1, as in Postfix.

postalias(1) is this program with the aliases(5) input format; it reuses
the machinery here through `TableCommand`.

Interface:
    main(argv=None) -> exit status (console script `postmap`)
    TableCommand    the option handling and operations, parametrised by the
                    input format (postmap's or postalias's)
"""

from __future__ import annotations

import getopt
import os
import sys
from typing import Iterable, Iterator

from pymaster.commands import getopt_message
from pymaster import log
from pymaster.config import ConfigError, load_config
from pymaster.tables import TableError, create_table, split_spec

BUILDABLE = ("hash", "btree", "cdb")
OPTIONS = "bc:d:fFhimnNoprsuUvwxq:"


class Usage(Exception):
    """A command line that cannot be run."""


class TableCommand:
    """One run of postmap or postalias: options, then one operation."""

    program = "postmap"
    usage_text = ("usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] "
                  "[-q key] [map_type:]file...")
    dump_format = "{key}\t{value}"

    def __init__(self) -> None:
        self.config_dir: str | None = None
        self.query: str | None = None
        self.deletes: list[str] = []
        self.fold = True
        self.dup = "warn"          # warn (keep first), replace (-r), ignore (-w)
        self.nul = False
        self.keep_mode = True
        self.dump = self.incremental = False
        self.headers = self.bodies = False
        self.verbose = 0
        self.maps: list[str] = []
        self.cfg = None

    # -- command line ------------------------------------------------------
    def parse(self, argv: list[str]) -> None:
        try:
            opts, args = getopt.getopt(argv, OPTIONS)
        except getopt.GetoptError as e:
            sys.stderr.write(f"{self.program}: {getopt_message(e)}\n")
            raise Usage(self.usage_text) from None
        for opt, value in opts:
            self._option(opt[1], value)
        if not args:
            raise Usage(self.usage_text)
        if sum(map(bool, (self.query is not None, self.deletes, self.dump,
                          self.incremental))) > 1:
            raise Usage("specify only one of -s -i -q or -d")
        self.maps = args

    def _option(self, letter: str, value: str) -> None:
        simple = {"f": ("fold", False), "r": ("dup", "replace"), "w": ("dup", "ignore"),
                  "N": ("nul", True), "n": ("nul", False), "p": ("keep_mode", False),
                  "s": ("dump", True), "i": ("incremental", True), "h": ("headers", True),
                  "b": ("bodies", True)}
        if letter in simple:
            setattr(self, *simple[letter])
        elif letter == "c":
            self.config_dir = value
        elif letter == "q":
            self.query = value
        elif letter == "d":
            self.deletes.append(value)
        elif letter == "v":
            self.verbose += 1
        # -o -u -U -F -x -m: privilege, UTF-8 and encoding switches that change
        # nothing for a table built and read by the same Python code.

    # -- helpers -----------------------------------------------------------
    def spec_of(self, arg: str) -> str:
        """spec_of - "type:name" for an argument, adding $default_database_type."""
        if ":" in arg and not arg.startswith("/"):
            return arg
        return f"{self.cfg.get('default_database_type') or 'hash'}:{arg}"

    def open(self, arg: str):
        return create_table(self.spec_of(arg), self.cfg, fold=self.fold)

    def warn(self, text: str) -> None:
        log.warning(text)

    def entries(self, lines: Iterable[str], path: str) -> Iterator[tuple[int, str, str]]:
        from pymaster.tables.source import parse_entries
        return parse_entries(lines, path, self.warn)

    def extra_entries(self) -> list[tuple[str, str]]:
        return []

    # -- operations --------------------------------------------------------
    def run(self) -> int:
        if self.query is not None:
            return self.do_query()
        if self.deletes:
            return self.do_delete()
        if self.dump:
            return self.do_dump()
        for arg in self.maps:
            if self.incremental:
                self.do_update(arg, sys.stdin, "stdin")
            else:
                self.do_build(arg)
        return 0

    def do_query(self) -> int:
        tables = [self.open(arg) for arg in self.maps]
        if self.query != "-":
            for table in tables:
                value = table.lookup(self.query)
                if value is not None:
                    print(value)
                    return 0
            return 1
        found = False
        for key in self.query_keys(sys.stdin):
            for table in tables:
                value = table.lookup(key)
                if value is not None:
                    sys.stdout.write(self.dump_format.format(key=key, value=value) + "\n")
                    found = True
                    break
        return 0 if found else 1

    def query_keys(self, stream) -> Iterator[str]:
        """query_keys - lines of STDIN, or a message's header/body lines (-h, -b)."""
        if not (self.headers or self.bodies):
            for line in stream:
                yield line.rstrip("\n")
            return
        yield from message_keys(stream, self.headers, self.bodies)

    def do_dump(self) -> int:
        for arg in self.maps:
            for key, value in self.open(arg).items():
                sys.stdout.write(self.dump_format.format(key=key, value=value) + "\n")
        return 0

    def do_delete(self) -> int:
        keys = self.deletes
        if keys == ["-"]:
            keys = [line.strip() for line in sys.stdin if line.strip()]
        found = False
        for arg in self.maps:
            type_, name = self.buildable(arg)
            table = self.existing(type_, name, create=False)
            for key in keys:
                key = key.lower() if self.fold else key
                if table.pop(key, None) is not None:
                    found = True
            self.write(type_, name, table.items(), name)
        return 0 if found else 1

    def do_update(self, arg: str, stream, source: str) -> None:
        type_, name = self.buildable(arg)
        table = self.existing(type_, name, create=True)
        self.merge(table, self.entries(stream, source), source)
        self.write(type_, name, table.items(), name)

    def do_build(self, arg: str) -> None:
        type_, name = self.buildable(arg)
        table: dict[str, str] = {}
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as f:
                self.merge(table, self.entries(f, name), name)
        except OSError as e:
            log.fatal(f"open {name}: {e.strerror}")
        for key, value in self.extra_entries():
            table.setdefault(key, value)
        self.write(type_, name, table.items(), name)

    # -- building ----------------------------------------------------------
    def buildable(self, arg: str) -> tuple[str, str]:
        type_, name = split_spec(self.spec_of(arg))
        if type_ == "proxy":
            type_, name = split_spec(name)
        if type_ not in BUILDABLE:
            from pymaster.tables import TYPES
            if type_ not in TYPES:
                raise TableError(f"unsupported dictionary type: {type_}")
            raise TableError(f"unsupported dictionary type: {type_} does not support "
                             "bulk-mode creation.")
        return type_, name

    def existing(self, type_: str, name: str, create: bool) -> dict[str, str]:
        """existing - the current content of TYPE:NAME as a dict (for -i and -d)."""
        from pymaster.tables import hashdb
        if create and not os.path.exists(name + hashdb.suffix_for(type_)):
            return {}
        table = create_table(f"{type_}:{name}", self.cfg, fold=False)
        return dict(table.items())

    def merge(self, table: dict[str, str], entries, path: str) -> None:
        """merge - add ENTRIES to TABLE, handling duplicates as -r/-w say."""
        fold, dup = self.fold, self.dup
        for lineno, key, value in entries:
            if fold:
                key = key.lower()
            if key in table and dup != "replace":
                if dup == "warn":
                    self.warn(f"{path}, line {lineno}: duplicate entry: \"{key}\"")
                continue
            table[key] = value

    def write(self, type_: str, name: str, items, source: str) -> None:
        from pymaster.tables import hashdb
        mode = 0o644
        if self.keep_mode:
            try:
                mode = os.stat(source).st_mode & 0o7777
            except OSError:
                pass
        try:
            hashdb.build(type_, name, items, self.nul, mode)
        except OSError as e:
            log.fatal(f"open database {name}{hashdb.suffix_for(type_)}: {e.strerror}")


def message_keys(stream, headers: bool, bodies: bool) -> Iterator[str]:
    """message_keys - a message's logical header lines and/or body lines."""
    in_headers = True
    pending: str | None = None
    for raw in stream:
        line = raw.rstrip("\r\n")
        if in_headers:
            if line and line[0] in " \t" and pending is not None:
                pending += "\n" + line
                continue
            if pending is not None and headers:
                yield pending
            pending = None
            if line == "":
                in_headers = False
                continue
            pending = line
            continue
        if bodies:
            yield line
    if pending is not None and headers:
        yield pending


def run_command(command: TableCommand, argv: list[str] | None) -> int:
    """run_command - parse, configure and run COMMAND; fatal errors exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    log.setup(command.program, stderr=True)
    try:
        command.parse(argv)
        command.cfg = load_config(command.config_dir)
        log.setup(command.program, command.cfg, command.verbose, stderr=True)
        return command.run()
    except Usage as e:
        log.fatal(str(e))
    except (ConfigError, TableError) as e:
        log.fatal(str(e))
    except KeyboardInterrupt:
        return 1
    except BrokenPipeError:
        return 1


def main(argv: list[str] | None = None) -> int:
    sys.exit(run_command(TableCommand(), argv))
