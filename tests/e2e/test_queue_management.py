"""Queue management end to end: the real master, cleanup, qmgr, agents,
bounce service, showq and smtpd, configured from main.cf as an administrator
would: defer_transports and flush, hold and release, soft_bounce, delay
warnings, corrupt queue files, queue_minfree, and showq's listing."""

from __future__ import annotations

import json
import os
import smtplib

from pymaster.util import ipc
from tests.e2e.test_qmgr import ECHO, SERVICES, TRANSPORT, queue_files, submit
from tests.support.instance import Instance
from tests.support.wait import wait_until

NOTICES = """\
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
showq     unix  n       -       n       -       -       showq
"""


def instance(tmp_path, **main_cf: str) -> Instance:
    settings = {"transport_maps": f"texthash:{tmp_path / 'etc' / 'transport'}",
                "myhostname": "mx.example.com", "mydestination": "",
                "queue_run_delay": "1s", "minimal_backoff_time": "1s",
                "maximal_backoff_time": "2s"}
    settings.update(main_cf)
    inst = Instance(tmp_path, main_cf=settings, master_cf="", start=False)
    (inst.config_dir / "transport").write_text(TRANSPORT)
    (inst.config_dir / "master.cf").write_text(
        f"127.0.0.1:{inst.smtp_port} inet n - n - 1 {ECHO}\n" + SERVICES + NOTICES)
    return inst


def wait_in_queue(inst: Instance, name: str, qid: str, timeout: float = 20) -> None:
    wait_until(lambda: qid in queue_files(inst, name), timeout, f"{qid} to reach {name}")


def test_defer_transports_hold_and_release(tmp_path):
    with instance(tmp_path, defer_transports="discard",
                  minimal_backoff_time="1h", maximal_backoff_time="2h").start() as inst:
        held = submit(inst, "a@discard.example")
        inst.wait_for_log(rf"{held}: to=<a@discard.example>.*status=deferred \(deferred transport\)")
        wait_in_queue(inst, "deferred", held)
        assert inst.command("postsuper", "-h", held).returncode == 0
        assert f"{held}!".encode() in inst.command("postqueue", "-p").stdout
        other = submit(inst, "b@discard.example")
        wait_in_queue(inst, "deferred", other)
        # A flush (sendmail -q) is what lets defer_transports deliver; hold stays.
        inst.command("postqueue", "-f")
        inst.wait_for_log(rf"{other}: removed")
        assert queue_files(inst, "hold") == [held]
        assert inst.command("postsuper", "-H", held).returncode == 0
        inst.command("postqueue", "-f")
        inst.wait_for_log(rf"{held}: to=<a@discard.example>.*status=sent")
        inst.wait_for_log(rf"{held}: removed")


def test_soft_bounce_keeps_the_mail(tmp_path):
    with instance(tmp_path, soft_bounce="yes").start() as inst:
        qid = submit(inst, "a@error.example")
        inst.wait_for_log(rf"{qid}: to=<a@error.example>.*dsn=4\.1\.1, status=deferred")
        assert "status=bounced" not in inst.log_text()
        assert "non-delivery notification" not in inst.log_text()


def test_a_delay_warning_goes_once(tmp_path):
    with instance(tmp_path, delay_warning_time="1s").start() as inst:
        qid = submit(inst, "a@retry.example")
        inst.wait_for_log(rf"{qid}: sender delay notification: \w+")
        inst.wait_for_log(rf"{qid}: to=<a@retry.example>.*status=deferred", count=3)
        assert inst.log_text().count(f"{qid}: sender delay notification") == 1


def test_corrupt_files_are_quarantined(tmp_path):
    with instance(tmp_path).start() as inst:
        good = submit(inst, "a@discard.example")
        path = inst.queue_dir / "incoming" / "4jcAAAAAAAzBC"
        path.write_bytes(b"C\x00\x00\x00\x2f" + b"1" * 20)         # truncated
        os.chmod(path, 0o700)
        spool = os.stat(path.parent)
        os.chown(path, spool.st_uid, spool.st_gid)        # written as cleanup would
        ipc.trigger(ipc.endpoint("public", "qmgr", str(inst.queue_dir)))
        inst.wait_for_log(r"warning: corrupt queue file active/4jcAAAAAAAzBC")
        assert queue_files(inst, "corrupt") == ["4jcAAAAAAAzBC"]
        second = submit(inst, "b@discard.example")
        inst.wait_for_log(rf"{second}: removed")
        assert good and inst.log_text().count("corrupt queue file active/4jcAAAAAAAzBC") == 1


def test_showq_lists_what_postqueue_lists(tmp_path):
    with instance(tmp_path, defer_transports="discard").start() as inst:
        qid = submit(inst, "a@discard.example")
        inst.wait_for_log(rf"{qid}: to=<a@discard.example>.*status=deferred")
        client = ipc.Client(ipc.endpoint("public", "showq", str(inst.queue_dir)))
        try:
            header, frames = client.call({"op": "list"}, timeout=20)
        finally:
            client.close()
        entries = [json.loads(line) for f in frames for line in bytes(f).splitlines()]
        assert header["status"] == "ok"
        assert [e["queue_id"] for e in entries] == [qid]
        direct = inst.command("postqueue", "-j").stdout
        assert json.loads(direct)["queue_id"] == qid


def test_queue_minfree_refuses_mail_before_the_disk_fills(tmp_path):
    st = os.statvfs(tmp_path)
    minfree = st.f_bavail * st.f_frsize * 2
    with Instance(tmp_path, main_cf={"queue_minfree": str(minfree)}) as inst:
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20) as smtp:
            smtp.ehlo("client.example")
            code, text = smtp.mail("a@example.com")
            assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        inst.wait_for_log(r"warning: not enough free space in mail queue")
