"""spawn(8): master.cf attributes (user= required, never root), the command's
environment, the time limit, and real commands on a real connection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pymaster.mail.params import service_params
from pymaster.master.service import service_words
from services.spawn import (SpawnAttributes, SpawnConfigError, command_environment,
                            describe_exit, parse_attributes, run_command)

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="switching to user= needs root")


def attrs_of(text: str, as_root: bool = True) -> SpawnAttributes:
    return parse_attributes("policy", text.split(), "postfix", as_root)


class TestMasterCfWords:
    def test_the_masters_options_go_the_commands_words_stay(self):
        argv = ["-n", "policy", "-t", "unix", "-o", "syslog_name=x", "-oa=b",
                "user=nobody", "argv=/usr/bin/policyd", "-v", "--", "-n", "x"]
        assert service_words(argv) == ["user=nobody", "argv=/usr/bin/policyd", "-v",
                                       "--", "-n", "x"]

    def test_user_and_argv(self):
        a = attrs_of("user=nobody argv=/usr/bin/policyd -v --debug")
        assert a.argv == ["/usr/bin/policyd", "-v", "--debug"]
        assert (a.user, a.uid, a.gid) == ("nobody", 65534, 65534)

    def test_a_group_replaces_the_users_group(self):
        a = attrs_of("user=nobody:nogroup argv=/bin/cat")
        assert (a.uid, a.gid) == (65534, 65534)

    def test_words_after_argv_belong_to_the_command(self):
        assert attrs_of("user=nobody argv=/bin/echo user=root argv=x").argv == \
            ["/bin/echo", "user=root", "argv=x"]

    @pytest.mark.parametrize("words,error", [
        ("argv=/bin/cat", "policy: missing user= command-line attribute"),
        ("user= argv=/bin/cat", "policy: missing user= command-line attribute"),
        ("user=nobody", "policy: missing argv= command-line attribute"),
        ("user=nobody argv=", "policy: missing argv= command-line attribute"),
        ("user=root argv=/bin/cat", "policy: user= command-line attribute specifies "
                                    "root privileges"),
        ("user=nobody:root argv=/bin/cat", "policy: user= command-line attribute specifies "
                                           "privileged group id 0"),
        ("user=postfix argv=/bin/cat", "policy: user= command-line attribute specifies "
                                       "mail system owner postfix"),
        ("user=no-such-user-here argv=/bin/cat", "policy: unknown user name: "
                                                 "no-such-user-here"),
        ("user=nobody:no-such-group argv=/bin/cat", "policy: unknown group name: "
                                                    "no-such-group"),
        ("flags=R user=nobody argv=/bin/cat", "policy: unknown attribute name: flags=R"),
        ("user=nobody stray argv=/bin/cat", "policy: unknown attribute name: stray"),
    ])
    def test_refused_as_root(self, words, error):
        with pytest.raises(SpawnConfigError) as e:
            attrs_of(words)
        assert str(e.value) == error

    def test_root_is_refused_even_without_root_privileges(self):
        with pytest.raises(SpawnConfigError, match="specifies root privileges"):
            attrs_of("user=root argv=/bin/cat", as_root=False)

    def test_without_root_the_command_runs_as_this_process(self):
        a = attrs_of("user=no-such-user-here argv=/bin/cat", as_root=False)
        assert (a.uid, a.gid) == (None, None)
        assert attrs_of("user=nobody argv=/bin/cat", as_root=False).uid is None


class TestEnvironment:
    def test_only_exported_names_with_their_values(self):
        environ = {"TZ": "UTC", "MAIL_CONFIG": "/etc/postfix", "SECRET": "x",
                   "PATH": "/usr/bin"}
        env = command_environment(["TZ", "MAIL_CONFIG", "LANG", "FOO=bar baz"], environ)
        assert env == {"TZ": "UTC", "MAIL_CONFIG": "/etc/postfix", "FOO": "bar baz"}

    def test_nothing_exported_is_an_empty_environment(self):
        assert command_environment([], {"HOME": "/root"}) == {}


class TestParameters:
    def test_a_spawn_service_brings_its_time_limit(self):
        params = service_params("policyd-spf", "spawn")
        assert [(p.name, p.default) for p in params] == \
            [("policyd-spf_time_limit", "$command_time_limit")]


def talk(attrs: SpawnAttributes, env: dict, limit: float, data: bytes) -> tuple[int, bytes]:
    """talk - run the command on one end of a socket pair; its code and all it said."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(data)
        ours.shutdown(socket.SHUT_WR)
        code = run_command(attrs, theirs.fileno(), env, limit)
        theirs.close()
        out = b""
        while chunk := ours.recv(65536):
            out += chunk
    return code, out


class TestRunCommand:
    def test_the_connection_is_standard_input_output_and_error(self):
        script = "read x; echo \"out $x\"; echo \"err $x\" >&2"
        attrs = SpawnAttributes(["/bin/sh", "-c", script], "nobody")
        code, out = talk(attrs, {}, 10, b"hello\n")
        assert code == 0
        assert out == b"out hello\nerr hello\n"

    def test_the_environment_is_exactly_what_was_exported(self):
        attrs = SpawnAttributes(["/usr/bin/env"], "nobody")
        code, out = talk(attrs, {"TZ": "UTC", "LANG": "C"}, 10, b"")
        assert code == 0
        assert sorted(out.decode().splitlines()) == ["LANG=C", "TZ=UTC"]

    def test_arguments_are_never_seen_by_a_shell(self):
        attrs = SpawnAttributes(["/bin/echo", "$HOME; `id`", "*"], "nobody")
        assert talk(attrs, {"HOME": "/x"}, 10, b"")[1] == b"$HOME; `id` *\n"

    @needs_root
    def test_the_command_runs_as_user(self):
        attrs = attrs_of("user=nobody argv=/bin/sh -c")
        attrs.argv.append("id -u; id -g; id -G")
        code, out = talk(attrs, {}, 10, b"")
        assert code == 0
        assert out.split() == [b"65534", b"65534", b"65534"]

    def test_past_the_time_limit_the_command_and_its_children_are_killed(self):
        # The shell waits for its child: both must go, or the connection stays open.
        attrs = SpawnAttributes(["/bin/sh", "-c", "sleep 60; echo late"], "nobody")
        code, out = talk(attrs, {}, 0.5, b"")
        assert code == -9
        assert out == b""

    def test_no_descriptor_but_the_connection_reaches_the_command(self):
        # The master hands the listening socket over as an inheritable
        # descriptor 3: a policy program must never get it (nor anything else).
        listener = socket.create_server(("127.0.0.1", 0))
        extra = os.open("/dev/null", os.O_RDONLY)
        os.set_inheritable(listener.fileno(), True)
        os.set_inheritable(extra, True)
        try:
            attrs = SpawnAttributes(["/bin/sh", "-c", "ls /proc/$$/fd"], "nobody")
            code, out = talk(attrs, {}, 10, b"")
        finally:
            listener.close()
            os.close(extra)
        assert code == 0 and out.split() == [b"0", b"1", b"2"]

    def test_the_command_gets_no_shell_even_for_a_command_with_shell_syntax(self):
        attrs = SpawnAttributes(["/bin/echo hi; id"], "nobody")
        with pytest.raises(OSError):
            talk(attrs, {}, 10, b"")

    def test_a_missing_command_cannot_start(self):
        attrs = SpawnAttributes(["/nonexistent/policyd"], "nobody")
        with pytest.raises(OSError):
            talk(attrs, {}, 10, b"")


class TestExitWarnings:
    @pytest.mark.parametrize("code,warning", [
        (0, None),
        (1, "command /usr/bin/policyd exit status 1"),
        (75, "command /usr/bin/policyd exit status 75"),
        (-9, "command /usr/bin/policyd killed by signal 9"),
    ])
    def test_spawn_8_wording(self, code, warning):
        assert describe_exit("/usr/bin/policyd", code) == warning


class TestProgram:
    def run_spawn(self, tmp_path, *args: str) -> subprocess.CompletedProcess:
        (tmp_path / "main.cf").write_text(f"queue_directory = {tmp_path}\n"
                                          f"maillog_file = /dev/stderr\n"
                                          f"mail_owner = postfix\n")
        env = dict(os.environ, MAIL_CONFIG=str(tmp_path))
        return subprocess.run([sys.executable, "-c", "from services.spawn import main; main()",
                               "-n", "policy", "-t", "unix", *args],
                              env=env, capture_output=True, timeout=30,
                              cwd=os.path.dirname(os.path.dirname(__file__)))

    def test_a_bad_entry_is_a_fatal_error_naming_the_service(self, tmp_path):
        done = self.run_spawn(tmp_path, "argv=/bin/cat")
        assert done.returncode != 0
        assert b"fatal: policy: missing user= command-line attribute" in done.stderr
        assert b"Traceback" not in done.stderr

    @needs_root
    def test_an_unprivileged_spawn_service_is_refused(self, tmp_path):
        done = self.run_spawn(tmp_path, "-u", "user=nobody", "argv=/bin/cat")
        assert done.returncode != 0
        assert b"fatal: policy: the spawn service must not be unprivileged" in done.stderr
