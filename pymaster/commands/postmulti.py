"""postmulti: several mail system instances on one host, as Postfix's postmulti(1).

    postmulti -l [-aRv] [-g group] [-i name]              list instances
    postmulti -p [-av] [-g group] [-i name] command...    run `postfix command` per instance
    postmulti -x [-aRv] [-g group] [-i name] command...   run any command per instance
    postmulti -e init                                     enable multi-instance support
    postmulti -e create [-G group] [-I name] [param=value ...]
    postmulti -e enable | disable | destroy -i name
    postmulti -e assign -i name [-I name] [-G group]

The default instance's main.cf (config_directory, or $MAIL_CONFIG: pymaster
accepts a default instance outside /etc/postfix) lists the secondary
instances in multi_instance_directories; each secondary main.cf names itself
(multi_instance_name), its group (multi_instance_group) and whether it runs
(multi_instance_enable). Commands run with MAIL_CONFIG set to the instance's
configuration directory, which also keeps `postfix` from calling back into
the multi_instance_wrapper.

-p follows the command classes of main.cf: postmulti_start_commands check
disabled instances instead of starting them; postmulti_stop_commands and
postmulti_control_commands skip disabled instances, and stop in reverse order.
The default instance counts as enabled.

Messages: `postmulti: fatal: TEXT` on standard error, exit 1.

Interface:
    main(argv=None) -> exits with the status
"""

from __future__ import annotations

import getopt
import os
import re
import subprocess
import sys
from dataclasses import dataclass

from pymaster.commands import check, postconf
from pymaster.mail.config import Config, ConfigError, config_dir_from_env, load_config
from pymaster.mail.pidfile import running_pid

PROG = "postmulti"
USAGE = ("usage: postmulti -l [-aRv] [-g group] [-i name] | "
         "-p [-av] [-g group] [-i name] command... | "
         "-x [-aRv] [-g group] [-i name] command... | "
         "-e init | -e create [-G group] [-I name] [param=value ...] | "
         "-e enable|disable|destroy|assign [-i name] [-I name] [-G group]")
ACTIONS = ("init", "create", "enable", "disable", "destroy", "assign")
# Installation parameters a new instance shares with the default one: copied
# when the default's main.cf sets them, commented out otherwise.
SHARED_PARAMETERS = ("command_directory", "daemon_directory", "meta_directory", "mail_owner",
                     "setgid_group", "sendmail_path", "mailq_path", "newaliases_path",
                     "html_directory", "manpage_directory", "sample_directory",
                     "readme_directory", "shlib_directory")
PER_INSTANCE_DIRS = ("config_directory", "queue_directory", "data_directory")


class Fatal(Exception):
    """A postmulti fatal error: `postmulti: fatal: TEXT`, exit 1."""


@dataclass
class Member:
    """One instance as the list shows it."""
    name: str           # "-" for an unnamed instance
    group: str          # "-" when in no group
    enabled: bool
    config_dir: str
    cfg: Config

    def line(self) -> str:
        return (f"{self.name:<15} {self.group:<15} {'y' if self.enabled else 'n':<9} "
                f"{self.config_dir}")


def _load(config_dir: str) -> Config:
    try:
        return load_config(config_dir)
    except ConfigError as e:
        raise Fatal(str(e)) from None


def instance_dirs(cfg: Config) -> list[str]:
    """instance_dirs - multi_instance_directories of the default instance."""
    return [d for d in re.split(r"[\s,]+", cfg.get("multi_instance_directories")) if d]


def members(default_dir: str) -> list[Member]:
    """members - the default instance, then the others in listed order."""
    default = _load(default_dir)
    out = [Member(default.get("multi_instance_name") or "-",
                  default.get("multi_instance_group") or "-", True, default_dir, default)]
    for path in instance_dirs(default):
        cfg = _load(path)
        out.append(Member(cfg.get("multi_instance_name") or "-",
                          cfg.get("multi_instance_group") or "-",
                          cfg.get("multi_instance_enable") == "yes", path, cfg))
    return out


def select(all_members: list[Member], name: str | None, group: str | None) -> list[Member]:
    """select - the instances -i NAME (a name or a configuration directory;
    "-" the default) and -g GROUP pick; all of them without either."""
    chosen = all_members
    if name is not None:
        if name == "-":
            chosen = chosen[:1]
        else:
            chosen = [m for m in chosen if name in (m.name, m.config_dir)]
    if group is not None:
        chosen = [m for m in chosen if m.group == group]
    if not chosen:
        raise Fatal("No matching instances")
    return chosen


def set_params(config_dir: str, settings: list[str], action: str = "set") -> None:
    """set_params - `postconf -c CONFIG_DIR -e|-# SETTINGS`, in process."""
    try:
        setup = postconf.load_setup(config_dir, {})
        pairs = ([postconf._split_setting(s) for s in settings] if action == "set"
                 else [(s, "") for s in settings])
        text = postconf.edit_main_cf(setup, pairs, action)
        postconf.write_config_file(setup.main_cf, text)
    except postconf.Fatal as e:
        raise Fatal(str(e)) from None


# ---------------------------------------------------------------------------
# -e: instance management.

def require_init(default: Config) -> None:
    if not default.get("multi_instance_wrapper"):
        raise Fatal("multi_instance_wrapper is empty, run 'postmulti -e init' first.")
    if default.get("multi_instance_enable") != "yes":
        raise Fatal("multi_instance_enable!=yes, run 'postmulti -e init' first.")


def update_dirs(default_dir: str, path: str, add: bool) -> None:
    """update_dirs - add PATH to or drop it from multi_instance_directories."""
    dirs = [d for d in instance_dirs(_load(default_dir)) if d != path]
    if add:
        dirs.append(path)
    set_params(default_dir, [f"multi_instance_directories = {' '.join(dirs)}"])


def create(default_dir: str, name: str | None, group: str | None,
           assignments: list[str]) -> None:
    """create - a new, disabled instance from the prototype files."""
    default = _load(default_dir)
    given = dict(a.split("=", 1) for a in assignments if "=" in a)
    given = {k.strip(): v.strip() for k, v in given.items()}
    if not name and "config_directory" not in given:
        raise Fatal("Specify the instance name with -I, or config_directory=")
    if name and not name.startswith("postfix-"):
        raise Fatal(f"Instance name must begin with 'postfix-': {name}")
    dirs = {}
    for param in PER_INSTANCE_DIRS:
        # /etc/postfix -> /etc/postfix-out for instance "postfix-out".
        base = default_dir if param == "config_directory" else default.get(param)
        dirs[param] = given.pop(param, "") or os.path.join(os.path.dirname(base), name or "")
    check_conflicts(default_dir, name, dirs)
    require_init(default)
    config_dir = dirs["config_directory"]
    if not os.path.exists(os.path.join(config_dir, "master.cf")):
        install_files(default, config_dir, dirs, given)
    names = [f"multi_instance_name = {name}"] if name else []
    if group:
        names.append(f"multi_instance_group = {group}")
    if names:
        set_params(config_dir, names)
    update_dirs(default_dir, config_dir, add=True)
    try:
        check.set_permissions(_load(config_dir))
    except (ConfigError, OSError) as e:
        raise Fatal(str(e)) from None


def check_conflicts(default_dir: str, name: str | None, dirs: dict[str, str]) -> None:
    for m in members(default_dir):
        if name and m.name == name:
            raise Fatal(f"instance name {name} is already in use by instance {m.config_dir}")
        for param, value in dirs.items():
            for other in PER_INSTANCE_DIRS:
                theirs = m.config_dir if other == "config_directory" else m.cfg.get(other)
                if os.path.normpath(value) == os.path.normpath(theirs):
                    raise Fatal(f"instance {dirs['config_directory']}, {param}={value} "
                                f"conflicts with instance {m.config_dir}, {other}={theirs}")
    values = list(dirs.items())
    for i, (param, value) in enumerate(values):
        for other, theirs in values[i + 1:]:
            if os.path.normpath(value) == os.path.normpath(theirs):
                raise Fatal(f"instance {dirs['config_directory']}, {other}={theirs} conflicts "
                            f"with instance {dirs['config_directory']}, {param}={value}")


def install_files(default: Config, config_dir: str, dirs: dict[str, str],
                  given: dict[str, str]) -> None:
    """install_files - main.cf and master.cf from meta_directory's prototypes;
    master.cf goes in last, so an instance with one is complete."""
    meta = default.get("meta_directory")
    protos = {f: os.path.join(meta, f"{f}.proto") for f in ("main.cf", "master.cf")}
    for f, path in protos.items():
        if not os.path.isfile(path):
            raise Fatal(f"Missing {f} prototype: {path}")
    os.makedirs(config_dir, 0o755, exist_ok=True)
    os.makedirs(dirs["queue_directory"], 0o755, exist_ok=True)
    os.makedirs(dirs["data_directory"], 0o700, exist_ok=True)
    tmp = os.path.join(config_dir, ".tmp")
    os.makedirs(tmp, 0o700, exist_ok=True)
    with open(protos["main.cf"], "rb") as src:
        postconf.write_config_file(os.path.join(tmp, "main.cf"), src.read().decode(
            "utf-8", "surrogateescape"))
    explicit = postconf.load_setup(default.config_dir, {}).values
    shared = {p: explicit[p] for p in SHARED_PARAMETERS if explicit.get(p)}
    unset = [p for p in SHARED_PARAMETERS if not explicit.get(p)]
    set_params(tmp, unset, action="comment")
    # New instances start with no inet services and no local submission.
    settings = {"queue_directory": dirs["queue_directory"],
                "data_directory": dirs["data_directory"],
                "authorized_submit_users": "", "master_service_disable": "inet"}
    settings.update(shared)
    settings.update(given)
    set_params(tmp, [f"{k} = {v}" for k, v in settings.items()])
    with open(protos["master.cf"], "rb") as src:
        postconf.write_config_file(os.path.join(tmp, "master.cf"), src.read().decode(
            "utf-8", "surrogateescape"))
    os.rename(os.path.join(tmp, "main.cf"), os.path.join(config_dir, "main.cf"))
    os.rename(os.path.join(tmp, "master.cf"), os.path.join(config_dir, "master.cf"))
    os.rmdir(tmp)


def destroy(default_dir: str, member: Member) -> None:
    """destroy - remove a stopped, disabled instance: its empty directories
    and its two configuration files; anything else stays, with a warning."""
    if member.config_dir == default_dir:
        raise Fatal("Cannot destroy the default instance")
    if member.enabled:
        raise Fatal("Cannot remove enabled instances")
    if running_pid(member.cfg.get("queue_directory")):
        raise Fatal(f"Instance '{member.config_dir}' is not stopped")
    update_dirs(default_dir, member.config_dir, add=False)
    for top in (member.cfg.get("queue_directory"), member.cfg.get("data_directory")):
        if os.path.isdir(top):
            for path, _subdirs, _files in os.walk(top, topdown=False):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            if os.path.exists(top):
                warn(f"{top}: please verify contents and remove by hand")
    for f in ("master.cf", "main.cf"):
        try:
            os.unlink(os.path.join(member.config_dir, f))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(member.config_dir)
    except OSError:
        warn(f"{member.config_dir}: please verify contents and remove by hand")


def manage(default_dir: str, action: str, name: str | None, group: str | None,
           new_name: str | None, new_group: str | None, args: list[str]) -> int:
    if action == "init":
        set_params(default_dir, ["multi_instance_wrapper = ${command_directory}/postmulti -p --",
                                 "multi_instance_enable = yes"])
        return 0
    if action == "create":
        create(default_dir, new_name, new_group, args)
        return 0
    if args:
        raise Fatal(USAGE)
    require_init(_load(default_dir))
    if name is None:
        raise Fatal("Use -i to specify the target instance")
    target = select(members(default_dir), name, group)[0]
    if action in ("enable", "disable"):
        if target.config_dir == default_dir:
            raise Fatal("The default instance is always enabled")
        set_params(target.config_dir,
                   [f"multi_instance_enable = {'yes' if action == 'enable' else 'no'}"])
    elif action == "destroy":
        destroy(default_dir, target)
    else:   # assign
        settings = []
        if new_name is not None:
            settings.append(f"multi_instance_name = {'' if new_name == '-' else new_name}")
        if new_group is not None:
            settings.append(f"multi_instance_group = {'' if new_group == '-' else new_group}")
        if settings:
            set_params(target.config_dir, settings)
    return 0


# ---------------------------------------------------------------------------
# -p and -x: commands per instance.

def run_each(chosen: list[Member], argv_for, env_base: dict[str, str]) -> int:
    """run_each - run ARGV_FOR(member) for each; 1 if any failed."""
    status = 0
    for m in chosen:
        argv = argv_for(m)
        if argv is None:
            continue
        env = dict(env_base, MAIL_CONFIG=m.config_dir)
        try:
            if subprocess.call(argv, env=env) != 0:
                status = 1
        except OSError as e:
            warn(f"{argv[0]}: {e.strerror}")
            status = 1
    return status


def postfix_each(default: Config, chosen: list[Member], command: list[str]) -> int:
    """postfix_each - `postfix COMMAND` per instance, by command class."""
    postfix = os.path.join(default.get("command_directory"), "postfix")
    verb = command[0]
    starting = verb in default.get("postmulti_start_commands").split()
    stopping = verb in default.get("postmulti_stop_commands").split()
    control = verb in default.get("postmulti_control_commands").split()
    if stopping:
        chosen = list(reversed(chosen))

    def argv_for(m: Member) -> list[str] | None:
        if m.enabled:
            return [postfix, *command]
        if starting:
            return [postfix, "check"]
        if stopping or control:
            return None
        return [postfix, *command]
    return run_each(chosen, argv_for, dict(os.environ))


def warn(text: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {text}\n")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        sys.exit(run(args))
    except Fatal as e:
        sys.stderr.write(f"{PROG}: fatal: {e}\n")
        sys.exit(1)


def run(args: list[str]) -> int:
    try:
        opts, rest = getopt.getopt(args, "ae:g:i:G:I:lpRvx")
    except getopt.GetoptError as e:
        raise Fatal(f"{e.msg}. {USAGE}") from None
    modes = [o for o, _ in opts if o in ("-l", "-p", "-x", "-e")]
    if len(modes) != 1:
        raise Fatal(USAGE)
    values = {o: v for o, v in opts}
    mode, reverse = modes[0], "-R" in values
    name, group = values.get("-i"), values.get("-g")
    if "-a" in values:
        name = group = None
    default_dir = config_dir_from_env()
    if mode == "-e":
        if values["-e"] not in ACTIONS:
            raise Fatal(f"Invalid '-e' action '{values['-e']}': specify one of "
                        f"{', '.join(ACTIONS)}")
        return manage(default_dir, values["-e"], name, group, values.get("-I"),
                      values.get("-G"), rest)
    chosen = select(members(default_dir), name, group)
    if reverse:
        chosen.reverse()
    if mode == "-l":
        if rest:
            raise Fatal(USAGE)
        for m in chosen:
            print(m.line())
        return 0
    if not rest:
        raise Fatal(USAGE)
    if mode == "-x":
        return run_each(chosen, lambda m: list(rest), dict(os.environ))
    return postfix_each(_load(default_dir), chosen, rest)
