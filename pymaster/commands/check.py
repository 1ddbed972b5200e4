"""`postfix check` and `postfix set-permissions`: what would keep the mail system
from working, and the owners and modes Postfix gives its files.

check() returns warning texts, worded as Postfix's postfix-script words them
(the caller prints each as `postfix/postfix-script: warning: TEXT`):

  not owned by root: PATH                 queue_directory, pid/, config_directory tree
  group or other writable: PATH           the same, plus data_directory
  not owned by MAIL_OWNER: PATH           the queue trees, maildrop, data_directory
  not owned by group SETGID_GROUP: PATH   maildrop, public, postdrop, postqueue
  not set-gid or not owner+group+world executable: PATH   postdrop, postqueue
  wrong mode 0755 (expected 0730): PATH   maildrop, public, private
  wrong mode 0600 (expected 0666): PATH   public/postlog, postlogd's socket
  database X.db is older than source file X
  FILE: NAME: unsupported dictionary type: T (T:NAME)   mysql:, ldap:, lmdb: …
  FILE: unused parameter: name=value      (postconf's own test, reused)
  FILE: parameter not implemented by pymaster, ignored: name
  PATH: not found or not executable (master.cf service NAME/TYPE)
  PATH: not a pymaster program (master.cf service NAME/TYPE)

Owners and modes are only checked when running as root: run as another user
(`make run`) every file is that user's and nothing changes privileges.
master.cf that does not parse is not a warning: master_cf_error() gives the
reason, with file and line, and the caller refuses to go on.

Interface:
    check(cfg) -> list[str]
    master_cf_error(cfg) -> str | None
    set_permissions(cfg)                 queue layout, file owners, setgid commands
    implemented_parameters() -> set[str] parameter names the code reads
"""

from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import re
import stat
from functools import lru_cache
from pathlib import Path

from pymaster.commands import postconf
from pymaster.mail import queue
from pymaster.mail.config import Config, ConfigError
from pymaster.mail.params import PARAMS, SERVICE_SUFFIXES
from pymaster.master.mastercf import load_master_cf
from pymaster.util.tables import TYPES, table_class

# Directories under queue_directory whose whole tree belongs to mail_owner
# (maildrop is left out on purpose: its files belong to the users who wrote them).
OWNER_TREES = ("saved", "incoming", "active", "defer", "deferred", "bounce", "hold",
               "trace", "corrupt", "public", "private", "flush")
ROOT_DIRS = (".", "pid")
GROUP_DIRS = ("public", "maildrop")
# Modes that decide who may submit mail: only postdrop (group setgid_group)
# may write maildrop, and only that group may reach the public endpoints.
EXACT_MODES = {"maildrop": 0o730, "public": 0o710, "private": 0o700}
# The master's datagram socket for postlogd: whoever may enter public/ may log.
POSTLOG_SOCKET_MODE = 0o666
SETGID_COMMANDS = ("postdrop", "postqueue")
INDEXED_TYPES = {"hash": ".db", "btree": ".db", "cdb": ".cdb", "lmdb": ".lmdb"}
TABLE_REF = re.compile(r"\b(hash|btree|cdb|lmdb):(/[^\s,]+)")
# Postfix's lookup table types: a `type:name` of one of these that pymaster
# does not implement is named by `postfix check` (its services answer every
# lookup in it with a temporary failure). Others (inet:, unix:/path of a
# socket) are not tables.
POSTFIX_TABLE_TYPES = frozenset({
    "btree", "cdb", "cidr", "dbm", "environ", "fail", "hash", "inline", "internal", "ldap",
    "lmdb", "memcache", "mysql", "nis", "nisplus", "pcre", "pgsql", "pipemap", "proxy",
    "randmap", "regexp", "sdbm", "socketmap", "sqlite", "static", "tcp", "texthash",
    "unionmap", "unix"})
TYPED_REF = re.compile(r"(?<![\w:/.-])([a-z]+):([^\s,{}]*)")
SOURCE_ROOTS = ("pymaster", "services")
# Read by nothing, yet honoured: pymaster behaves as compatibility_level 3.6
# and later, which is what every current main.cf asks for.
HONOURED_UNREAD = frozenset({"compatibility_level"})


def check(cfg: Config) -> list[str]:
    """check - every problem found, as warning texts."""
    problems = config_problems(cfg)
    problems += program_problems(cfg)
    problems += queue_problems(cfg)
    if os.geteuid() == 0:
        problems += permission_problems(cfg)
    problems += table_problems(cfg)
    problems += unsupported_tables(cfg)
    return problems


# -- configuration -----------------------------------------------------------------

def master_cf_error(cfg: Config) -> str | None:
    """master_cf_error - why master.cf cannot be used (file and line), or None."""
    try:
        load_master_cf(cfg.config_dir, cfg)
    except ConfigError as e:
        return str(e)
    return None


def config_problems(cfg: Config) -> list[str]:
    """config_problems - main.cf and master.cf settings nothing reads."""
    try:
        setup = postconf.load_setup(cfg.config_dir, {})
    except (postconf.Fatal, ConfigError) as e:
        return [str(e)]
    problems = postconf.unused_settings(setup)
    used = implemented_parameters()
    for entry in setup.entries:
        if entry.name in PARAMS and entry.name not in used:
            problems.append(f"{setup.main_cf}: parameter not implemented by pymaster, "
                            f"ignored: {entry.name}")
    return problems


@lru_cache(maxsize=1)
def implemented_parameters() -> frozenset[str]:
    """implemented_parameters - the parameters some pymaster code reads.

    A parameter counts when its name appears in the code of the library or
    a service, or in the default of one that does (smtpd_banner brings
    mail_name), or when it ends like a name the code builds at run time
    (f"{prefix}_tls_cert_file"): a careful guess, never a false "ignored"
    for what the code does read by its literal name."""
    root = Path(__file__).resolve().parents[2]
    words: set[str] = set()
    # Names built at run time: f"{prefix}_tls_cert_file" serves smtpd_ and smtp_.
    suffixes = set(SERVICE_SUFFIXES)
    for top in SOURCE_ROOTS:
        for path in (root / top).rglob("*.py"):
            if path.name in ("params.py", "paramdoc.py"):
                continue
            text = path.read_text(errors="replace")
            words.update(re.findall(r"[A-Za-z][A-Za-z0-9_]+", text))
            suffixes.update(re.findall(r"\{\w+\}(_[A-Za-z0-9_]+)", text))
    used = {name for name in PARAMS if name in words} | HONOURED_UNREAD
    used |= {name for name in PARAMS if name.endswith(tuple(suffixes))}
    todo = list(used)
    while todo:
        default = PARAMS[todo.pop()].default or ""
        for ref in re.findall(r"\$\{?\(?([A-Za-z0-9_]+)", default):
            if ref in PARAMS and ref not in used:
                used.add(ref)
                todo.append(ref)
    return frozenset(used)


def program_problems(cfg: Config) -> list[str]:
    """program_problems - master.cf commands that are missing or not pymaster's."""
    try:
        entries = load_master_cf(cfg.config_dir, cfg)
    except ConfigError as err:
        return [str(err)]
    daemon_dir = cfg.get("daemon_directory")
    problems = []
    for e in entries:
        path = e.command if os.path.isabs(e.command) else os.path.join(daemon_dir, e.command)
        where = f"(master.cf service {e.service}/{e.type})"
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            problems.append(f"{path}: not found or not executable {where}")
        elif not os.path.isabs(e.command) and is_compiled(path):
            # Typically a daemon_directory still naming Postfix's own programs.
            problems.append(f"{path}: not a pymaster program {where}")
    return problems


def is_compiled(path: str) -> bool:
    """is_compiled - whether PATH is a binary rather than a script."""
    try:
        with open(path, "rb") as f:
            return f.read(2) != b"#!"
    except OSError:
        return False


# -- the queue and the files around it ----------------------------------------------

def queue_problems(cfg: Config) -> list[str]:
    """queue_problems - missing queue directories."""
    queue_dir = cfg.get("queue_directory")
    if not os.path.isdir(queue_dir):
        return [f"queue directory {queue_dir} does not exist"]
    return [f"missing queue directory: {os.path.join(queue_dir, name)}"
            for name in queue.ALL_DIRS if not os.path.isdir(os.path.join(queue_dir, name))]


def permission_problems(cfg: Config) -> list[str]:
    """permission_problems - owners and modes, as postfix-script checks them."""
    owner, group = cfg.get("mail_owner"), cfg.get("setgid_group")
    uid, gid = _uid(owner), _gid(group)
    problems = []
    if uid is None:
        problems.append(f"unknown mail_owner user: {owner}")
    if gid is None:
        problems.append(f"unknown setgid_group group: {group}")
    problems += _root_owned(cfg)
    problems += _owner_owned(cfg, owner, uid)
    problems += _group_owned(cfg, group, gid)
    problems += _postlog_socket_problems(cfg)
    return problems


def _postlog_socket(cfg: Config) -> str:
    return os.path.join(cfg.get("queue_directory"), "public",
                        cfg.get("postlog_service_name"))


def _postlog_socket_problems(cfg: Config) -> list[str]:
    """_postlog_socket_problems - the postlog socket, when there is one."""
    path = _postlog_socket(cfg)
    try:
        st = os.lstat(path)
    except OSError:
        return []
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISSOCK(st.st_mode) and mode != POSTLOG_SOCKET_MODE:
        return [f"wrong mode {mode:04o} (expected {POSTLOG_SOCKET_MODE:04o}): {path}"]
    return []


def _root_owned(cfg: Config) -> list[str]:
    queue_dir = cfg.get("queue_directory")
    paths = [os.path.normpath(os.path.join(queue_dir, d)) for d in ROOT_DIRS]
    paths = [p for p in paths if os.path.isdir(p)] + list(_walk(cfg.config_dir))
    problems = [f"not owned by root: {p}" for p in paths if _lstat(p, "st_uid") not in (0, None)]
    problems += [f"group or other writable: {p}" for p in paths if _writable_by_others(p)]
    return problems


def _owner_owned(cfg: Config, owner: str, uid: int | None) -> list[str]:
    if uid is None:
        return []
    queue_dir = cfg.get("queue_directory")
    problems = []
    for name in OWNER_TREES:
        for path in _walk(os.path.join(queue_dir, name)):
            mode = os.lstat(path).st_mode
            if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and os.lstat(path).st_uid != uid:
                problems.append(f"not owned by {owner}: {path}")
    maildrop = os.path.join(queue_dir, "maildrop")
    if os.path.isdir(maildrop) and os.lstat(maildrop).st_uid != uid:
        problems.append(f"not owned by {owner}: {maildrop}")
    data_dir = cfg.get("data_directory")
    for path in _walk(data_dir):
        if os.lstat(path).st_uid != uid:
            problems.append(f"not owned by {owner}: {path}")
        if _writable_by_others(path):
            problems.append(f"group or other writable: {path}")
    for name, expected in EXACT_MODES.items():
        path = os.path.join(queue_dir, name)
        if os.path.isdir(path) and stat.S_IMODE(os.stat(path).st_mode) & 0o777 != expected:
            problems.append(f"wrong mode {stat.S_IMODE(os.stat(path).st_mode):04o} "
                            f"(expected {expected:04o}): {path}")
    return problems


def _group_owned(cfg: Config, group: str, gid: int | None) -> list[str]:
    if gid is None:
        return []
    queue_dir = cfg.get("queue_directory")
    paths = [os.path.join(queue_dir, d) for d in GROUP_DIRS]
    commands = [p for p in setgid_commands(cfg)]
    problems = [f"not owned by group {group}: {p}" for p in paths + commands
                if os.path.exists(p) and os.stat(p).st_gid != gid]
    problems += [f"not set-gid or not owner+group+world executable: {p}" for p in commands
                 if os.stat(p).st_mode & 0o2111 != 0o2111]
    return problems


def setgid_commands(cfg: Config) -> list[str]:
    """setgid_commands - the installed compiled postdrop and postqueue.

    A development checkout has Python scripts there, which the kernel never
    runs set-group-ID; they are left out rather than reported."""
    found = []
    for name in SETGID_COMMANDS:
        path = os.path.join(cfg.get("command_directory"), name)
        if os.path.isfile(path) and is_compiled(path):
            found.append(path)
    return found


def table_problems(cfg: Config) -> list[str]:
    """table_problems - indexed tables older than the text they were built from."""
    sources: set[str] = set()
    for path in _walk(cfg.config_dir):
        for suffix in set(INDEXED_TYPES.values()):
            if path.endswith(suffix) and os.path.isfile(path[:-len(suffix)]):
                sources.add(path)
    for value in _setting_values(cfg):
        for type_, name in TABLE_REF.findall(value):
            if os.path.isfile(name):
                sources.add(name + INDEXED_TYPES[type_])
    problems = []
    for db in sorted(sources):
        source = db.rsplit(".", 1)[0]
        if not os.path.exists(db):
            problems.append(f"database {db} does not exist")
        elif os.stat(db).st_mtime < os.stat(source).st_mtime:
            problems.append(f"database {db} is older than source file {source}")
    return problems


def unsupported_tables(cfg: Config) -> list[str]:
    """unsupported_tables - main.cf settings that name a table type pymaster lacks,
    or one whose Python driver is not installed (also under proxy:)."""
    main_cf = os.path.join(cfg.config_dir, "main.cf")
    problems = []
    for name in sorted(cfg.values):
        try:
            value = cfg.get(name)
        except ConfigError:
            continue
        for type_, rest in TYPED_REF.findall(value):
            if type_ in POSTFIX_TABLE_TYPES and type_ not in TYPES:
                problems.append(f"{main_cf}: {name}: unsupported dictionary type: "
                                f"{type_} ({type_}:{rest})")
                continue
            while type_ == "proxy":
                type_, _, rest = rest.partition(":")
            if type_ in TYPES and _driver_missing(type_):
                package = table_class(type_).driver_package
                problems.append(f"{main_cf}: {name}: {type_}: tables need the Python "
                                f"package {package}, which is not installed")
    return problems


def _driver_missing(type_: str) -> bool:
    """_driver_missing - whether TYPE's tables need a module that is not installed."""
    driver = getattr(table_class(type_), "driver", "")
    return bool(driver) and importlib.util.find_spec(driver) is None


def _setting_values(cfg: Config) -> list[str]:
    """_setting_values - main.cf values and master.cf -o values, expanded."""
    values = []
    for name in cfg.values:
        try:
            values.append(cfg.get(name))
        except ConfigError:
            continue
    try:
        for entry in load_master_cf(cfg.config_dir, cfg):
            values += [cfg.expand(v) for v in entry.overrides.values()]
    except ConfigError:
        pass
    return values


# -- set-permissions -----------------------------------------------------------------

def set_permissions(cfg: Config) -> None:
    """set_permissions - queue directories, queue files and setgid commands
    as Postfix sets them (as root; otherwise only the directories)."""
    owner, group = cfg.get("mail_owner"), cfg.get("setgid_group")
    queue.create_layout(cfg.get("queue_directory"), owner if os.geteuid() == 0 else None,
                        group)
    if os.geteuid() != 0:
        return
    uid, gid = _uid(owner), _gid(group)
    if uid is None:
        raise ConfigError(f"unknown mail_owner user: {owner}")
    for name in OWNER_TREES:
        for path in _walk(os.path.join(cfg.get("queue_directory"), name)):
            os.lchown(path, uid, -1)
    data_dir = cfg.get("data_directory")
    if data_dir:
        os.makedirs(data_dir, mode=0o700, exist_ok=True)
        for path in _walk(data_dir):
            os.lchown(path, uid, -1)
    if gid is not None:
        for path in setgid_commands(cfg):
            os.chown(path, 0, gid)
            os.chmod(path, 0o2755)
    _fix_postlog_socket(cfg)


def _fix_postlog_socket(cfg: Config) -> None:
    """_fix_postlog_socket - the postlog socket's mode, when there is one."""
    path = _postlog_socket(cfg)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.chmod(path, POSTLOG_SOCKET_MODE)
    except OSError:
        pass


# -- helpers -------------------------------------------------------------------------

def _walk(top: str):
    """_walk - TOP and everything below it (symbolic links not followed)."""
    if not top or not os.path.isdir(top):
        return
    yield top
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            yield os.path.join(dirpath, name)


def _lstat(path: str, field: str) -> int | None:
    try:
        return getattr(os.lstat(path), field)
    except OSError:
        return None


def _writable_by_others(path: str) -> bool:
    # Follows symbolic links, as `find -L` does for Postfix: what matters is
    # whether the file that is read can be changed by others.
    try:
        return bool(os.stat(path).st_mode & 0o022)
    except OSError:
        return False


def _uid(user: str) -> int | None:
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def _gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None
