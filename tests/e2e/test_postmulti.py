"""postmulti end to end: a second instance on another loopback port.

The default instance lives in a temporary directory (named by MAIL_CONFIG for
postmulti, by -c for postfix); postmulti creates the second one beside it.
`postfix start` and `postfix stop` of the default instance go through
multi_instance_wrapper and so also reach the enabled second instance.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import uuid

from tests.support.instance import BIN, Instance, _alive, free_port, is_root
from tests.support.wait import poll


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def send(port: int, token: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("me@example.com", ["joe@localhost"],
                        f"Subject: {token}\n\n{token}\n")


def test_two_instances_start_deliver_and_stop(tmp_path):
    default = Instance(tmp_path / "default", main_cf={"data_directory":
                                                      str(tmp_path / "default" / "lib")})
    etc = default.config_dir
    out = tmp_path / "out"
    out_port = free_port()
    # The prototypes a new instance starts from: this test's own files.
    shutil.copy(etc / "main.cf", etc / "main.cf.proto")
    (etc / "master.cf.proto").write_text((etc / "master.cf").read_text().replace(
        f"127.0.0.1:{default.smtp_port}", f"127.0.0.1:{out_port}"))
    env = dict(os.environ, MAIL_CONFIG=str(etc), PATH=f"{BIN}:{os.environ['PATH']}")
    postmulti = [str(BIN / "postmulti")]
    assert run(postmulti + ["-e", "init"], env).returncode == 0
    made = run(postmulti + ["-I", "postfix-out", "-G", "test", "-e", "create",
                            f"config_directory={out / 'etc'}",
                            f"queue_directory={out / 'spool'}",
                            f"data_directory={out / 'lib'}",
                            f"maillog_file={out / 'maillog'}",
                            "master_service_disable="], env)
    assert made.returncode == 0, made.stderr
    for item in etc.iterdir():      # the lookup tables main.cf names
        if item.is_file() and not item.name.endswith((".cf", ".proto")):
            shutil.copy(item, out / "etc" / item.name)
    (out / "spool" / "mailboxes").mkdir()
    if is_root():
        os.chmod(out / "spool" / "mailboxes", 0o1777)
    listing = run(postmulti + ["-l"], env).stdout.splitlines()
    assert listing == [f"-               -               y         {etc}",
                       f"postfix-out     test            n         {out / 'etc'}"]

    # postfix start of the default instance: the second is disabled, so checked only.
    default._build_tables()
    default._make_mailbox_base()
    bare = {k: v for k, v in env.items() if k != "MAIL_CONFIG"}
    started = run([str(BIN / "postfix"), "-c", str(etc), "start"], bare)
    assert started.returncode == 0, started.stderr
    default.wait_for_port(default.smtp_port)
    out_pid = out / "spool" / "pid" / "master.pid"
    assert not out_pid.exists()
    try:
        assert run(postmulti + ["-i", "postfix-out", "-e", "enable"], env).returncode == 0
        started = run(postmulti + ["-i", "postfix-out", "-p", "start"], env)
        assert started.returncode == 0, started.stderr
        assert "postfix-out/postfix-script: starting the Postfix mail system" in started.stderr
        default.wait_for_port(out_port)

        for port, spool in ((default.smtp_port, default.queue_dir), (out_port, out / "spool")):
            token = uuid.uuid4().hex
            send(port, token)
            default.maildir_message_with(spool / "mailboxes" / "localhost" / "joe", token)
    finally:
        pids = [int(p.read_text().split()[0]) for p in (default.queue_dir / "pid" / "master.pid",
                                                       out_pid) if p.exists()]
        stopped = run([str(BIN / "postfix"), "-c", str(etc), "stop"], bare)
        poll(lambda: not any(_alive(pid) for pid in pids), timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert "postfix-out/postfix-script: stopping the Postfix mail system" in stopped.stderr
    assert len(pids) == 2 and not any(_alive(pid) for pid in pids)
