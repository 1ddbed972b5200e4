"""master.cf: the service table the master runs, parsed as master(5) describes.

Each logical line (continuation lines start with white space, `#` lines are
comments, also between continuation lines) has eight columns:

    service type private unpriv chroot wakeup maxproc command [args ...]

`-` in a column means its default: private y, unpriv y, chroot n, wakeup 0
(none), maxproc $default_process_limit (0 means no limit). A wakeup time with
a `?` suffix sends the trigger only once the service has been used. Among
the arguments, `-o name=value` (or `-o { name = value }`, Postfix 3.0) sets
a main.cf parameter for this service alone; the value is kept unexpanded, so
`-o smtpd_client_restrictions=$mua_client_restrictions` is expanded later
against main.cf. When two lines define the same service/type, the last one
wins.

Interface:
    parse_master_cf(text, path, default_maxproc=TABLE_PROCESS_LIMIT) -> (entries, errors)
    load_master_cf(config_dir, cfg=None) -> list[MasterEntry]   raises ConfigError
    MasterEntry  .service .type .private .unpriv .chroot .wakeup
                 .wakeup_if_used .maxproc .command .args .overrides
                 .lineno .last_lineno .fields (the columns as written) .key
                 .stream_listener .visibility .argv()   how the master runs it
    SERVICE_TYPES, STREAM_TYPES
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from pymaster.mail.config import Config, ConfigError, load_config, logical_lines
from pymaster.mail.params import PARAMS

# maxproc for "-" when no main.cf is at hand (postconf -M): the table's default.
TABLE_PROCESS_LIMIT = int(PARAMS["default_process_limit"].default or 0)

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
# Types the master listens for on a unix stream socket, handed to the workers
# as descriptor 3. A request service's clients take leases there
# (pymaster.util.ipc); a pass service receives open connections; spawn(8),
# scache(8) and tlsproxy(8) serve the accepted connection itself (a program
# that speaks no zeromq, descriptors passed, a connection to encrypt).
STREAM_TYPES = ("unix", "fifo", "pass")
COLUMN_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
                "process_limit", "command")


@dataclass
class MasterEntry:
    """One master.cf service definition."""
    service: str
    type: str
    private: bool
    unpriv: bool
    chroot: bool
    wakeup: int
    wakeup_if_used: bool
    maxproc: int
    command: str
    args: list[str] = field(default_factory=list)
    overrides: dict[str, str] = field(default_factory=dict)
    lineno: int = 0
    last_lineno: int = 0
    fields: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """key - "service/type", how postconf -M and the master name it."""
        return f"{self.service}/{self.type}"

    @property
    def command_line(self) -> str:
        """command_line - the command and its arguments as one string."""
        return " ".join([self.command] + [_quote_arg(a) for a in self.args])

    # -- how the master runs it ------------------------------------------------
    @property
    def stream_listener(self) -> bool:
        """stream_listener - the master listens on a unix stream socket for
        it: every unix, fifo and pass service (inet services listen on the
        network, unix-dgram on a datagram socket)."""
        return self.type in STREAM_TYPES

    @property
    def visibility(self) -> str:
        """visibility - the spool directory of its endpoint: private or public."""
        return "private" if self.private else "public"

    def argv(self) -> list[str]:
        """argv - the arguments the master gives the service program."""
        out = ["-n", self.service, "-t", self.type]
        if self.chroot:
            out.append("-c")
        if self.unpriv:
            out.append("-u")
        # The arguments as written, -o overrides among them, as Postfix passes them.
        return out + list(self.args)


def _quote_arg(arg: str) -> str:
    """_quote_arg - put an argument with white space back in braces."""
    if not arg or any(c.isspace() for c in arg):
        return "{ " + arg + " }"
    return arg


def split_args(text: str) -> list[str]:
    """split_args - white-space separated words; `{ a b }` is the one word "a b"."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] == "{":
            depth, j = 0, i
            while j < n:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            if depth:
                raise ValueError(f"missing '}}' in \"{text[i:]}\"")
            words.append(text[i + 1:j].strip())
            i = j + 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        words.append(text[i:j])
        i = j
    return words


def _bool_column(value: str, default: bool, column: str) -> bool:
    if value == "-":
        return default
    if value in ("y", "n"):
        return value == "y"
    raise ValueError(f"field \"{column}\": bad value: \"{value}\" (expect y, n or -)")


def _wakeup_column(value: str) -> tuple[int, bool]:
    if value == "-":
        return 0, False
    used = value.endswith("?")
    digits = value[:-1] if used else value
    if not digits.isdigit():
        raise ValueError(f"field \"wakeup\": bad value: \"{value}\"")
    return int(digits), used


def _maxproc_column(value: str, default: int) -> int:
    if value == "-":
        return default
    if not value.isdigit():
        raise ValueError(f"field \"process_limit\": bad value: \"{value}\"")
    return int(value)


def _overrides(args: list[str]) -> dict[str, str]:
    """_overrides - NAME -> VALUE of the -o arguments, values unexpanded."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        setting = None
        if arg == "-o":
            if i + 1 >= len(args):
                raise ValueError("option -o requires a name=value argument")
            setting = args[i + 1]
            i += 1
        elif arg.startswith("-o"):
            setting = arg[2:]
        i += 1
        if setting is None:
            continue
        name, eq, value = setting.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"-o: missing '=' after parameter name: \"{setting}\"")
        found[name.strip()] = value.strip()
    return found


def parse_entry(text: str, default_maxproc: int = TABLE_PROCESS_LIMIT) -> MasterEntry:
    """parse_entry - one logical master.cf line; raises ValueError when bad."""
    words = split_args(text)
    if len(words) < 8:
        raise ValueError("bad field count")
    service, type_ = words[0], words[1]
    if type_ not in SERVICE_TYPES:
        raise ValueError(f"bad transport type: {type_}")
    if type_ == "inet" and ":" in service and not service.rsplit(":", 1)[1]:
        raise ValueError(f"missing port number in \"{service}\"")
    wakeup, if_used = _wakeup_column(words[5])
    args = words[8:]
    return MasterEntry(
        service=service, type=type_,
        private=_bool_column(words[2], True, "private"),
        unpriv=_bool_column(words[3], True, "unprivileged"),
        chroot=_bool_column(words[4], False, "chroot"),
        wakeup=wakeup, wakeup_if_used=if_used,
        maxproc=_maxproc_column(words[6], default_maxproc),
        command=words[7], args=args, overrides=_overrides(args),
        fields=words[:8])


def parse_master_cf(text: str, path: str, default_maxproc: int = TABLE_PROCESS_LIMIT
                    ) -> tuple[list[MasterEntry], list[str]]:
    """parse_master_cf - every entry of a master.cf text, and its errors by line.

    Entries come in file order, duplicates included (load_master_cf keeps
    the last); each error names the file and the line."""
    entries: list[MasterEntry] = []
    errors: list[str] = []
    for first, last, line in logical_lines(text):
        if line[0].isspace():
            errors.append(f"{path}: line {first}: text starts with white space: "
                          f"\"{line.strip()}\"")
            continue
        try:
            entry = parse_entry(line, default_maxproc)
        except ValueError as e:
            errors.append(f"{path}: line {first}: {e}: \"{_shorten(line)}\""
                          if str(e) == "bad field count" else f"{path}: line {first}: {e}")
            continue
        entry.lineno, entry.last_lineno = first, last
        entries.append(entry)
    return entries, errors


def _shorten(line: str, limit: int = 60) -> str:
    return line if len(line) <= limit else line[:limit] + "..."


def unique_entries(entries: list[MasterEntry]) -> list[MasterEntry]:
    """unique_entries - one entry per service/type: the last definition wins."""
    last = {e.key: e for e in entries}
    return [e for e in entries if last[e.key] is e]


def read_master_cf(config_dir: str, default_maxproc: int = TABLE_PROCESS_LIMIT
                   ) -> tuple[str, list[MasterEntry]]:
    """read_master_cf - (path, entries) of DIR/master.cf; raises on a bad line."""
    path = os.path.join(config_dir, "master.cf")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"open {path}: {e.strerror}") from None
    entries, errors = parse_master_cf(text, path, default_maxproc)
    if errors:
        raise ConfigError(errors[0])
    return path, entries


def load_master_cf(config_dir: str, cfg: Config | None = None) -> list[MasterEntry]:
    """load_master_cf - the services of CONFIG_DIR/master.cf, last definition winning.

    CFG supplies default_process_limit for `-` in the maxproc column; without
    it main.cf is read from CONFIG_DIR."""
    if cfg is None:
        cfg = load_config(config_dir)
    _, entries = read_master_cf(config_dir, cfg.int("default_process_limit"))
    return unique_entries(entries)
