"""local(8) command delivery: argv or shell, exit statuses, environment, mailbox_command."""

import pytest

from pymaster.mail import delivery
from services.local import LocalAgent, recipient
from services.local.command import command_argv, exit_outcome
from tests.support.local_helpers import (RecordingCleanup, fake_user, make_cfg, make_spool,
                                         queue_request)


@pytest.mark.parametrize("command,shell,argv", [
    ("/usr/bin/procmail -a foo", "", ["/usr/bin/procmail", "-a", "foo"]),
    ('/usr/bin/procmail -a "$EXTENSION"', "", ["/bin/sh", "-c", '/usr/bin/procmail -a "$EXTENSION"']),
    ("cat > /tmp/x", "", ["/bin/sh", "-c", "cat > /tmp/x"]),
    ("/usr/bin/foo", "/usr/sbin/smrsh", ["/usr/sbin/smrsh", "-c", "/usr/bin/foo"]),
])
def test_argv_only_uses_a_shell_for_shell_syntax(command, shell, argv):
    assert command_argv(command, shell) == argv


@pytest.mark.parametrize("status,output,kind,dsn,reason", [
    (0, "", "sent", "2.0.0", "delivered to command: cmd"),
    (75, "", "deferred", "4.3.0", "temporary failure"),
    (67, "no such", "bounced", "5.1.1", "user unknown. Command output: no such"),
    (1, "oops", "bounced", "5.3.0", 'Command died with status 1: "cmd". Command output: oops'),
    (-9, "", "deferred", "4.3.0", 'Command died with signal 9: "cmd"'),
    (None, "", "bounced", "5.3.0", 'Command time limit exceeded: "cmd"'),
])
def test_exit_status_meanings(status, output, kind, dsn, reason):
    o = exit_outcome(status, "cmd", output)
    assert (o.kind, o.dsn, o.reason) == (kind, dsn, reason)


@pytest.fixture
def alice(tmp_path, monkeypatch):
    make_spool(tmp_path, monkeypatch)
    home = tmp_path / "home" / "alice"
    home.mkdir(parents=True)
    monkeypatch.setattr(recipient, "lookup_user", {"alice": fake_user("alice", home)}.get)
    return home


def deliver(cfg, address):
    req = queue_request("sender@example.com", [(address, "")])
    agent = LocalAgent(cfg)
    agent.cleanup = RecordingCleanup()
    status = delivery.Status(req, cfg)
    agent.deliver(req, status)
    return status.results[0]


def test_mailbox_command_runs_in_home_with_user_environment(tmp_path, alice):
    # Not $-expanded by pymaster: $EXTENSION and $HOME are the shell's.
    cfg = make_cfg(tmp_path, recipient_delimiter="+",
                   mailbox_command='env > "$HOME/env"; pwd > "$HOME/pwd"; cat > "$HOME/msg"')
    r = deliver(cfg, "alice+box@mx.example.com")
    assert r["status"] == "sent"
    assert r["reason"].startswith('delivered to command: env > "$HOME/env"')
    env = dict(line.split("=", 1) for line in (alice / "env").read_text().splitlines() if "=" in line)
    assert env["HOME"] == str(alice)
    assert (env["USER"], env["LOGNAME"], env["SHELL"]) == ("alice", "alice", "/bin/sh")
    assert (env["LOCAL"], env["EXTENSION"]) == ("alice+box", "box")
    assert env["ORIGINAL_RECIPIENT"] == "alice+box@mx.example.com"
    assert (alice / "pwd").read_text().strip() == str(alice)
    assert (alice / "msg").read_bytes().startswith(b"From sender@example.com  ")


def test_command_time_limit_kills_and_bounces(tmp_path, alice):
    cfg = make_cfg(tmp_path, mailbox_command="sleep 30", command_time_limit="1s")
    r = deliver(cfg, "alice@mx.example.com")
    assert (r["status"], r["reason"]) == ("bounced", 'Command time limit exceeded: "sleep 30"')


def test_missing_program_bounces(tmp_path, alice):
    cfg = make_cfg(tmp_path, mailbox_command="/nonexistent/procmail")
    r = deliver(cfg, "alice@mx.example.com")
    assert r["status"] == "bounced"
    assert r["reason"].startswith('Command died with status 127: "/nonexistent/procmail"')
