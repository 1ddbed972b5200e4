#!/usr/bin/env python3
"""Install, upgrade and uninstall pymaster as a system service (`make install`).

    python3 install/install.py install|upgrade|uninstall [NAME=VALUE ...]

NAME=VALUE are the directory names (the Makefile passes them all):
DESTDIR, venv_directory, config_directory, queue_directory, command_directory,
daemon_directory, data_directory, mail_spool_directory, sendmail_path,
newaliases_path, mailq_path, sendmail_compat, mail_owner, setgid_group,
initd_directory, systemd_directory, doc_directory, manifest.

install:
  * a virtual environment at venv_directory (`python3 -m venv`, then a
    non-editable `pip install` of a copy of this checkout), built beside the
    old one and swapped in, so running services keep a whole tree under them;
    pymaster/mail/site_defaults.py in it records the directories as built-in
    defaults (Postfix compiles them in);
  * the service programs in daemon_directory (libexec/*, run by the venv);
  * the commands in command_directory: symbolic links to the venv's scripts,
    except postdrop and postqueue, which are install/setgid-wrapper.c compiled
    here with gcc, root:setgid_group mode 2755; mailq_path, newaliases_path
    and sendmail_compat (/usr/lib/sendmail) link to them as on Postfix systems;
  * the users: mail_owner (user and group) and setgid_group when missing;
  * main.cf, master.cf (etc/install/, directories filled in; services whose
    program is not provided here commented out) and aliases, only when absent;
  * the SysV script and the systemd unit (not enabled, not started);
  * the queue: `postfix set-permissions`.
  A file in the way that is not pymaster's (Debian's /usr/sbin/postfix) is
  kept as FILE.pre-pymaster and put back by uninstall. Everything installed
  is listed in the manifest, which uninstall reads.
  With DESTDIR (staging for a package) nothing outside DESTDIR is touched:
  no users, no set-permissions, wrappers mode 0755 until set-permissions.

upgrade: install (configuration files exist, so they stay), then
  `postfix set-permissions`, and `postfix reload` when the system runs.

uninstall: removes what the manifest lists, restores the kept files, removes
  the venv and daemon_directory; configuration, queue and users stay.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
COMMANDS = ("postfix", "postconf", "postmap", "postalias", "postqueue", "postsuper",
            "postcat", "postdrop", "postlog", "sendmail", "mailq", "newaliases", "postmulti")
SETGID_COMMANDS = ("postdrop", "postqueue")
SOURCES = ("pymaster", "services", "setup.cfg", "pyproject.toml", "README.md")
KEPT_SUFFIX = ".pre-pymaster"
MARKER = b"pymaster"
DEFAULT_SETTINGS = {
    "DESTDIR": "", "venv_directory": "/usr/lib/pymaster/venv",
    "config_directory": "/etc/postfix", "queue_directory": "/var/spool/postfix",
    "command_directory": "/usr/sbin", "daemon_directory": "/usr/lib/pymaster/libexec",
    "data_directory": "/var/lib/postfix", "mail_spool_directory": "/var/mail",
    "sendmail_path": "/usr/sbin/sendmail", "newaliases_path": "/usr/bin/newaliases",
    "mailq_path": "/usr/bin/mailq", "sendmail_compat": "/usr/lib/sendmail",
    "mail_owner": "postfix", "setgid_group": "postdrop",
    "initd_directory": "/etc/init.d", "systemd_directory": "/lib/systemd/system",
    "doc_directory": "/usr/share/doc/pymaster",
    "manifest": "/usr/lib/pymaster/installed-files",
}
# The directories that site_defaults.py and main.cf record.
RECORDED = ("config_directory", "queue_directory", "command_directory", "daemon_directory",
            "data_directory", "mail_spool_directory", "sendmail_path", "newaliases_path",
            "mailq_path", "mail_owner", "setgid_group")


def say(text: str) -> None:
    print(f"pymaster-install: {text}", flush=True)


class Installer:
    """One install/upgrade/uninstall run over the settings S."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.s = settings
        self.destdir = settings["DESTDIR"].rstrip("/")
        self.staging = bool(self.destdir)
        self.manifest: list[str] = []        # final paths of what we installed
        self.kept: list[str] = []            # final paths saved as .pre-pymaster

    def root(self, path: str) -> Path:
        """root - where final PATH is written (under DESTDIR)."""
        return Path(self.destdir + path)

    # -- install -------------------------------------------------------------
    def install(self) -> None:
        self.read_manifest()
        if not self.staging and os.geteuid() == 0:
            self.create_accounts()
        self.build_venv()
        self.install_programs()
        self.install_commands()
        self.install_config()
        self.install_init()
        self.install_docs()
        self.write_manifest()
        if not self.staging:
            self.postfix("set-permissions")
            self.build_aliases()
        say(f"installed; configuration in {self.s['config_directory']}, "
            f"start with: {self.s['command_directory']}/postfix start")

    def create_accounts(self) -> None:
        owner, group = self.s["mail_owner"], self.s["setgid_group"]
        if not _exists("group", owner):
            run(["groupadd", "--system", owner])
        if not _exists("passwd", owner):
            run(["useradd", "--system", "--gid", owner, "--home-dir",
                 self.s["queue_directory"], "--no-create-home",
                 "--shell", "/usr/sbin/nologin", owner])
        if not _exists("group", group):
            run(["groupadd", "--system", group])

    def build_venv(self) -> None:
        """build_venv - a fresh venv beside the old one, then swapped in."""
        final = self.s["venv_directory"]
        target = self.root(final)
        new = target.with_name(target.name + ".new")
        shutil.rmtree(new, ignore_errors=True)
        new.parent.mkdir(parents=True, exist_ok=True)
        say(f"building {final}")
        run([sys.executable, "-m", "venv", str(new)])
        with tempfile.TemporaryDirectory(prefix="pymaster-build-") as src:
            # A copy: building in the checkout would leave build/ and
            # *.egg-info behind in a tree others work in.
            for name in SOURCES:
                item = CHECKOUT / name
                if item.is_dir():
                    shutil.copytree(item, Path(src) / name,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                elif item.exists():
                    shutil.copy2(item, Path(src) / name)
            run([str(new / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                 src])
        self.write_site_defaults(new)
        fix_shebangs(new / "bin", str(new), final)
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        new.rename(target)
        shutil.rmtree(old, ignore_errors=True)

    def write_site_defaults(self, venv: Path) -> None:
        purelib = subprocess.run(
            [str(venv / "bin" / "python"), "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True).stdout.strip()
        lines = ['"""Directories `make install` used: built-in defaults (generated)."""',
                 "", "DEFAULTS = {"]
        lines += [f"    {name!r}: {self.s[name]!r}," for name in RECORDED]
        lines += ["}", ""]
        (Path(purelib) / "pymaster" / "mail" / "site_defaults.py").write_text("\n".join(lines))

    def install_programs(self) -> None:
        """install_programs - libexec/* into daemon_directory, run by the venv."""
        daemon = self.root(self.s["daemon_directory"])
        daemon.mkdir(parents=True, exist_ok=True)
        python = f"{self.s['venv_directory']}/bin/python"
        for item in sorted((CHECKOUT / "libexec").iterdir()):
            if not item.is_file():
                continue
            lines = item.read_text().splitlines(keepends=True)
            if lines and lines[0].startswith("#!"):
                lines[0] = f"#!{python}\n"
            dest = daemon / item.name
            write_file(dest, "".join(lines), 0o755)

    def install_commands(self) -> None:
        cmd_dir = self.s["command_directory"]
        self.root(cmd_dir).mkdir(parents=True, exist_ok=True)
        for name in COMMANDS:
            final = f"{cmd_dir}/{name}"
            self.make_room(final)
            if name in SETGID_COMMANDS:
                self.compile_wrapper(name, final)
            else:
                self.root(final).symlink_to(f"{self.s['venv_directory']}/bin/{name}")
            self.manifest.append(final)
        links = {self.s["mailq_path"]: f"{cmd_dir}/mailq",
                 self.s["newaliases_path"]: f"{cmd_dir}/newaliases",
                 self.s["sendmail_path"]: f"{cmd_dir}/sendmail",
                 self.s["sendmail_compat"]: self.s["sendmail_path"]}
        for link, target in links.items():
            if not link or link == target:
                continue
            self.root(link).parent.mkdir(parents=True, exist_ok=True)
            self.make_room(link)
            self.root(link).symlink_to(target)
            self.manifest.append(link)

    def compile_wrapper(self, name: str, final: str) -> None:
        """compile_wrapper - install/setgid-wrapper.c for command NAME."""
        dest = self.root(final)
        defines = {"PYTHON": f"{self.s['venv_directory']}/bin/python",
                   "MODULE": f"pymaster.commands.{name}",
                   "CONFIG_DIR": self.s["config_directory"], "PROGRAM": name}
        flags = [f"-D{k}={c_string(v)}" for k, v in defines.items()]
        run(["gcc", "-O2", "-Wall", *flags, "-o", str(dest),
             str(CHECKOUT / "install" / "setgid-wrapper.c")])
        gid = _gid(self.s["setgid_group"])
        if self.staging or gid is None or os.geteuid() != 0:
            # No set-group-ID bit without the right group: set-permissions
            # (the package's post-install step) finishes the job.
            os.chmod(dest, 0o755)
            return
        os.chown(dest, 0, gid)
        os.chmod(dest, 0o2755)

    def install_config(self) -> None:
        config = self.root(self.s["config_directory"])
        config.mkdir(parents=True, exist_ok=True)
        main_cf = substitute((CHECKOUT / "etc" / "install" / "main.cf").read_text(), self.s)
        master_cf = self.master_cf_text()
        for name, text in (("main.cf", main_cf), ("master.cf", master_cf),
                           ("aliases", (CHECKOUT / "etc" / "aliases").read_text())):
            path = config / name
            if path.exists():
                say(f"keeping existing {self.s['config_directory']}/{name}")
                continue
            write_file(path, text, 0o644)
        # The prototypes `postmulti -e create` starts a new instance from
        # (meta_directory): pymaster's own files, replaced on every install.
        for name, text in (("main.cf.proto", main_cf), ("master.cf.proto", master_cf)):
            write_file(config / name, text, 0o644)
            self.manifest.append(f"{self.s['config_directory']}/{name}")

    def master_cf_text(self) -> str:
        """master_cf_text - etc/install/master.cf, services without a program
        commented out (with their continuation lines)."""
        provided = {p.name for p in (CHECKOUT / "libexec").iterdir()}
        out, skipping = [], False
        for line in (CHECKOUT / "etc" / "install" / "master.cf").read_text().splitlines():
            if line[:1].isspace() and line.strip():
                out.append("#" + line if skipping else line)
                continue
            words = line.split()
            skipping = (not line.startswith("#") and len(words) >= 8
                        and words[7] not in provided)
            out.append(f"#{line}   (not provided by pymaster)" if skipping else line)
        return "\n".join(out) + "\n"

    def install_init(self) -> None:
        commands = self.s['command_directory']
        files = {f"{self.s['initd_directory']}/postfix": ("init.d/postfix", 0o755),
                 f"{self.s['systemd_directory']}/postfix.service":
                     ("systemd/postfix.service", 0o644),
                 f"{self.s['systemd_directory']}/postfix@.service":
                     ("systemd/postfix@.service", 0o644)}
        for final, (source, mode) in files.items():
            text = (CHECKOUT / "etc" / source).read_text()
            text = text.replace("/usr/sbin/postmulti", f"{commands}/postmulti")
            text = text.replace("/usr/sbin/postfix", f"{commands}/postfix")
            text = text.replace("/etc/postfix", self.s["config_directory"])
            self.root(final).parent.mkdir(parents=True, exist_ok=True)
            self.make_room(final)
            write_file(self.root(final), text, mode)
            self.manifest.append(final)

    def install_docs(self) -> None:
        doc = self.s["doc_directory"]
        for item in [CHECKOUT / "README.md", *sorted((CHECKOUT / "docs").glob("*.md"))]:
            final = f"{doc}/{item.name}"
            self.root(final).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(item, self.root(final))
            self.manifest.append(final)

    def build_aliases(self) -> None:
        aliases = Path(self.s["config_directory"]) / "aliases"
        if aliases.exists() and not Path(str(aliases) + ".db").exists():
            self.postfix_tool("postalias", f"hash:{aliases}")

    def postfix(self, *args: str) -> int:
        return self.postfix_tool("postfix", *args)

    def postfix_tool(self, name: str, *args: str) -> int:
        cmd = [f"{self.s['venv_directory']}/bin/{name}", "-c", self.s["config_directory"],
               *args]
        return subprocess.run(cmd).returncode

    # -- files of others -----------------------------------------------------
    def make_room(self, final: str) -> None:
        """make_room - remove our old FINAL; keep anybody else's as .pre-pymaster."""
        path = self.root(final)
        if not (path.exists() or path.is_symlink()):
            return
        if final in self.manifest or final in self.previous or self.is_ours(path):
            path.unlink()
            return
        kept = Path(str(path) + KEPT_SUFFIX)
        if not kept.exists():
            path.rename(kept)
            say(f"keeping {final} as {final}{KEPT_SUFFIX}")
        else:
            path.unlink()
        if final not in self.kept:
            self.kept.append(final)

    def is_ours(self, path: Path) -> bool:
        if path.is_symlink():
            return os.readlink(path).startswith(self.s["venv_directory"])
        try:
            return MARKER in path.read_bytes()[:1 << 20]
        except OSError:
            return False

    # -- the manifest ----------------------------------------------------------
    def read_manifest(self) -> None:
        self.previous: list[str] = []
        path = self.root(self.s["manifest"])
        if not path.exists():
            return
        for line in path.read_text().splitlines():
            kind, _, final = line.partition(" ")
            if kind == "file":
                self.previous.append(final)
            elif kind == "kept" and final not in self.kept:
                self.kept.append(final)

    def write_manifest(self) -> None:
        lines = [f"file {p}" for p in self.manifest] + [f"kept {p}" for p in self.kept]
        write_file(self.root(self.s["manifest"]), "\n".join(lines) + "\n", 0o644)

    # -- uninstall ---------------------------------------------------------------
    def uninstall(self) -> None:
        self.read_manifest()
        if not self.root(self.s["manifest"]).exists():
            say("nothing to uninstall (no manifest)")
            return
        for final in self.previous:
            path = self.root(final)
            if path.is_symlink() or path.is_file():
                path.unlink()
        for final in self.kept:
            kept = Path(str(self.root(final)) + KEPT_SUFFIX)
            if kept.exists() or kept.is_symlink():
                kept.rename(self.root(final))
                say(f"restored {final}")
        for final in (self.s["venv_directory"], self.s["daemon_directory"]):
            shutil.rmtree(self.root(final), ignore_errors=True)
        self.root(self.s["manifest"]).unlink()
        for final in (self.s["doc_directory"], str(Path(self.s["venv_directory"]).parent)):
            try:
                self.root(final).rmdir()
            except OSError:
                pass
        say(f"uninstalled; kept {self.s['config_directory']} and {self.s['queue_directory']}")

    def upgrade(self) -> None:
        running = self.postfix("status") == 0 if self.root(self.s["manifest"]).exists() \
            else False
        self.install()
        if running and not self.staging:
            self.postfix("reload")


# -- helpers -----------------------------------------------------------------------

def run(argv: list[str]) -> None:
    done = subprocess.run(argv)
    if done.returncode != 0:
        raise SystemExit(f"pymaster-install: failed ({done.returncode}): {' '.join(argv)}")


def write_file(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def fix_shebangs(bin_dir: Path, built: str, final: str) -> None:
    """fix_shebangs - scripts built in BUILT name the interpreter at FINAL."""
    for item in bin_dir.iterdir():
        if item.is_symlink() or not item.is_file():
            continue
        data = item.read_bytes()
        if data.startswith(b"#!") and built.encode() in data.split(b"\n", 1)[0]:
            first, _, rest = data.partition(b"\n")
            item.write_bytes(first.replace(built.encode(), final.encode()) + b"\n" + rest)


def substitute(text: str, settings: dict[str, str]) -> str:
    for name, value in settings.items():
        text = text.replace(f"@{name}@", value)
    return text


def c_string(value: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise SystemExit(f"pymaster-install: unusable path for the wrapper: {value!r}")
    return f'"{value}"'


def _exists(database: str, name: str) -> bool:
    return subprocess.run(["getent", database, name], capture_output=True).returncode == 0


def _gid(group: str) -> int | None:
    import grp
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def parse(argv: list[str]) -> tuple[str, dict[str, str]]:
    if not argv or argv[0] not in ("install", "upgrade", "uninstall"):
        raise SystemExit(__doc__.split("\n\n")[1])
    settings = dict(DEFAULT_SETTINGS)
    for arg in argv[1:]:
        name, eq, value = arg.partition("=")
        if not eq or name not in settings:
            raise SystemExit(f"pymaster-install: unknown setting: {arg}")
        settings[name] = value
    for name, value in settings.items():
        if name not in ("DESTDIR", "mail_owner", "setgid_group") and value \
                and not value.startswith("/"):
            raise SystemExit(f"pymaster-install: {name} must be an absolute path: {value}")
    return argv[0], settings


def check_interpreter() -> None:
    """check_interpreter - every user must be able to run this Python."""
    path = Path(os.path.realpath(sys.executable))
    for parent in path.parents:
        if not os.stat(parent).st_mode & 0o001:
            raise SystemExit(f"pymaster-install: {sys.executable} lies under {parent}, which "
                             f"other users cannot enter; use INSTALL_PYTHON=/usr/bin/python3")


def main(argv: list[str] | None = None) -> int:
    action, settings = parse(sys.argv[1:] if argv is None else argv)
    if action != "uninstall":
        check_interpreter()
    if not settings["DESTDIR"] and os.geteuid() != 0:
        say("warning: not root: no accounts, owners or set-group-ID commands")
    getattr(Installer(settings), action)()
    return 0


if __name__ == "__main__":
    sys.exit(main())
