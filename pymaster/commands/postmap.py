"""postmap: build, query, list and update lookup tables, as postmap(1).

    postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [type:]file...

Without -q, -d, -s or -i, each named table is rebuilt from its text file
(`postmap hash:/etc/postfix/virtual` writes /etc/postfix/virtual.db); the
type defaults to $default_database_type. -q KEY prints the first value
found in the named tables (exit 0 found, 1 not found); `-q -` reads keys
from standard input and prints `key<TAB>value` for each one found; with -h
and/or -b the input is a message whose header lines and/or body lines are
the keys (header_checks/body_checks testing): -h alone stops at the end of
the primary headers, -b starts with the line that ends them (an empty key
when a non-header line ends them). -m walks the MIME structure as cleanup
does (pymaster.mail.mime): -h then also yields the headers of MIME parts and of
attached messages, and -b no longer treats those as body lines; every key is
looked up in the tables named, as postmap(1) does (header_checks,
mime_header_checks … are not consulted). -F: when building (also -i), each
value is a list of file names (comma or white space separated) whose
contents, joined with a newline between files, are stored base64-encoded
(tls_server_sni_maps); when querying (-q) or listing (-s), each value is
base64-decoded (a malformed value: a warning, then for -q a fatal error).
-s lists every entry, -d KEY
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

import base64
import binascii
import getopt
import os
import re
import sys
from typing import Iterable, Iterator

from pymaster.commands import getopt_message
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.mail.headers import decode, split_header_block
from pymaster.mail.mime import MimeWalker, split_lines
from pymaster.util import log
from pymaster.util.tables import (
    TYPES,
    TableError,
    create_table,
    hashdb,
    lmdb,
    split_spec,
    table_class,
)
from pymaster.util.tables.source import parse_entries

BUILDABLE = ("hash", "btree", "cdb", "lmdb")
IN_PLACE = ("lmdb",)        # -i and -d change the file in place, not by a rebuild
OPTIONS = "bc:d:fFhimnNoprsuUvwxq:"
FILE_SEPARATORS = re.compile(r"[,\s]+")     # -F: between the file names of a value
OBSOLETE_COLON = re.compile(r"^([!-9;-~]+)[ \t]+:")    # "Name : value" (RFC 822 obsolete)


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
        self.nul: bool | None = None    # -N / -n; None: the type's default
        self.keep_mode = True
        self.dump = self.incremental = False
        self.headers = self.bodies = self.mime = False
        self.rhs_files = False      # -F
        self.verbose = 0
        self.maps: list[str] = []
        self.cfg: Config | None = None

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
                  "b": ("bodies", True), "m": ("mime", True)}
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
        elif letter == "F" and self.program == "postmap":
            self.rhs_files = True   # postalias(1) has no -F: it stays ignored there
        # -o -u -U -x: privilege, UTF-8 and encoding switches that change
        # nothing for a table built and read by the same Python code.

    # -- helpers -----------------------------------------------------------
    def spec_of(self, arg: str) -> str:
        """spec_of - "type:name" for an argument, adding $default_database_type."""
        if ":" in arg and not arg.startswith("/"):
            return arg
        assert self.cfg is not None  # main() loaded it
        return f"{self.cfg.get('default_database_type')}:{arg}"

    def open(self, arg: str):
        return create_table(self.spec_of(arg), self.cfg, fold=self.fold)

    def warn(self, text: str) -> None:
        log.warning(text)

    def entries(self, lines: Iterable[str], path: str) -> Iterator[tuple[int, str, str]]:
        return parse_entries(lines, path, self.warn)

    def extra_entries(self) -> list[tuple[str, str]]:
        return []

    def source_entries(self, lines: Iterable[str], path: str) -> Iterator[tuple[int, str, str]]:
        """source_entries - the entries of a source, values replaced by file
        contents with -F (an entry whose file cannot be read is skipped)."""
        value: str | None
        for lineno, key, value in self.entries(lines, path):
            if self.rhs_files:
                value = self.file_value(value, path, lineno)
                if value is None:
                    continue
            yield lineno, key, value

    def file_value(self, value: str, path: str, lineno: int) -> str | None:
        """file_value - -F: the base64 of the files VALUE names, joined by newlines."""
        contents = []
        for name in FILE_SEPARATORS.split(value.strip()):
            try:
                with open(name, "rb") as f:
                    contents.append(f.read())
            except OSError as e:
                self.warn(f"{path}, line {lineno}: open {name}: {e.strerror}: "
                          "skipping this entry")
                return None
        return base64.b64encode(b"\n".join(contents)).decode("ascii")

    def table_name(self, arg: str) -> str:
        """table_name - "type:name" as a message names a table (with the file suffix)."""
        spec = self.spec_of(arg)
        type_, name = split_spec(spec)
        return spec + suffix_for(type_) if type_ in BUILDABLE else spec

    def decoded(self, arg: str, key: str, value: str) -> str | None:
        """decoded - -F: VALUE base64-decoded; None (with a warning) when malformed."""
        try:
            raw = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.warn(f"table {self.table_name(arg)}: key {key}: malformed BASE64 value: {value}")
            return None
        return decode(raw)

    def shown(self, arg: str, key: str, value: str) -> str:
        """shown - a -q answer as printed: decoded with -F; a malformed one is fatal."""
        if not self.rhs_files:
            return value
        text = self.decoded(arg, key, value)
        if text is None:
            log.fatal(f"table {self.table_name(arg)}: query error")
        return text

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
        tables = list(zip(self.maps, [self.open(arg) for arg in self.maps]))
        assert self.query is not None  # -q QUERY chose do_query
        if self.query != "-":
            for arg, table in tables:
                value = self.lookup(table, self.query)
                if value is not None:
                    print(self.shown(arg, self.query, value))
                    return 0
            return 1
        found = False
        message = self.headers or self.bodies
        for key in self.query_keys(sys.stdin):
            for arg, table in tables:
                value = self.lookup(table, key)
                if value is not None:
                    # As postmap(1): -F decodes plain keys, not message lines.
                    value = value if message else self.shown(arg, key, value)
                    sys.stdout.write(self.dump_format.format(key=key, value=value) + "\n")
                    found = True
                    break
        return 0 if found else 1

    def lookup(self, table, key: str) -> str | None:
        """lookup - TABLE's value for KEY; an empty value is warned about and
        still counts as found, as postmap(1) does (a regexp rule without
        result text, a $number whose group matched nothing)."""
        value = table.lookup(key)
        if value == "":
            self.warn(f"table {table.spec}: key {key}: empty string result is not allowed")
            self.warn(f"table {table.spec} should return NO RESULT in case of NOT FOUND")
        return value

    def query_keys(self, stream) -> Iterator[str]:
        """query_keys - lines of STDIN, or a message's header/body lines (-h, -b)."""
        if not (self.headers or self.bodies):
            for line in stream:
                yield line.rstrip("\n")
            return
        data = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode()
        assert self.cfg is not None  # main() loaded it
        limits = (self.cfg.int("mime_nesting_limit"), self.cfg.int("mime_boundary_length_limit"))
        yield from message_keys(data, self.headers, self.bodies, self.mime, limits)

    def do_dump(self) -> int:
        for arg in self.maps:
            for key, value in self.open(arg).items():
                if self.rhs_files:
                    value = self.decoded(arg, key, value)
                    if value is None:
                        continue
                sys.stdout.write(self.dump_format.format(key=key, value=value) + "\n")
        return 0

    def do_delete(self) -> int:
        keys = self.deletes
        if keys == ["-"]:
            keys = [line.strip() for line in sys.stdin if line.strip()]
        found = False
        for arg in self.maps:
            if self.writable_in_place(arg):
                # As Postfix's postmap -d, a missing file is created (empty).
                table = self.open_writable(arg, create=True)
                # Every key is deleted: no short cut after the first one found.
                found = sum(bool(table.delete(key)) for key in keys) > 0 or found
                continue
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
        if type_ in IN_PLACE:
            self.update_in_place(self.open_writable(arg, create=True), stream, source)
            return
        table = self.existing(type_, name, create=True)
        self.merge(table, self.source_entries(stream, source), source)
        self.write(type_, name, table.items(), name)

    def do_build(self, arg: str) -> None:
        type_, name = self.buildable(arg)
        table: dict[str, str] = {}
        try:
            with open(name, encoding="utf-8", errors="surrogateescape") as f:
                self.merge(table, self.source_entries(f, name), name)
        except OSError as e:
            log.fatal(f"open {name}: {e.strerror}")
        for key, value in self.extra_entries():
            table.setdefault(key, value)
        self.write(type_, name, table.items(), name)

    # -- changing a table in place (lmdb:; memcache: for -d) ------------------
    def writable_in_place(self, arg: str) -> bool:
        """writable_in_place - whether -d changes ARG's table through its own
        update interface instead of rebuilding a file."""
        type_, name = split_spec(self.spec_of(arg))
        return type_ in IN_PLACE or (type_ in TYPES and type_ not in BUILDABLE
                                     and hasattr(table_class(type_), "delete"))

    def open_writable(self, arg: str, create: bool):
        options: dict[str, object] = {"fold": self.fold}
        type_, _ = split_spec(self.spec_of(arg))
        if type_ in IN_PLACE:
            options.update(create=create, nul=self.nul is not False)
        return create_table(self.spec_of(arg), self.cfg, **options)

    def update_in_place(self, table, stream, source: str) -> None:
        """update_in_place - -i: each entry stored at once; an existing key
        is kept with a warning (-r: replaced, -w: kept silently)."""
        for _lineno, key, value in self.source_entries(stream, source):
            if self.fold:
                key = key.lower()
            if self.dup != "replace" and table.lookup(key) is not None:
                if self.dup == "warn":
                    self.warn(f"{table.spec}: duplicate entry: \"{key}\"")
                continue
            table.update(key, value)

    # -- building ----------------------------------------------------------
    def buildable(self, arg: str) -> tuple[str, str]:
        type_, name = split_spec(self.spec_of(arg))
        if type_ == "proxy":
            type_, name = split_spec(name)
        if type_ not in BUILDABLE:
            if type_ not in TYPES:
                raise TableError(f"unsupported dictionary type: {type_}")
            raise TableError(f"unsupported dictionary type: {type_} does not support "
                             "bulk-mode creation.")
        return type_, name

    def existing(self, type_: str, name: str, create: bool) -> dict[str, str]:
        """existing - the current content of TYPE:NAME as a dict (for -i and -d)."""
        if create and not os.path.exists(name + suffix_for(type_)):
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
        mode = 0o644
        if self.keep_mode:
            try:
                mode = os.stat(source).st_mode & 0o7777
            except OSError:
                pass
        try:
            if type_ == "lmdb":
                assert self.cfg is not None  # main() loaded it
                lmdb.build(name, items, self.cfg.int("lmdb_map_size"), self.nul is not False,
                           mode)
            else:
                hashdb.build(type_, name, items, bool(self.nul), mode)
        except OSError as e:
            log.fatal(f"open database {name}{suffix_for(type_)}: {e.strerror}")


def suffix_for(type_: str) -> str:
    """suffix_for - the file name suffix of a table type postmap builds."""
    return lmdb.SUFFIX if type_ == "lmdb" else hashdb.suffix_for(type_)


def message_keys(data: bytes, headers: bool, bodies: bool, mime: bool = False,
                 limits: tuple[int, int] = (100, 2048)) -> Iterator[str]:
    """message_keys - the lookup keys of a message for -h (logical headers, one
    key each with embedded newlines) and -b (body lines), as postmap(1) makes
    them; with MIME (-m) the parts are told apart by pymaster.mail.mime's walk, as
    cleanup tells them apart for header_checks and body_checks."""
    top, offset = split_header_block(data)
    if headers:
        yield from (_header_key(h) for h in top)
    blank = _ends_in_blank_line(data[:offset])
    if not (bodies or mime) or (offset == len(data) and not blank):
        return
    # The line that ends the headers is a body line: the empty line itself,
    # or, before a line that is no header, an empty line Postfix inserts.
    if bodies:
        yield decode(data[:offset]).rsplit("\n", 2)[-2] if blank else ""
    body = decode(data[offset:])
    if not mime:
        if bodies:
            yield from (_key(line) for line in split_lines(body))
        return
    for part in MimeWalker(*limits).walk(top, body):
        if part.kind == "header" and headers:
            yield _header_key(part.text)
        elif part.kind != "header" and bodies:
            yield _key(part.text)


def _ends_in_blank_line(head: bytes) -> bool:
    """_ends_in_blank_line - whether an empty line ended the header block HEAD."""
    return head in (b"\n", b"\r\n") or head.endswith((b"\n\n", b"\n\r\n"))


def _header_key(text: str) -> str:
    """_header_key - a logical header as a key; "Name : value" becomes
    "Name: value", as Postfix's MIME parser normalises it."""
    return OBSOLETE_COLON.sub(r"\1:", _key(text), count=1)


def _key(text: str) -> str:
    """_key - a line or logical header as a key: without its final newline
    (a carriage return stays, as with Postfix)."""
    return text[:-1] if text.endswith("\n") else text


def run_command(command: TableCommand, argv: list[str] | None) -> int:
    """run_command - parse, configure and run COMMAND; fatal errors exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    log.setup(command.program, stderr=True)
    # Message input and table values may hold any bytes: keep them as they are.
    for stream in (sys.stdin, sys.stdout):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
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
