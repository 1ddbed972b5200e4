"""The `postfix` command: start, stop, reload and inspect the mail system.

    postfix [-c config_dir] [-v] [-D] command

Commands, worded and exiting as Postfix's postfix-script does:

  start          create the queue directories, start the master in the
                 background, return once it is up (pid file locked)
  start-fg       the same, with the master in the foreground (`make run`)
  stop           the master finishes or ends its children, then exits
  abort          stop at once
  reload         re-read main.cf and master.cf (SIGHUP to the master)
  status         "the Postfix mail system is running: PID: N", exit 0; else exit 1
  check          the configuration parses, queue directories and service
                 programs are in place, owners and modes are Postfix's
                 (pymaster.commands.check); problems as `warning:` lines
  flush          ask qmgr to deliver everything now
  set-permissions  queue directory owners and modes as Postfix sets them
  logrotate      rename maillog_file with maillog_file_rotate_suffix, make
                 every process reopen it, compress the old one

Messages go to standard error as `postfix/postfix-script: ...` and to the log.

Interface:
    main(argv=None) -> exits with the command's status
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from pymaster.commands import check, logrotate, tlscmd
from pymaster.commands.check import master_cf_error
from pymaster.mail import endpoints, queue
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.mail.pidfile import running_pid
from pymaster.master.mastercf import load_master_cf
from pymaster.util import ipc, log

PROGRAM = "postfix-script"
CHROOT_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/services", "/etc/localtime",
                "/etc/nsswitch.conf")
STOP_WAIT = 30.0          # seconds `postfix stop` waits for the master to go
SYSLOG_SOCKET = "/dev/log"  # where syslog listens (a seam: tests point it elsewhere)
NO_LOGGING = ("logging is not configured: maillog_file is empty and there is no "
              "{socket} socket; set maillog_file (MAILLOG_README) "
              "or start a syslog daemon")
USAGE = ("usage: postfix [-c config_dir] [-Dv] command "
         "(start|start-fg|stop|abort|reload|status|check|flush|set-permissions|logrotate)")


class Script:
    """One postfix command invocation: its configuration and its messages."""

    def __init__(self, cfg: Config, verbose: int) -> None:
        self.cfg = cfg
        self.verbose = verbose
        self.queue_dir = cfg.get("queue_directory")
        log.setup(PROGRAM, cfg, verbose=verbose)
        self.logs = bool(cfg.get("maillog_file")) or os.path.exists(SYSLOG_SOCKET)

    # -- messages ----------------------------------------------------------
    def say(self, text: str) -> None:
        sys.stderr.write(f"{log.tag()}: {text}\n")
        sys.stderr.flush()
        if self.logs:
            log.info(text)

    def warn(self, text: str) -> None:
        self.say(f"warning: {text}")

    def fatal(self, text: str) -> int:
        self.say(f"fatal: {text}")
        return 1

    def running(self) -> int | None:
        return running_pid(self.queue_dir)

    # -- commands ----------------------------------------------------------
    def start(self, foreground: bool = False) -> int:
        if self.running():
            return self.fatal("the Postfix mail system is already running")
        error = master_cf_error(self.cfg)
        if error:
            self.say(f"fatal: {error}")
            return self.fatal("mail system startup failed")
        try:
            self.prepare_queue()
        except OSError as e:
            return self.fatal(f"{self.queue_dir}: {e.strerror or e}")
        if not self.logs:
            # Otherwise every line the mail system logs would be lost.
            self.warn(NO_LOGGING.format(socket=SYSLOG_SOCKET))
        if not self.repair_queue():
            return self.fatal("Postfix integrity check failed!")
        self.say("starting the Postfix mail system")
        argv = [sys.executable, "-m", "pymaster.master.daemon", "-c", self.cfg.config_dir]
        argv += ["-v"] * self.verbose
        env = dict(os.environ, MAIL_CONFIG=self.cfg.config_dir)
        if foreground:
            os.chdir(self.queue_dir)
            os.execve(sys.executable, argv + ["-d"], env)
        return self.spawn_master(argv, env)

    def spawn_master(self, argv: list[str], env: dict[str, str]) -> int:
        """spawn_master - start the master detached; wait until it is up.

        The master closes its standard error once its endpoints are bound and
        its pid file is locked; what it wrote before that is why it failed."""
        proc = subprocess.Popen(argv, env=env, cwd=self.queue_dir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        assert proc.stderr is not None  # stderr=PIPE
        errors = proc.stderr.read()
        proc.stderr.close()
        # End of file: the master is up (pid file locked), or it is exiting.
        deadline = time.monotonic() + STOP_WAIT
        while proc.poll() is None and time.monotonic() < deadline:
            if self.running() == proc.pid:
                return 0
            time.sleep(0.01)
        if proc.poll() is None:
            return 0
        sys.stderr.write(errors.decode(errors="replace"))
        return self.fatal("mail system startup failed")

    def prepare_queue(self) -> None:
        """prepare_queue - directories, and the files a chrooted service needs."""
        owner = self.cfg.get("mail_owner") if os.geteuid() == 0 else None
        queue.create_layout(self.queue_dir, owner, self.cfg.get("setgid_group"))
        if self.any_chroot():
            copy_chroot_files(self.queue_dir)

    def repair_queue(self) -> bool:
        """repair_queue - postsuper's start-up pass (structure check, stale
        temporary files), as its own program: its warnings are postsuper's."""
        argv = [sys.executable, "-m", "pymaster.commands.postsuper", "-c", self.cfg.config_dir]
        return subprocess.run(argv, stdin=subprocess.DEVNULL, check=False).returncode == 0

    def any_chroot(self) -> bool:
        try:
            return any(e.chroot for e in load_master_cf(self.cfg.config_dir, self.cfg))
        except ConfigError:
            return False

    def stop(self, abort: bool = False) -> int:
        pid = self.running()
        if not pid:
            return self.fatal("the Postfix mail system is not running")
        if abort:
            self.say("aborting the Postfix mail system")
        else:
            self.say("stopping the Postfix mail system")
        try:
            os.kill(pid, signal.SIGINT if abort else signal.SIGTERM)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + STOP_WAIT
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        return 0

    def reload(self) -> int:
        pid = self.running()
        if not pid:
            return self.fatal("the Postfix mail system is not running")
        self.say("refreshing the Postfix mail system")
        os.kill(pid, signal.SIGHUP)
        return 0

    def status(self) -> int:
        pid = self.running()
        if not pid:
            self.say("the Postfix mail system is not running")
            return 1
        self.say(f"the Postfix mail system is running: PID: {pid}")
        return 0

    def flush(self) -> int:
        if not self.running():
            return self.fatal("Cannot flush mail queue - mail system is down")
        os.chdir(self.queue_dir)
        ipc.trigger(endpoints.endpoint(self.cfg, "qmgr"),
                    {"op": "flush"})
        return 0

    def set_permissions(self) -> int:
        try:
            check.set_permissions(self.cfg)
        except ConfigError as e:
            return self.fatal(str(e))
        except OSError as e:
            return self.fatal(f"{e.filename or self.queue_dir}: {e.strerror or e}")
        return 0

    def check(self) -> int:
        """check - warn about what would keep the mail system from working."""
        error = check.master_cf_error(self.cfg)
        if error:
            return self.fatal(error)
        for problem in check.check(self.cfg):
            self.warn(problem)
        return 0

    def logrotate(self) -> int:
        """logrotate - rename maillog_file, have everyone reopen it, compress."""
        try:
            rotated = logrotate.rotate(self.cfg)
        except logrotate.RotateError as e:
            return self.fatal(str(e))
        pid = self.running()
        if pid:
            # New workers open the new file before they drop privileges.
            os.kill(pid, signal.SIGHUP)
        logrotate.compress_later(self.cfg, rotated)
        return 0


def copy_chroot_files(queue_dir: str) -> None:
    """copy_chroot_files - what name lookups need inside a chroot jail."""
    etc = os.path.join(queue_dir, "etc")
    os.makedirs(etc, exist_ok=True)
    for src in CHROOT_FILES:
        if os.path.exists(src):
            try:
                shutil.copyfile(src, os.path.join(etc, os.path.basename(src)))
            except OSError:
                pass


def parse_args(argv: list[str]) -> tuple[str | None, int, list[str]]:
    config_dir, verbose, rest = None, 0, []  # type: str | None, int, list[str]
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-c" and i + 1 < len(argv):
            config_dir = argv[i + 1]
            i += 2
            continue
        if a.startswith("-") and len(a) > 1 and not rest:
            for flag in a[1:]:
                if flag == "v":
                    verbose += 1
                elif flag != "D":
                    raise ValueError(f"invalid option -- '{flag}'")
            i += 1
            continue
        rest.append(a)
        i += 1
    return config_dir, verbose, rest


def main(argv: list[str] | None = None) -> None:
    try:
        config_dir, verbose, rest = parse_args(list(sys.argv[1:] if argv is None else argv))
    except ValueError as e:
        sys.stderr.write(f"postfix: {e}\n{USAGE}\n")
        sys.exit(1)
    if not rest:
        sys.stderr.write(f"postfix: fatal: {USAGE}\n")
        sys.exit(1)
    try:
        cfg = load_config(config_dir)
        wrapper = multi_instance_wrapper(cfg)
        if wrapper:
            if rest[0] == "start-fg":
                sys.stderr.write("postfix/postfix-script: fatal: start-fg does not support "
                                 "multi_instance_directories\n")
                sys.exit(1)
            env = dict(os.environ, MAIL_CONFIG=cfg.config_dir)
            os.execvpe(wrapper[0], wrapper + rest, env)
        if rest[0] == "tls":        # postfix-tls(1): pymaster/commands/tlscmd.py
            sys.exit(tlscmd.main(cfg, rest[1:]))
        script = Script(cfg, verbose)
        sys.exit(run(script, rest[0]))
    except ConfigError as e:
        sys.stderr.write(f"postfix: fatal: {e}\n")
        sys.exit(1)


def multi_instance_wrapper(cfg: Config) -> list[str]:
    """multi_instance_wrapper - the manager command that runs this command for
    every instance, or nothing.

    As with Postfix, it is used when the default instance lists others in
    multi_instance_directories, and never when MAIL_CONFIG is set: the manager
    sets it for each instance it runs, so it is not entered twice. Unlike
    Postfix, `-c DIR` alone does not bypass it, so a default instance kept
    outside /etc/postfix (named with -c) still acts on its secondaries."""
    if "MAIL_CONFIG" in os.environ or not cfg.get("multi_instance_directories").strip():
        return []
    return cfg.get("multi_instance_wrapper").split()


def run(script: Script, command: str) -> int:
    actions = {
        "start": script.start,
        "start-fg": lambda: script.start(foreground=True),
        "stop": script.stop,
        "abort": lambda: script.stop(abort=True),
        "reload": script.reload,
        "status": script.status,
        "check": script.check,
        "flush": script.flush,
        "set-permissions": script.set_permissions,
        "logrotate": script.logrotate,
        "upgrade-configuration": lambda: 0,
    }
    action = actions.get(command)
    if action is None:
        return script.fatal(f"unknown command: '{command}'. {USAGE}")
    return action()
