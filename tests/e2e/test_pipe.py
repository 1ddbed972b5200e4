"""pipe(8) end to end: master.cf pipe services, transport_maps, real commands.

The autoreply set-up of the seed: mail to info@ora.com is aliased
(virtual_alias_maps) to autoresp@ora.com, which transport_maps sends to the
`inforeply` pipe service; its program answers the sender, and the answer
lands in the sender's Maildir under the in-tree virtual domain localhost.

How the programs put mail back: pymaster's own `sendmail` when they can run
it; as root they run as nobody, who cannot reach the virtualenv's Python
(it lives under /root), so they submit over SMTP with swaks instead.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.support.instance import BIN, ROOT, Instance

pytestmark = pytest.mark.skipif(
    not (ROOT / "libexec" / "pipe").exists() or not (ROOT / "libexec" / "virtual").exists(),
    reason="needs the pipe and virtual services")

AS_ROOT = os.geteuid() == 0
PIPE_USER = "nobody"


@pytest.fixture
def tmp():
    """tmp - a directory the unprivileged services and programs can always reach.

    Not pytest's tmp: every pytest run on the machine makes
    /tmp/pytest-of-USER mode 0700 again, which locks out nobody and postfix."""
    path = Path(tempfile.mkdtemp(prefix="pymaster-pipe-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def write_script(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    path.chmod(0o755)
    return path


def reinject_script(tmp: Path, smtp_port: int) -> Path:
    """reinject_script - `reinject -f SENDER -- RCPT...` with the message on stdin."""
    if not AS_ROOT:
        return write_script(tmp / "reinject", f"""\
            #!/bin/sh
            exec {BIN / 'sendmail'} -G -i "$@"
            """)
    swaks = "/usr/bin/swaks"
    if not os.path.exists(swaks):
        pytest.skip("as root the pipe user needs swaks to submit mail")
    return write_script(tmp / "reinject", f"""\
        #!/bin/sh
        # reinject -f SENDER -- RCPT...: the same, over SMTP.
        [ "$1" = -f ] && {{ sender="$2"; shift 2; }}
        [ "$1" = -- ] && shift
        to=$(echo "$@" | tr ' ' ',')
        exec {swaks} --silent 2 --server 127.0.0.1 --port {smtp_port} \\
            --from "$sender" --to "$to" --data -
        """)


def outdir(tmp: Path) -> Path:
    """outdir - where the programs (running as nobody) write what they saw."""
    out = tmp / "out"
    out.mkdir()
    out.chmod(0o777)
    return out


def send(inst: Instance, sender: str, rcpts: list[str], body: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


class TestAutoreply:
    def test_info_mail_is_answered_through_the_pipe_service(self, tmp):
        out = outdir(tmp)
        inst = Instance(tmp, start=False, main_cf={
            "virtual_alias_maps": "inline:{ info@ora.com=autoresp@ora.com }",
            "transport_maps": "inline:{ autoresp@ora.com=inforeply: }"})
        reinject = reinject_script(tmp, inst.smtp_port)
        program = write_script(tmp / "inforeply", f"""\
            #!/bin/sh
            # inforeply SENDER: thank whoever wrote to info@ora.com
            cat > {out}/request
            printf 'From: info@ora.com\\nTo: %s\\nSubject: Re: your mail\\n\\nThank you.\\n' "$1" |
                {reinject} -f autoresp@ora.com -- "$1"
            """)
        inst._master_cf_extra = (f"inforeply unix - n n - - pipe\n"
                                 f"  flags=F user={PIPE_USER} argv={program} ${{sender}}\n")
        inst.write_config()
        with inst.start():
            send(inst, "client@localhost", ["info@ora.com"],
                 "Subject: information please\n\nWhat do you sell?\n")
            line = inst.wait_for_log(r"to=<autoresp@ora\.com>, orig_to=<info@ora\.com>, "
                                     r"relay=inforeply, .*status=sent \(delivered via "
                                     r"inforeply service\)")
            assert "dsn=2.0.0" in line.group(0)
            reply = inst.maildir_messages(inst.mailbox_dir / "localhost" / "client")[0]
        assert b"Subject: Re: your mail" in reply and b"Thank you." in reply
        request = (out / "request").read_bytes()
        assert request.startswith(b"From client@localhost  ")
        assert b"Subject: information please" in request


class TestArguments:
    def test_a_hostile_recipient_is_one_literal_argument(self, tmp):
        out = outdir(tmp)
        trap = tmp / "pwned"
        program = write_script(tmp / "argvrec", f"""\
            #!/bin/sh
            printf '%s\\0' "$@" > {out}/argv
            cat > /dev/null
            """)
        hostile = f"x;touch {trap}"
        inst = Instance(tmp, main_cf={"transport_maps": "inline:{ dom.example=argvrec: }"},
                        master_cf_extra=(f"argvrec unix - n n - - pipe\n"
                                         f"  user={PIPE_USER} argv={program} -f $sender "
                                         f"-- ${{recipient}} ${{nexthop}}\n"))
        with inst:
            send(inst, "client@localhost", [f'"{hostile}"@dom.example'], "Subject: x\n\nx\n")
            inst.wait_for_log(r"relay=argvrec, .*status=sent")
        argv = (out / "argv").read_bytes().decode().split("\0")[:-1]
        assert argv == ["-f", "client@localhost", "--", f"{hostile}@dom.example", "dom.example"]
        assert not trap.exists()

    def test_a_failing_command_bounces_with_its_status(self, tmp):
        program = write_script(tmp / "nouser", """\
            #!/bin/sh
            cat > /dev/null
            echo "no such mailbox here"
            exit 67
            """)
        inst = Instance(tmp, main_cf={"transport_maps": "inline:{ dom.example=nouser: }"},
                        master_cf_extra=(f"nouser unix - n n - - pipe\n"
                                         f"  user={PIPE_USER} argv={program}\n"))
        with inst:
            send(inst, "client@localhost", ["someone@dom.example"], "Subject: x\n\nx\n")
            inst.wait_for_log(r"to=<someone@dom\.example>, relay=nouser, .*dsn=5\.1\.1, "
                              r"status=bounced \(user unknown\. Command output: "
                              r"no such mailbox here\)")
