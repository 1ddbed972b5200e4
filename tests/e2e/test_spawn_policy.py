"""spawn(8) end to end: a policy server that speaks only standard input and
output, run per connection by a master.cf spawn service as nobody, and asked
by the real smtpd through `check_policy_service unix:private/NAME`."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support.instance import ROOT, Instance, free_port

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="spawn runs its command as user=: needs root"),
    pytest.mark.skipif(not (ROOT / "libexec" / "spawn").exists(), reason="needs libexec/spawn"),
]

POLICY = "policy"


def policy_script(out: Path) -> str:
    """policy_script - SMTPD_POLICY_README's protocol in sh: refuse x@y, pass the rest.

    Each run (one policy connection) records its uid and, after each
    request, how many it has answered, in OUT/*.PID."""
    return textwrap.dedent(f"""\
        #!/bin/sh
        id -u > {out}/uid.$$
        n=0
        rcpt=
        while IFS= read -r line; do
            case "$line" in
            recipient=*) rcpt="${{line#recipient=}}" ;;
            "")
                n=$((n + 1))
                echo $n > {out}/requests.$$
                if [ "$rcpt" = "x@y" ]; then
                    printf 'action=REJECT not today\\n\\n'
                else
                    printf 'action=DUNNO\\n\\n'
                fi
                rcpt= ;;
            esac
        done
        """)


@pytest.fixture(scope="module")
def tmp():
    """tmp - a directory nobody can reach (pytest's own base is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pymaster-spawn-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def out(tmp):
    """out - where the policy program (running as nobody) writes what it saw."""
    path = tmp / "out"
    path.mkdir()
    path.chmod(0o777)
    return path


@pytest.fixture(scope="module")
def echo_port():
    return free_port()


@pytest.fixture(scope="module")
def inst(tmp, out, echo_port):
    program = tmp / "policy.sh"
    program.write_text(policy_script(out))
    program.chmod(0o755)
    parent = tmp / "parent.sh"
    parent.write_text("#!/bin/sh\necho $PPID\n")
    parent.chmod(0o755)
    with Instance(tmp / "instance", main_cf={
            "smtpd_recipient_restrictions": f"check_policy_service unix:private/{POLICY}",
            f"{POLICY}_time_limit": "3600",
    }, master_cf_extra=(f"{POLICY} unix - n n - 0 spawn\n"
                        f"    user=nobody argv={program}\n"
                        f"rootpolicy unix - n n - 0 spawn\n"
                        f"    user=root argv={program}\n"
                        f"failing unix - n n - 0 spawn\n"
                        f"    user=nobody argv=/bin/false\n"
                        f"127.0.0.1:{echo_port} inet n n n - 0 spawn\n"
                        f"    user=nobody argv=/bin/cat\n"
                        f"oneshot unix - n n - 0 spawn -o max_use=1\n"
                        f"    user=nobody argv={parent}\n")) as inst:
        yield inst


def runs(out: Path, kind: str) -> dict[str, str]:
    """runs - OUT/KIND.PID contents by PID: one entry per policy connection."""
    return {p.suffix: p.read_text().strip() for p in out.glob(f"{kind}.*")}


def clear(out: Path) -> None:
    for p in out.iterdir():
        p.unlink()


class TestPolicyService:
    def test_one_recipient_refused_another_delivered_over_one_policy_connection(
            self, inst, out):
        clear(out)
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.ehlo("client.example")
            assert s.mail("sender@example.net")[0] == 250
            assert s.rcpt("x@y") == \
                (554, b"5.7.1 <x@y>: Recipient address rejected: not today")
            assert s.rcpt("client@localhost")[0] == 250
            assert s.rcpt("x@y")[0] == 554
            assert s.data(b"Subject: spawn\r\n\r\npolicy passed\r\n")[0] == 250
        inst.wait_for_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 "
                          r"<x@y>: Recipient address rejected: not today; "
                          r"from=<sender@example\.net> to=<x@y>")
        inst.wait_for_log(r"to=<client@localhost>, .*status=sent")
        inst.maildir_message_with(inst.mailbox_dir / "localhost" / "client", "policy passed")
        # smtpd kept its policy connection: one run of the program answered all three.
        assert list(runs(out, "requests").values()) == ["3"]
        assert list(runs(out, "uid").values()) == [str(65534)]

    def test_the_socket_is_a_plain_unix_socket_in_private(self, inst):
        path = inst.queue_dir / "private" / POLICY
        assert path.is_socket()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.connect(str(path))
            s.sendall(b"request=smtpd_access_policy\nrecipient=x@y\n\n")
            answer = b""
            while not answer.endswith(b"\n\n"):
                chunk = s.recv(4096)
                assert chunk, answer
                answer += chunk
        assert answer == b"action=REJECT not today\n\n"

    def test_reload_keeps_the_socket_working(self, inst, out):
        path = inst.queue_dir / "private" / POLICY
        before = path.stat().st_ino
        assert inst.postfix("reload").returncode == 0
        inst.wait_for_log(r"reload -- version")
        assert path.stat().st_ino == before
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.ehlo("client.example")
            s.mail("sender@example.net")
            assert s.rcpt("x@y")[0] == 554
            assert s.rcpt("client@localhost")[0] == 250

    def test_user_root_is_a_fatal_error_naming_the_service(self, inst):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(inst.queue_dir / "private" / "rootpolicy"))
            inst.wait_for_log(r"fatal: rootpolicy: user= command-line attribute "
                              r"specifies root privileges")

    def test_a_failing_command_is_logged_with_its_exit_status(self, inst):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(inst.queue_dir / "private" / "failing"))
            inst.wait_for_log(r"postfix/spawn\[\d+\]: warning: command /bin/false "
                              r"exit status 1")


    def test_an_inet_spawn_service_serves_a_tcp_port(self, inst, echo_port):
        inst.wait_for_port(echo_port)
        with socket.create_connection(("127.0.0.1", echo_port), timeout=20) as s:
            s.sendall(b"echo me\n")
            s.shutdown(socket.SHUT_WR)
            assert s.makefile("rb").read() == b"echo me\n"


    def test_max_use_ends_a_spawn_process_after_that_many_connections(self, inst):
        def spawn_pid() -> str:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(20)
                s.connect(str(inst.queue_dir / "private" / "oneshot"))
                return s.makefile("rb").read().decode().strip()
        first, second = spawn_pid(), spawn_pid()
        assert first.isdigit() and second.isdigit()
        assert first != second


class TestCheck:
    def test_postfix_check_accepts_spawn_services_and_their_time_limit(self, inst):
        done = inst.postfix("check")
        said = (done.stdout + done.stderr).decode()
        assert "libexec/spawn" not in said
        assert f"{POLICY}_time_limit" not in said
