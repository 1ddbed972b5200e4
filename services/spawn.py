"""spawn(8): run an external program per connection, as Postfix's spawn does.

The usual use is a policy server that speaks only standard input and output
(postfix-policyd-spf-python), run for smtpd's `check_policy_service`:

    # master.cf
    policyd-spf  unix  -  n  n  -  0  spawn
        user=policyd-spf argv=/usr/bin/policyd-spf
    # main.cf
    smtpd_recipient_restrictions = ..., check_policy_service unix:private/policyd-spf
    policyd-spf_time_limit = 3600

The master listens on the socket itself (a unix stream socket at
`$queue_directory/{private|public}/NAME`, or the address of an inet
service) and hands it over as descriptor 3; it starts another spawn process
when a client waits and none is free. Each process accepts one connection at
a time, and runs the command for it with the connection as the command's
standard input, output and error, as spawn(8) says.

Attributes (master.cf, after any -o options): `user=NAME` or
`user=NAME:GROUP` (required: the account the command runs as; root, group
id 0 and mail_owner are refused, a fatal error naming the service), then
`argv=COMMAND ARGS...` (required, last; run directly, never through a
shell). The command's environment is export_environment and nothing else
(the master already reduced this process's own to import_environment). It
is killed (SIGKILL, its whole process group) after $NAME_time_limit
(default $command_time_limit). An abnormal end is logged as spawn(8) logs
it: `warning: command PATH exit status N` / `killed by signal N`.

This process must run as root (master.cf unprivileged column `n`) to switch
to user=; run by a non-root master (`make run`) the command runs as that
user. max_use connections, max_idle seconds idle, or a reload end it after
the current connection, as any service (pymaster.master.service).

Interface:
    SpawnAttributes, SpawnConfigError
    parse_attributes(service, words, mail_owner, as_root) -> SpawnAttributes
    command_environment(export, environ) -> dict
    run_command(attrs, conn_fd, env, limit) -> int    exit code; -N: killed by signal N
    describe_exit(command, code) -> str | None        the warning; None for exit 0
    Spawner(attrs, env, limit).serve(conn, addr)      one connection
    pre_jail(svc) -> Spawner, run(svc)
    main()                                  the body of libexec/spawn
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from pymaster.master import service
from pymaster.util import log


class SpawnConfigError(Exception):
    """A master.cf spawn entry that cannot work: fatal, as in Postfix."""


@dataclass
class SpawnAttributes:
    """What a spawn service's master.cf entry says."""
    argv: list[str]
    user: str
    uid: int | None = None      # None: not root, the command runs as we do
    gid: int | None = None



def parse_attributes(service_name: str, words: list[str], mail_owner: str,
                     as_root: bool) -> SpawnAttributes:
    """parse_attributes - user= and argv= of SERVICE_NAME's master.cf WORDS."""
    user = None
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name == "argv" and eq:
            argv = [value, *words[i + 1:]]
            break
        if name != "user" or not eq:
            raise SpawnConfigError(f"{service_name}: unknown attribute name: {word}")
        user = value
    else:
        argv = []
    if not argv or not argv[0]:
        raise SpawnConfigError(f"{service_name}: missing argv= command-line attribute")
    if not user:
        raise SpawnConfigError(f"{service_name}: missing user= command-line attribute")
    uid, gid = resolve_user(service_name, user, mail_owner, as_root)
    return SpawnAttributes(argv, user, uid, gid)


def resolve_user(service_name: str, spec: str, mail_owner: str,
                 as_root: bool) -> tuple[int | None, int | None]:
    """resolve_user - (uid, gid) of `NAME[:GROUP]`; never root, group 0 or mail_owner.

    Not root, an account that does not exist is no error: the command runs
    as this process's own account anyway (the in-tree instance)."""
    name, _, group = spec.partition(":")
    if name == "root":
        raise SpawnConfigError(f"{service_name}: user= command-line attribute "
                               f"specifies root privileges")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        if as_root:
            raise SpawnConfigError(f"{service_name}: unknown user name: {name}") from None
        return None, None
    uid, gid = pw.pw_uid, pw.pw_gid
    if uid == 0:
        raise SpawnConfigError(f"{service_name}: user= command-line attribute "
                               f"specifies root privileges")
    if not as_root:
        return None, None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise SpawnConfigError(f"{service_name}: unknown group name: {group}") from None
    if gid == 0:
        raise SpawnConfigError(f"{service_name}: user= command-line attribute "
                               f"specifies privileged group id 0")
    if name == mail_owner:
        raise SpawnConfigError(f"{service_name}: user= command-line attribute "
                               f"specifies mail system owner {name}")
    return uid, gid


def command_environment(export: list[str], environ: dict[str, str]) -> dict[str, str]:
    """command_environment - the EXPORT names (`NAME` from ENVIRON, or `NAME=value`)."""
    env: dict[str, str] = {}
    for item in export:
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env


def run_command(attrs: SpawnAttributes, conn_fd: int, env: dict[str, str],
                limit: float) -> int:
    """run_command - the command on CONN_FD (stdin, stdout, stderr) until it ends
    or LIMIT seconds pass; its exit code (-N: killed by signal N).

    Raises OSError when the command cannot be started."""
    creds: dict = {}
    if attrs.uid is not None:
        creds = {"user": attrs.uid, "group": attrs.gid, "extra_groups": []}
    # A new session, so that the time limit ends the command's children too.
    proc = subprocess.Popen(attrs.argv, stdin=conn_fd, stdout=conn_fd, stderr=conn_fd,
                            env=env, close_fds=True, start_new_session=True, **creds)
    try:
        return proc.wait(timeout=limit if limit > 0 else None)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        return proc.wait()


def describe_exit(command: str, code: int) -> str | None:
    """describe_exit - spawn(8)'s warning for an abnormal end, None for exit 0."""
    if code < 0:
        return f"command {command} killed by signal {-code}"
    if code > 0:
        return f"command {command} exit status {code}"
    return None


class Spawner:
    """One spawn service: its attributes and limits, applied to each connection."""

    def __init__(self, attrs: SpawnAttributes, env: dict[str, str], limit: float) -> None:
        self.attrs = attrs
        self.env = env
        self.limit = limit

    def serve(self, conn: socket.socket, addr) -> None:
        """serve - run the command for one connection and report how it ended."""
        command = self.attrs.argv[0]
        try:
            code = run_command(self.attrs, conn.fileno(), self.env, self.limit)
        except OSError as e:
            log.warning(f"spawn_command: execvp {command}: {e.strerror}")
            return
        warning = describe_exit(command, code)
        if warning:
            log.warning(warning)


def pre_jail(svc: service.Service) -> Spawner:
    """pre_jail - the master.cf attributes read and the user= account looked up."""
    as_root = os.geteuid() == 0
    try:
        attrs = parse_attributes(svc.name, service.service_words(sys.argv[1:]),
                                 svc.cfg.get("mail_owner"), as_root)
    except SpawnConfigError as e:
        log.fatal(str(e))
    if as_root and svc.unpriv:
        # Dropped to mail_owner, this process could not become user= any more.
        log.fatal(f"{svc.name}: the spawn service must not be unprivileged "
                  f"(master.cf unprivileged column: n)")
    env = command_environment(svc.cfg.list("export_environment"), dict(os.environ))
    return Spawner(attrs, env, float(svc.cfg.time(f"{svc.name}_time_limit")))


def run(svc: service.Service) -> None:
    svc.serve_connections(svc.enter_jail(pre_jail).serve)


def main() -> None:
    service.main("spawn", run)
