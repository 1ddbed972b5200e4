"""Policy delegation against the real smtpd: Debian's postgrey greylists a first
attempt with a 450 and accepts the retry after its delay."""

import os
import shutil
import smtplib
import subprocess
import time

import pytest

from tests.support.instance import Instance, _open_path_for_others, free_port, is_root, listening
from tests.support.wait import poll

POSTGREY = shutil.which("postgrey") or ("/usr/sbin/postgrey"
                                        if os.path.exists("/usr/sbin/postgrey") else None)


@pytest.fixture(scope="module")
def postgrey(tmp_path_factory):
    if POSTGREY is None:
        pytest.skip("postgrey is not installed (make deb-packages)")
    dbdir = tmp_path_factory.mktemp("postgrey")
    port = free_port()
    args = [POSTGREY, f"--inet=127.0.0.1:{port}", "--delay=1", f"--dbdir={dbdir}"]
    if is_root():
        # postgrey drops to its own user, which must reach its database directory.
        _open_path_for_others(dbdir)
        if _has_user("postgrey"):
            shutil.chown(dbdir, "postgrey")
        args.append("--user=postgrey" if _has_user("postgrey") else "--user=root")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def up() -> bool:
        if listening("127.0.0.1", port):
            return True
        if proc.poll() is not None:
            pytest.skip(f"postgrey did not start: {proc.stderr.read().decode()[-500:]}")
        return False
    poll(up, timeout=20, interval=0.1)
    yield port
    proc.terminate()
    proc.wait(10)


def _has_user(name: str) -> bool:
    import pwd
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def inst(tmp_path_factory, postgrey):
    with Instance(tmp_path_factory.mktemp("policy"), main_cf={
            "myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
            "smtpd_recipient_restrictions": f"check_policy_service inet:127.0.0.1:{postgrey}",
    }) as inst:
        yield inst


def attempt(inst: Instance) -> tuple[int, bytes]:
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    s.docmd("MAIL", "FROM:<sender@example.net>")
    reply = s.docmd("RCPT", "TO:<root@mx.example.com>")
    s.quit()
    return reply


def test_postgrey_greylists_then_accepts(inst):
    code, text = attempt(inst)
    assert code == 450, text
    assert text.startswith(b"4.2.0 <root@mx.example.com>: Recipient address rejected: Greylisted")
    inst.wait_for_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 450 4\.2\.0 "
                      r"<root@mx\.example\.com>: Recipient address rejected: Greylisted")
    deadline = time.monotonic() + 20
    while True:
        time.sleep(1.2)
        code, text = attempt(inst)
        if code == 250 or time.monotonic() > deadline:
            break
    assert code == 250, text
