"""Delivery to a command: `|command` destinations and mailbox_command.

The command gets the message on standard input, preceded by a `From sender
DATE` line, Return-Path:, X-Original-To: and (when prepend_delivered_header
lists "command") Delivered-To:, as local(8) hands it to procmail and friends.

How it is started: with local_command_shell set, always through that shell
(`SHELL -c COMMAND`); otherwise a command without shell metacharacters is
split on white space and executed directly, one with them goes to
`/bin/sh -c`. It runs as the account in force (never root: root's
deliveries use default_privs), in command_execution_directory or else the
account's home directory, with a clean environment: PATH, the names in
export_environment, and HOME, LOGNAME, USER, SHELL, SENDER, RECIPIENT,
LOCAL, DOMAIN, EXTENSION, ORIGINAL_RECIPIENT, ENVID, CLIENT_* and SASL_*.

Exit status: 0 is delivered; the sysexits.h codes mean what Postfix says
they mean (75 EX_TEMPFAIL defers, 67 EX_NOUSER bounces "user unknown" …);
any other status bounces `Command died with status N: "cmd"`. A command
still running after command_time_limit is killed and the mail bounces.

Interface:
    deliver_command(delivery, target, command) -> Outcome
    command_argv(command, shell) -> list[str]
    command_environment(delivery, target, privs) -> dict
    exit_outcome(status, command, output) -> Outcome
"""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
from typing import Any

from pymaster.mail.config import Config
from pymaster.mail.mailbox import envelope_headers, from_line
from pymaster.util.sysexits import SYS_EXITS
from services.local.context import Delivery, Outcome, Privs, Target, failed, sent

DEFAULT_PATH = "/usr/bin:/bin"
SHELL_METACHARACTERS = set("~&|;<>()$`'\"\\\n*?[]{}#=")
OUTPUT_LIMIT = 2048


def command_argv(command: str, shell: str = "") -> list[str]:
    """command_argv - how to execute COMMAND: directly, or through a shell."""
    if shell:
        return [*shell.split(), "-c", command]
    if SHELL_METACHARACTERS & set(command):
        return ["/bin/sh", "-c", command]
    return command.split()


def command_environment(delivery: Delivery, target: Target, privs: Privs) -> dict[str, str]:
    """command_environment - the environment local(8) gives a command."""
    cfg = delivery.cfg
    env = {"PATH": DEFAULT_PATH}
    for name in cfg.get("export_environment").split():
        name, eq, value = name.partition("=")
        if eq:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    attrs = delivery.message.attrs
    env.update({
        "HOME": privs.home, "LOGNAME": privs.logname, "USER": privs.logname,
        "SHELL": privs.shell, "SENDER": delivery.message.sender,
        "RECIPIENT": target.address, "LOCAL": target.local, "DOMAIN": target.domain,
        "EXTENSION": target.extension, "ORIGINAL_RECIPIENT": target.orig_address,
        "ENVID": attrs.get("envid", ""),
        "CLIENT_ADDRESS": attrs.get("client_address", ""),
        "CLIENT_HELO": attrs.get("helo_name", ""),
        "CLIENT_HOSTNAME": attrs.get("client_name", ""),
        "CLIENT_PROTOCOL": attrs.get("protocol", ""),
        "SASL_METHOD": attrs.get("sasl_method", ""),
        "SASL_SENDER": attrs.get("sasl_sender", ""),
        "SASL_USERNAME": attrs.get("sasl_username", ""),
    })
    return {k: _filtered(v, cfg) for k, v in env.items()}


def _filtered(value: str, cfg: Config) -> str:
    # Environment values may not hold NUL; newlines would confuse shell scripts.
    return value.replace("\0", "").replace("\n", " ")


def message_input(delivery: Delivery, target: Target) -> bytes:
    """message_input - what the command reads: From line, envelope headers, message."""
    msg = delivery.message
    delivered = "command" in [s.lower() for s in delivery.cfg.list("prepend_delivered_header")]
    prefix = envelope_headers(msg.sender, target.orig_address,
                              target.address if delivered else None)
    return from_line(msg.sender) + prefix + msg.content


def working_directory(cfg: Config, privs: Privs) -> str:
    """working_directory - command_execution_directory, else the home directory, else /."""
    wanted = cfg.get("command_execution_directory")
    for path in (wanted, privs.home, "/"):
        if path and os.path.isdir(path):
            return path
    return "/"


def run_command(argv: list[str], data: bytes, env: dict, cwd: str, privs: Privs,
                limit: float) -> tuple[int | None, str]:
    """run_command - (exit status or None on timeout, output) of ARGV fed DATA."""
    creds: dict[str, Any] = {}
    if os.geteuid() == 0 and privs.uid is not None:
        creds = {"user": privs.uid, "group": privs.gid, "extra_groups": []}
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=cwd,
                            start_new_session=True, **creds)
    try:
        out, _ = proc.communicate(data, timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return None, _text(out)
    return proc.returncode, _text(out)


def _text(out: bytes | None) -> str:
    text = (out or b"")[:OUTPUT_LIMIT].decode("utf-8", "replace")
    return " ".join(text.split())


def exit_outcome(status: int | None, command: str, output: str) -> Outcome:
    """exit_outcome - what an exit status means for the delivery."""
    detail = f". Command output: {output}" if output else ""
    if status == 0:
        return sent(f"delivered to command: {command}")
    if status is None:
        return failed("5.3.0", f'Command time limit exceeded: "{command}"{detail}')
    if status < 0:
        return failed("4.3.0", f'Command died with signal {-status}: "{command}"{detail}')
    if status in SYS_EXITS:
        dsn, text = SYS_EXITS[status]
        return failed(dsn, f"{text}{detail}")
    return failed("5.3.0", f'Command died with status {status}: "{command}"{detail}')


def deliver_command(delivery: Delivery, target: Target, command: str) -> Outcome:
    """deliver_command - pipe the message into COMMAND as the account in force."""
    cfg = delivery.cfg
    privs = (target.privs or Privs.current()).for_commands(cfg.get("default_privs"))
    argv = command_argv(command, cfg.get("local_command_shell"))
    if not argv:
        return failed("5.3.5", "mail system configuration error: empty command")
    if delivery.verify:
        return sent(f"delivers to command: {command}")
    try:
        status, output = run_command(argv, message_input(delivery, target),
                                     command_environment(delivery, target, privs),
                                     working_directory(cfg, privs), privs,
                                     cfg.time("command_time_limit"))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
            return failed("4.3.0", f"cannot execute command {command}: {e.strerror}")
        # The program does not exist: Postfix reports it like the shell's exit 127.
        return failed("5.3.0", f'Command died with status 127: "{command}". '
                      f"Command output: {shlex.quote(argv[0])}: {e.strerror}")
    return exit_outcome(status, command, output)
