"""postconf: show and edit main.cf and master.cf, as Postfix's postconf(1) does.

    postconf [-c dir] [-o name=value] [-dfhHnx] [name ...]   show parameters
    postconf [-c dir] -e name=value ...                       edit main.cf
    postconf [-c dir] -X name ... | -# name ...               remove, comment out
    postconf [-c dir] -M[f] [service[/type] ...]              show master.cf
    postconf [-c dir] -Me service/type='entry' ...            add or replace entries
    postconf [-c dir] -MX | -M# service/type ...              remove, comment out
    postconf [-c dir] -F [service/type/field ...]             master.cf fields
    postconf [-c dir] -Fe service/type/field=value ...        edit a field
    postconf [-c dir] -P [service/type/name ...]              master.cf -o parameters
    postconf [-c dir] -Pe service/type/name=value | -PX ...   edit, remove them
    postconf -m | -l | -a | -A                                table, lock, SASL types
    postconf [-c dir] -b | -t [template_file]                 DSN templates, expanded or raw
    postconf -T compile-version | run-version | public-key-algorithms   TLS library

Output, warnings and exit codes follow Postfix: `postconf: warning: NAME:
unknown parameter` (exit 0), `postconf: warning: DIR/main.cf: unused
parameter: foo=bar` for a setting no program reads, `postconf: fatal: …` and
exit 1 for bad usage or a bad file. Edits rewrite the file in place, keeping
comments and order, atomically (pymaster.util.safeio).

Interface: main(argv=None) -> int
"""

from __future__ import annotations

import getopt
import os
import re
import ssl
import sys
from dataclasses import dataclass, field

from pymaster.commands import paramdoc
from pymaster.mail.bounce_template import (
    DEFAULT_TEMPLATES,
    TEMPLATE_NAMES,
    Template,
    TemplateError,
    parse_template_file,
)
from pymaster.mail.config import (
    DEFAULT_CONFIG_DIR,
    Config,
    ConfigError,
    Entry,
    config_dir_from_env,
    normalise_value,
    parse_main_cf,
)
from pymaster.mail.params import PARAMS, service_params
from pymaster.master.mastercf import MasterEntry, parse_entry, parse_master_cf, split_args
from pymaster.util import safeio, tables
from pymaster.util.strings import split_list

PROG = "postconf"
OPTIONS = "aAbc:deEfFhHlmMno:pPtT:vxX#"
FOLD_WIDTH = 79                 # longest folded line, as Postfix folds
MASTER_COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)   # where -M puts each column
FOLD_INDENT = "    "
REFERENCE = re.compile(r"\$(?:\{|\()?([A-Za-z0-9_]+)")
MASTER_FIELDS = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
                 "process_limit", "command")
LOCK_TYPES = ("flock", "fcntl", "dotlock")
SASL_SERVER_TYPES = ("dovecot",)
SASL_CLIENT_TYPES = ("cyrus",)


class Fatal(Exception):
    """A postconf fatal error: printed as `postconf: fatal: TEXT`, exit 1."""


class Failed(Exception):
    """Exit 1 after a warning already printed (no fatal line), as -T does."""


def warn(text: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {text}\n")


# ---------------------------------------------------------------------------
# What postconf looks at: main.cf, master.cf and the names they make known.

@dataclass
class Setup:
    """The configuration one postconf run works on."""
    config_dir: str
    overrides: dict[str, str] = field(default_factory=dict)
    main_text: str = ""
    entries: list[Entry] = field(default_factory=list)
    master_text: str | None = None
    services: list[MasterEntry] = field(default_factory=list)

    @property
    def main_cf(self) -> str:
        return os.path.join(self.config_dir, "main.cf")

    @property
    def master_cf(self) -> str:
        return os.path.join(self.config_dir, "master.cf")

    @property
    def values(self) -> dict[str, str]:
        """values - NAME -> raw value of main.cf, a later line winning."""
        return {e.name: e.value for e in self.entries}

    def config(self, defaults_only: bool = False) -> Config:
        """config - a Config over main.cf (or nothing, for -d) and -o overrides."""
        if defaults_only:
            return Config(self.config_dir, {}, {})
        return Config(self.config_dir, self.values, self.overrides, self.entries)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Fatal(f"open {path}: {e.strerror}") from None


def load_setup(config_dir: str, overrides: dict[str, str], need_main: bool = True,
               need_master: bool = False) -> Setup:
    """load_setup - read and check main.cf and master.cf of CONFIG_DIR."""
    setup = Setup(config_dir, overrides)
    text = _read(setup.main_cf)
    if text is None and need_main:
        raise Fatal(f"open {setup.main_cf}: No such file or directory")
    setup.main_text = text or ""
    setup.entries, errors = parse_main_cf(setup.main_text, setup.main_cf)
    if errors:
        raise Fatal(errors[0])
    setup.master_text = _read(setup.master_cf)
    if setup.master_text is None and need_master:
        raise Fatal(f"open {setup.master_cf}: No such file or directory")
    if setup.master_text is not None:
        setup.services, errors = parse_master_cf(setup.master_text, setup.master_cf)
        if errors:
            raise Fatal(errors[0])
    return setup


def service_defined(setup: Setup) -> dict[str, str]:
    """service_defined - NAME -> default of the parameters master.cf services bring."""
    found: dict[str, str] = {}
    for entry in setup.services:
        for p in service_params(entry.service, entry.command):
            found[p.name] = p.default or ""
    return found


def user_defined(setup: Setup) -> set[str]:
    """user_defined - main.cf names made legitimate by use, as Postfix counts them.

    A name is used when some value ($name in main.cf, in a master.cf -o
    value, or in a built-in default) refers to it, or when
    smtpd_restriction_classes lists it."""
    used: set[str] = set()
    texts = [e.value for e in setup.entries]
    texts += [v for s in setup.services for v in s.overrides.values()]
    texts += list(setup.overrides.values())
    texts += [p.default for p in PARAMS.values() if p.default and "$" in p.default]
    for text in texts:
        used.update(REFERENCE.findall(text))
    classes = setup.overrides.get("smtpd_restriction_classes",
                                  setup.values.get("smtpd_restriction_classes", ""))
    used.update(split_list(classes))
    return {name for name in used if name in setup.values and name not in PARAMS}


def known_names(setup: Setup) -> tuple[dict[str, str], set[str]]:
    """known_names - (service-defined NAME -> default, user-defined names)."""
    return service_defined(setup), user_defined(setup)


def warn_unused(setup: Setup, main_cf: bool = True) -> None:
    """warn_unused - Postfix's warning for each setting no program reads
    (in master.cf -o options, and with MAIN_CF in main.cf too)."""
    for text in unused_settings(setup, main_cf):
        warn(text)


def unused_settings(setup: Setup, main_cf: bool = True) -> list[str]:
    """unused_settings - the "FILE: unused parameter: name=value" texts
    (also what `postfix check` reports)."""
    services, users = known_names(setup)
    found = []
    for entry in setup.entries if main_cf else []:
        name = entry.name
        if name not in PARAMS and name not in services and name not in users:
            found.append(f"{setup.main_cf}: unused parameter: {name}={entry.value}")
    for svc in setup.services:
        for name, value in svc.overrides.items():
            if name not in PARAMS and not _service_param_known(name, services, setup):
                found.append(f"{setup.master_cf}: unused parameter: {name}={value}")
    return found


def _service_param_known(name: str, services: dict[str, str], setup: Setup) -> bool:
    # A -o name that main.cf defines and something refers to is user-defined.
    return name in services or name in user_defined(setup)


# ---------------------------------------------------------------------------
# Showing main.cf parameters.

@dataclass
class Show:
    """How to print: -d, -n, -x, -h, -H, -f."""
    defaults: bool = False
    non_default: bool = False
    expand: bool = False
    no_names: bool = False
    names_only: bool = False
    fold: bool = False


def fold_line(line: str, width: int = FOLD_WIDTH, indent: str = FOLD_INDENT) -> str:
    """fold_line - break LINE at white space into lines of at most WIDTH."""
    words = line.split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = indent + word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n".join(lines)


def format_param(name: str, value: str, show: Show) -> str:
    if show.names_only:
        return name
    if show.no_names:
        return value
    line = f"{name} = {value}" if value else f"{name} ="
    return fold_line(line) if show.fold else line


def param_value(setup: Setup, cfg: Config, name: str, show: Show,
                services: dict[str, str]) -> str:
    """param_value - what postconf prints as the value of NAME."""
    if show.defaults:
        raw = services.get(name) if name in services else cfg.default(name)
    else:
        raw = cfg.raw(name)
        if raw is None:
            raw = services.get(name, "")
    raw = raw or ""
    if not show.expand:
        return raw
    try:
        return normalise_value(name, cfg.expand(raw, (name,)))
    except ConfigError as e:
        raise Fatal(str(e)) from None


def listed_names(setup: Setup, show: Show, services: dict[str, str],
                 users: set[str]) -> list[str]:
    """listed_names - the parameters a listing without names shows."""
    if show.non_default:
        known = set(PARAMS) | set(services) | users
        names = {e.name for e in setup.entries if e.name in known}
        names |= {n for n in setup.overrides if n in known}
        if os.path.normpath(setup.config_dir) != DEFAULT_CONFIG_DIR:
            names.add("config_directory")
        return sorted(names)
    names = set(PARAMS) | set(services)
    if not show.defaults:
        names |= users
    return sorted(names)


def show_params(setup: Setup, names: list[str], show: Show) -> None:
    """show_params - print NAMES (or every parameter) as postconf does."""
    services, users = known_names(setup)
    cfg = setup.config(defaults_only=show.defaults)
    out: list[str] = []
    for name in names or listed_names(setup, show, services, users):
        known = name in PARAMS or name in services or (name in users and not show.defaults)
        if not known:
            warn(f"{name}: unknown parameter")
            continue
        out.append(format_param(name, param_value(setup, cfg, name, show, services), show))
    if out:
        sys.stdout.write("\n".join(out) + "\n")


# ---------------------------------------------------------------------------
# Editing main.cf: -e, -X, -#.

def _split_setting(arg: str) -> tuple[str, str]:
    name, eq, value = arg.partition("=")
    if not eq:
        raise Fatal(f"missing '=' after attribute name: \"{arg.strip()}\"")
    name = name.strip()
    if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise Fatal(f"bad parameter name: \"{name}\"")
    return name, value.strip()


def _entry_lines(lines: list[str], entry: Entry) -> list[int]:
    """_entry_lines - indexes of the lines of ENTRY that are not comments."""
    return [i for i in range(entry.lineno - 1, entry.last_lineno)
            if lines[i].strip() and not lines[i].lstrip().startswith("#")]


def edit_main_cf(setup: Setup, settings: list[tuple[str, str]], action: str) -> str:
    """edit_main_cf - the text of main.cf after -e (set), -X (remove) or -# (comment)."""
    lines = setup.main_text.splitlines()
    wanted = dict(settings)
    counts: dict[str, int] = {}
    replace: dict[int, str | None] = {}
    for entry in setup.entries:
        if entry.name not in wanted:
            continue
        counts[entry.name] = counts.get(entry.name, 0) + 1
        own = _entry_lines(lines, entry)
        for k, i in enumerate(own):
            if action == "set":
                replace[i] = f"{entry.name} = {wanted[entry.name]}" if k == 0 else None
            elif action == "remove":
                replace[i] = None
            else:
                replace[i] = "#" + lines[i]
    for name, count in counts.items():
        if count > 1:
            warn(f"{setup.main_cf}: multiple entries for \"{name}\"")
    replaced = [replace.get(i, line) for i, line in enumerate(lines)]
    out = [line for line in replaced if line is not None]
    if action == "set":
        out += [f"{name} = {value}" for name, value in settings if name not in counts]
    return "\n".join(out) + "\n" if out else ""


def write_config_file(path: str, text: str) -> None:
    """write_config_file - replace PATH atomically, keeping its permissions."""
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        safeio.write_file(path, text.encode("utf-8", "surrogateescape"), mode)
    except OSError as e:
        raise Fatal(f"write {path}: {e.strerror}") from None


# ---------------------------------------------------------------------------
# master.cf: -M, -F, -P and their edits.

def master_line(entry: MasterEntry, fold: bool = False) -> str:
    """master_line - ENTRY in postconf -M's column layout (-f: folded)."""
    head = ""
    for column, text in zip(MASTER_COLUMNS, entry.fields[:7] + [entry.command]):
        # A column that overflows pushes the rest right by one space only.
        if head:
            head = head.ljust(column) if len(head) < column else head + " "
        head += text
    if not fold:
        return " ".join([head] + [_arg_text(a) for a in entry.args])
    lines = [head]
    args = [_arg_text(a) for a in entry.args]
    i = 0
    while i < len(args):
        if args[i] == "-o" and i + 1 < len(args):
            lines.append(f"{FOLD_INDENT}-o {args[i + 1]}")
            i += 2
            continue
        if len(lines[-1]) + 1 + len(args[i]) > FOLD_WIDTH or lines[-1].startswith(
                FOLD_INDENT + "-o "):
            lines.append(FOLD_INDENT + args[i])
        else:
            lines[-1] += " " + args[i]
        i += 1
    return "\n".join(lines)


def _arg_text(arg: str) -> str:
    return "{ " + arg + " }" if not arg or any(c.isspace() for c in arg) else arg


def _matches(entry: MasterEntry, pattern: str) -> bool:
    service, _, type_ = pattern.partition("/")
    return (not service or service == entry.service) and (not type_ or type_ == entry.type)


def selected(services: list[MasterEntry], patterns: list[str]) -> list[MasterEntry]:
    """selected - entries matching any of service[/type] PATTERNS (all if none)."""
    if not patterns:
        return services
    for pattern in patterns:
        if not any(_matches(e, pattern) for e in services):
            warn(f"unmatched request: \"{pattern}\"")
    return [e for e in services if any(_matches(e, p) for p in patterns)]


def field_values(entry: MasterEntry) -> dict[str, str]:
    """field_values - postconf -F's field name -> text for ENTRY."""
    values = dict(zip(MASTER_FIELDS, entry.fields[:7]))
    values["command"] = " ".join([entry.command] + [_arg_text(a) for a in entry.args])
    return values


def show_fields(setup: Setup, patterns: list[str]) -> None:
    out: list[str] = []
    for pattern in patterns or [""]:
        service_type, _, wanted = _split_field_pattern(pattern)
        matched = [e for e in setup.services if _matches(e, service_type)]
        if pattern and not matched:
            warn(f"unmatched request: \"{pattern}\"")
        for entry in matched:
            for name, value in field_values(entry).items():
                if not wanted or wanted == name:
                    out.append(f"{entry.key}/{name} = {value}")
    if out:
        sys.stdout.write("\n".join(out) + "\n")


def show_master_params(setup: Setup, patterns: list[str]) -> None:
    out: list[str] = []
    for pattern in patterns or [""]:
        service_type, _, wanted = _split_field_pattern(pattern)
        for entry in setup.services:
            if not _matches(entry, service_type):
                continue
            for name, value in entry.overrides.items():
                if not wanted or wanted == name:
                    out.append(f"{entry.key}/{name} = {value}" if value
                               else f"{entry.key}/{name} =")
    if out:
        sys.stdout.write("\n".join(out) + "\n")


def _split_field_pattern(pattern: str) -> tuple[str, str, str]:
    """_split_field_pattern - "service/type/name" as ("service/type", "/", "name")."""
    parts = pattern.split("/", 2)
    if len(parts) < 3:
        return pattern, "", ""
    return f"{parts[0]}/{parts[1]}", "/", parts[2]


def _find_service(setup: Setup, key: str) -> MasterEntry | None:
    found = [e for e in setup.services if e.key == key]
    return found[-1] if found else None


def edit_master_cf(setup: Setup, changes: dict[str, MasterEntry | None | str]) -> str:
    """edit_master_cf - master.cf with entries replaced (MasterEntry), removed
    (None) or commented out ("#"); new entries go at the end."""
    lines = (setup.master_text or "").splitlines()
    replace: dict[int, str | None] = {}
    done: set[str] = set()
    for entry in setup.services:
        if entry.key not in changes:
            continue
        change = changes[entry.key]
        own = _entry_lines(lines, Entry(entry.key, "", entry.lineno, entry.last_lineno))
        for k, i in enumerate(own):
            if change == "#":
                replace[i] = "#" + lines[i]
            elif change is None or k > 0 or entry.key in done:
                replace[i] = None
            else:
                assert isinstance(change, MasterEntry)  # "#" and None are handled above
                replace[i] = master_line(change, fold=True)
        done.add(entry.key)
    replaced = [replace.get(i, line) for i, line in enumerate(lines)]
    out = [line for line in replaced if line is not None]
    for key, change in changes.items():
        if key not in done and isinstance(change, MasterEntry):
            out.append(master_line(change, fold=True))
    return "\n".join(out) + "\n" if out else ""


def _rebuilt(entry: MasterEntry, fields: list[str] | None = None,
             args: list[str] | None = None) -> MasterEntry:
    """_rebuilt - ENTRY with new columns or arguments, checked like a file line."""
    fields = fields if fields is not None else list(entry.fields)
    args = args if args is not None else list(entry.args)
    text = " ".join(fields[:7] + [fields[7]] + [_arg_text(a) for a in args])
    try:
        return parse_entry(text)
    except ValueError as e:
        raise Fatal(f"{e}: \"{text}\"") from None


def master_edits(setup: Setup, args: list[str], action: str, mode: str) -> dict:
    """master_edits - the change per service/type that -Me/-MX/-M#/-Fe/-Pe/-PX ask for."""
    changes: dict[str, MasterEntry | None | str] = {}
    for arg in args:
        if mode == "M" and action == "set":
            key, eq, line = arg.partition("=")
            if not eq:
                raise Fatal(f"missing '=' after service/type: \"{arg}\"")
            try:
                entry = parse_entry(line)
            except ValueError as e:
                raise Fatal(f"{e}: \"{arg}\"") from None
            if entry.key != key.strip():
                raise Fatal(f"service/type mismatch: \"{key.strip()}\" versus \"{entry.key}\"")
            changes[entry.key] = entry
            continue
        if mode == "M":
            if arg.count("/") != 1:
                raise Fatal(f"bad service/type: \"{arg}\"")
            if _find_service(setup, arg) is None:
                warn(f"unmatched request: \"{arg}\"")
                continue
            changes[arg] = None if action == "remove" else "#"
            continue
        changes.update(_field_or_param_edit(setup, changes, arg, action, mode))
    return changes


def _field_or_param_edit(setup: Setup, changes: dict, arg: str, action: str,
                         mode: str) -> dict:
    target, eq, value = arg.partition("=")
    parts = target.strip().split("/")
    if len(parts) != 3 or not all(parts) or (action == "set" and not eq):
        raise Fatal(f"bad argument: \"{arg}\"; expect service/type/name"
                    + ("=value" if action == "set" else ""))
    key, name = f"{parts[0]}/{parts[1]}", parts[2]
    entry = changes.get(key) if isinstance(changes.get(key), MasterEntry) else None
    entry = entry or _find_service(setup, key)
    if entry is None:
        warn(f"unmatched request: \"{target.strip()}\"")
        return {}
    value = value.strip()
    if mode == "F":
        if name not in MASTER_FIELDS:
            raise Fatal(f"invalid field name: \"{name}\"")
        fields = list(entry.fields)
        if name == "command":
            words = split_args(value)
            if not words:
                raise Fatal(f"empty command: \"{arg}\"")
            fields[7] = words[0]
            return {key: _rebuilt(entry, fields, words[1:])}
        fields[MASTER_FIELDS.index(name)] = value
        return {key: _rebuilt(entry, fields)}
    return {key: _rebuilt(entry, args=_set_override(entry.args, name, value, action))}


def _set_override(args: list[str], name: str, value: str, action: str) -> list[str]:
    """_set_override - ARGS with `-o NAME=VALUE` replaced, added or removed."""
    out: list[str] = []
    found = False
    i = 0
    while i < len(args):
        if args[i] == "-o" and i + 1 < len(args) and \
                args[i + 1].partition("=")[0].strip() == name:
            if action == "set" and not found:
                out += ["-o", f"{name}={value}"]
            found = True
            i += 2
            continue
        out.append(args[i])
        i += 1
    if action == "set" and not found:
        out += ["-o", f"{name}={value}"]
    return out


# ---------------------------------------------------------------------------
# -b and -t: the bounce(5) templates; -T: the TLS library.

TEMPLATE_TERMINATOR = "EOF"
_COMMENTED_SENDER = re.compile(r"^(\S+)\s+\((.*)\)$")


def _check_template_options(req: Request) -> None:
    letter = req.templates
    if req.tls_mode:
        raise Fatal(f"specify one of -{letter} -T")
    if req.mode != "p":
        raise Fatal(f"specify one of -{letter} -{req.mode}")
    if req.action != "show":
        option = {"set": "e", "remove": "X", "comment": "#"}[req.action]
        raise Fatal(f"specify one of -{letter} -{option}")
    for flag, name in (("d", "defaults"), ("n", "non_default")):
        if getattr(req.show, name):
            raise Fatal(f"with option -{letter}, do not specify -{flag}")
    if len(req.names) > 1:
        raise Fatal("options -b and -t require at most one template file")


def template_set(cfg: Config, path: str | None) -> dict[str, Template]:
    """template_set - the built-in templates, overridden by PATH (or, when
    PATH is None, by bounce_template_file); an empty PATH means built-in only."""
    if path is None:
        path = cfg.get("bounce_template_file").strip()
    templates = dict(DEFAULT_TEMPLATES)
    if path:
        try:
            templates.update(parse_template_file(path))
        except TemplateError as e:
            raise Fatal(str(e)) from None
    return templates


def _from_header(sender: str) -> str:
    # Templates keep the sender as `ADDR (comment)`, the form a notice's
    # From: header takes; a template file shows it as `comment <ADDR>`.
    m = _COMMENTED_SENDER.match(sender.strip())
    return f"{m.group(2)} <{m.group(1)}>" if m else sender


def template_source(template: Template) -> str:
    """template_source - TEMPLATE as a `name = <<EOF` block (postconf -t)."""
    lines = [f"{template.name} = <<{TEMPLATE_TERMINATOR}",
             f"Charset: {template.charset}",
             f"From: {_from_header(template.sender)}",
             f"Subject: {template.subject}"]
    if template.postmaster_subject:
        lines.append(f"Postmaster-Subject: {template.postmaster_subject}")
    lines += ["", template.text, TEMPLATE_TERMINATOR]
    return "\n".join(lines)


def template_expansion(template: Template, cfg: Config, path: str) -> str:
    """template_expansion - TEMPLATE's text with $name replaced (postconf -b)."""
    kind = template.name.removesuffix("_template")
    try:
        text = "\n".join(template.expand(cfg))
    except TemplateError as e:
        raise Fatal(f"{path}: {e}" if path else str(e)) from None
    return f"expanded_{kind}_text = <<{TEMPLATE_TERMINATOR}\n{text}\n{TEMPLATE_TERMINATOR}"


def show_templates(req: Request) -> None:
    """show_templates - print the four templates, raw (-t) or expanded (-b)."""
    config_dir = os.path.abspath(config_dir_from_env(req.config_dir))
    cfg = load_setup(config_dir, req.overrides).config()
    path = req.names[0] if req.names else None
    templates = template_set(cfg, path)
    where = cfg.get("bounce_template_file").strip() if path is None else path
    blocks = [template_source(templates[name]) if req.templates == "t"
              else template_expansion(templates[name], cfg, where)
              for name in TEMPLATE_NAMES]
    sys.stdout.write("\n\n".join(blocks) + "\n")


def _openssl_version(info: tuple[int, ...]) -> str:
    # OpenSSL 3 numbers releases major.minor.patch; 1.x adds a patch letter.
    major, minor, fix, patch, _status = info
    if major >= 3:
        return f"OpenSSL {major}.{minor}.{patch}"
    letter = chr(ord("a") + patch - 1) if patch else ""
    return f"OpenSSL {major}.{minor}.{fix}{letter}"


def tls_report(mode: str) -> list[str] | None:
    """tls_report - postconf -T MODE's lines, from Python's ssl; None: bad mode."""
    if mode == "run-version":
        return [ssl.OPENSSL_VERSION]
    if mode == "compile-version":
        built = getattr(ssl, "_OPENSSL_API_VERSION", ssl.OPENSSL_VERSION_INFO)
        if tuple(built) == tuple(ssl.OPENSSL_VERSION_INFO):
            return [ssl.OPENSSL_VERSION]
        return [_openssl_version(tuple(built))]
    if mode == "public-key-algorithms":
        return ["dsa", "ecdsa", "rsa"] if ssl.HAS_ECDH else ["dsa", "rsa"]
    return None


def show_tls(mode: str) -> None:
    lines = tls_report(mode)
    if lines is None:
        warn(f"unknown 'postconf -T' mode: {mode}")
        raise Failed()
    sys.stdout.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------
# The command line.

@dataclass
class Request:
    config_dir: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    show: Show = field(default_factory=Show)
    mode: str = "p"            # p: main.cf, M: services, F: fields, P: -o parameters
    action: str = "show"       # show, set (-e), remove (-X), comment (-#)
    listing: str = ""          # -m, -l, -a, -A
    templates: str = ""        # -b (expanded) or -t (raw) bounce templates
    tls_mode: str = ""         # -T compile-version, run-version, public-key-algorithms
    names: list[str] = field(default_factory=list)


def usage() -> Fatal:
    return Fatal(f"usage: {PROG} [-a (server SASL types)] [-A (client SASL types)] "
                 "[-b (bounce templates)] [-c config_dir] [-d (parameter defaults)] "
                 "[-e (edit configuration)] "
                 "[-f (fold lines)] [-F (master.cf fields)] [-h (no names)] [-H (no values)] "
                 "[-l (lock types)] [-m (map types)] [-M (master.cf)] "
                 "[-n (non-default parameters)] [-o name=value (override parameter value)] "
                 "[-p (main.cf, default)] [-P (master.cf parameters)] [-t (bounce templates)] "
                 "[-T compile-version|run-version|public-key-algorithms] [-v (verbose)] "
                 "[-x (expand parameter values)] [-X (exclude)] [-# (comment-out)] [name...]")


def parse_args(argv: list[str]) -> Request:
    """parse_args - the Request the options describe; Fatal on bad usage."""
    try:
        opts, names = getopt.getopt(argv, OPTIONS)
    except getopt.GetoptError as e:
        sys.stderr.write(f"{PROG}: invalid option -- '{e.opt}'\n")
        raise usage() from None
    req = Request(names=names)
    flags = {"d": "defaults", "n": "non_default", "x": "expand", "h": "no_names",
             "H": "names_only", "f": "fold"}
    for opt, arg in opts:
        letter = opt[1]
        if letter == "c":
            req.config_dir = arg
        elif letter == "o":
            name, value = _split_setting(arg)
            req.overrides[name] = value
        elif letter in flags:
            setattr(req.show, flags[letter], True)
        elif letter in "MFP":
            req.mode = letter
        elif letter in "eE":
            req.action = "set"
        elif letter == "X":
            req.action = "remove"
        elif letter == "#":
            req.action = "comment"
        elif letter in "mlaA":
            req.listing = letter
        elif letter in "bt":
            if req.templates and req.templates != letter:
                raise Fatal("specify one of -b and -t")
            req.templates = letter
        elif letter == "T":
            req.tls_mode = arg
    _check_combinations(req)
    return req


def _check_combinations(req: Request) -> None:
    if req.templates:
        _check_template_options(req)
    if req.mode != "p" and req.show.non_default:
        raise Fatal(f"with option -{req.mode}, do not specify -n")
    if req.action != "show" and (req.show.defaults or req.show.non_default):
        raise Fatal("-e, -X and -# cannot be combined with -d or -n")
    if req.action == "comment" and req.mode in "FP":
        raise Fatal(f"-# cannot be combined with -{req.mode}")
    if req.action == "remove" and req.mode == "F":
        raise Fatal("-X cannot be combined with -F")
    if req.action != "show" and not req.names:
        option = {"set": "e", "remove": "X", "comment": "#"}[req.action]
        raise Fatal(f"-{option} requires at least one argument")


def show_listing(letter: str) -> None:
    if letter == "m":
        items: list[str] | tuple[str, ...] = sorted(getattr(tables, "TYPES", {}))
    else:
        items = {"l": LOCK_TYPES, "a": SASL_SERVER_TYPES, "A": SASL_CLIENT_TYPES}[letter]
    for item in items:
        print(item)


def run(req: Request) -> None:
    """run - carry out REQUEST; raises Fatal."""
    if req.listing:
        show_listing(req.listing)
        return
    if req.tls_mode:
        show_tls(req.tls_mode)
        return
    if req.templates:
        show_templates(req)
        return
    config_dir = os.path.abspath(config_dir_from_env(req.config_dir))
    editing = req.action != "show"
    setup = load_setup(config_dir, req.overrides,
                       need_main=not (editing and req.mode == "p") and not req.show.defaults,
                       need_master=req.mode != "p")
    if req.mode == "p":
        return _run_main(setup, req)
    if editing:
        changes = master_edits(setup, req.names, req.action, req.mode)
        if changes:
            write_config_file(setup.master_cf, edit_master_cf(setup, changes))
        return
    warn_unused(setup, main_cf=False)
    if req.mode == "M":
        entries = selected(setup.services, req.names)
        if entries:
            sys.stdout.write("\n".join(master_line(e, req.show.fold) for e in entries) + "\n")
    elif req.mode == "F":
        show_fields(setup, req.names)
    else:
        show_master_params(setup, req.names)


def _run_main(setup: Setup, req: Request) -> None:
    if req.action == "show":
        warn_unused(setup)
        show_params(setup, req.names, req.show)
        return
    if req.action == "set":
        settings = [_split_setting(arg) for arg in req.names]
    else:
        settings = [(name.strip(), "") for name in req.names]
    write_config_file(setup.main_cf, edit_main_cf(setup, settings, req.action))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--doc"]:
        sys.stdout.write(paramdoc.render())
        return 0
    try:
        run(parse_args(args))
    except Fatal as e:
        sys.stdout.flush()
        sys.stderr.write(f"{PROG}: fatal: {e}\n")
        return 1
    except Failed:
        return 1
    except ConfigError as e:
        sys.stderr.write(f"{PROG}: fatal: {e}\n")
        return 1
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
