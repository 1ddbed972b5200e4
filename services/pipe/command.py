"""Running a pipe(8) command, and what the way it ended means.

The command runs directly (no shell), as the user= account when this
process is root, in a new session (a time limit kills its whole group),
with PATH and the export_environment names as its environment. Its output
(stdout and stderr) is kept, the first part, on one line, for the reason.

Exit status: 0 delivered; output that starts with 4.x.x or 5.x.x decides
by itself; <sysexits.h> codes as pymaster.util.sysexits says (75 defers);
other statuses bounce `Command died with status N: "CMD"`; a signal
defers; past the time limit bounces. A command that cannot be started
defers, as Postfix's child process reporting `execvp` failing with 75.

Interface:
    CommandResult(status, output, error), Outcome(kind, dsn, reason)
    command_environment(cfg) -> dict
    run_command(argv, data, attrs, env, limit) -> CommandResult
    command_outcome(result, command, service_name) -> Outcome
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass

from pymaster.mail import delivery
from pymaster.mail.config import Config
from pymaster.util import sysexits

from .attributes import PipeAttributes

DEFAULT_PATH = "/usr/bin:/bin"
OUTPUT_LIMIT = 2048
DSN_RE = re.compile(r"([45])\.\d{1,3}\.\d{1,3}(?=\s|$)")
SENT, DEFERRED, BOUNCED = delivery.SENT, delivery.DEFERRED, delivery.BOUNCED


@dataclass
class CommandResult:
    """How a command ended: exit status, -signal, or None past the time limit."""
    status: int | None
    output: str = ""
    error: str = ""             # the command could not be started: why


@dataclass
class Outcome:
    kind: str
    dsn: str
    reason: str


def command_environment(cfg: Config) -> dict[str, str]:
    """command_environment - PATH and the export_environment names, nothing else."""
    env = {"PATH": DEFAULT_PATH}
    for item in cfg.list("export_environment"):
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def run_command(argv: list[str], data: bytes, attrs: PipeAttributes, env: dict[str, str],
                limit: float) -> CommandResult:
    """run_command - run ARGV with DATA on its input; how it ended and what it said."""
    creds: dict = {}
    if os.geteuid() == 0 and attrs.uid is not None:
        creds = {"user": attrs.uid, "group": attrs.gid, "extra_groups": []}
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env,
                                cwd=attrs.directory or None, start_new_session=True,
                                close_fds=True, **creds)
    except OSError as e:
        what = f"chdir {attrs.directory}" if attrs.directory and \
            e.filename == attrs.directory else f"execvp {argv[0]}"
        return CommandResult(sysexits.EX_TEMPFAIL,
                             error=f"pipe: fatal: pipe_command: {what}: {e.strerror}")
    try:
        out, _ = proc.communicate(data, timeout=limit if limit > 0 else None)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, _ = proc.communicate()
        return CommandResult(None, clean_output(out))
    return CommandResult(proc.returncode, clean_output(out))


def _kill_group(proc: subprocess.Popen) -> None:
    # The command may have children of its own (a shell script): all of them go.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def clean_output(out: bytes | None) -> str:
    """clean_output - the first part of the command's output, on one line."""
    text = (out or b"")[:OUTPUT_LIMIT].decode("utf-8", "replace")
    text = "".join(c if c.isprintable() or c.isspace() else "_" for c in text)
    return " ".join(text.split())


def command_outcome(result: CommandResult, command: str, service_name: str) -> Outcome:
    """command_outcome - what the way COMMAND ended means for its recipients."""
    output = result.error or result.output
    detail = f". Command output: {output}" if output else ""
    status = result.status
    if status == 0:
        return Outcome(SENT, "2.0.0", f"delivered via {service_name} service")
    if status is None:
        return Outcome(BOUNCED, "5.3.0", f'Command time limit exceeded: "{command}"{detail}')
    if status < 0:
        return Outcome(DEFERRED, "4.3.0", f'Command died with signal {-status}: '
                       f'"{command}"{detail}')
    m = DSN_RE.match(output)
    if m:
        text = output[m.end():].strip() or "command failed"
        return Outcome(DEFERRED if m.group(1) == "4" else BOUNCED, m.group(0), text)
    found = sysexits.detail(status)
    if found is not None:
        dsn, text = found
        return Outcome(DEFERRED if sysexits.is_soft(status) else BOUNCED, dsn,
                       f"{text}{detail}")
    return Outcome(BOUNCED, "5.3.0", f'Command died with status {status}: "{command}"{detail}')
