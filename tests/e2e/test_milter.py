"""Milters end to end: smtpd_milters with the real master, a real OpenDKIM
(Debian's opendkim) and a scripted milter peer (tests/support/milterpeer.py).

    OpenDKIM signs          -> the delivered message carries DKIM-Signature: d=example.com
    a milter rejects at EOM -> the client gets the 5xx at the end of DATA, nothing is queued
    a milter rejects at CONNECT -> every command but QUIT gets its reply, nothing is queued
    a milter tempfails one RCPT -> that recipient gets 451, the other is delivered
    a milter adds a header  -> on the same milter session that saw the SMTP events
    no milter listening     -> 451 4.7.1 (milter_default_action = tempfail) from the
                               first command; the retry, once the milter is up, is delivered
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import subprocess

import pytest

from tests.e2e.test_cleanup import virtual_settings
from tests.support import milterpeer as peer
from tests.support.instance import ROOT, Instance, free_port, listening
from tests.support.milterpeer import ScriptedMilter
from tests.support.wait import poll

pytestmark = pytest.mark.skipif(not (ROOT / "libexec" / "smtpd").exists(),
                                reason="needs the smtpd service")

OPENDKIM = "/usr/sbin/opendkim"
GENKEY = shutil.which("opendkim-genkey") or "/usr/sbin/opendkim-genkey"
MESSAGE = ("From: a@example.com\r\nTo: user@v.example\r\nSubject: milter {tag}\r\n"
           "Message-ID: <{tag}@example.com>\r\n\r\nhello {tag}\r\n")


def queued_files(inst: Instance) -> list[str]:
    """queued_files - every message file in the queues that hold mail."""
    found = []
    for name in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _, _, files in os.walk(inst.queue_dir / name):
            found += files
    return found


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"opendkim exited with {proc.returncode}")
        return listening("127.0.0.1", port)
    if not poll(up, timeout):
        raise RuntimeError(f"opendkim does not listen on {port}")


@pytest.fixture
def opendkim(tmp_path):
    """opendkim - Debian's OpenDKIM signing for example.com on a free port; its port."""
    if not os.path.exists(OPENDKIM) or not os.path.exists(GENKEY):
        pytest.skip("needs Debian's opendkim and opendkim-tools")
    keys = tmp_path / "dkim"
    keys.mkdir()
    subprocess.run([GENKEY, "-D", str(keys), "-d", "example.com", "-s", "test"], check=True)
    port = free_port()
    conf = keys / "opendkim.conf"
    conf.write_text(f"Mode s\nSocket inet:{port}@127.0.0.1\nDomain example.com\n"
                    f"Selector test\nKeyFile {keys}/test.private\nPidFile {keys}/opendkim.pid\n"
                    "Syslog no\nRequireSafeKeys false\n")
    proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc)
        yield port
    finally:
        proc.terminate()            # our own process only
        proc.wait(timeout=10)


def instance(tmp_path, **settings) -> Instance:
    return Instance(tmp_path, main_cf={**virtual_settings(tmp_path), **settings})


def send(inst: Instance, tag: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("a@example.com", ["user@v.example"], MESSAGE.format(tag=tag))


def test_opendkim_signs_mail_from_smtpd(tmp_path, opendkim):
    with instance(tmp_path, smtpd_milters=f"inet:127.0.0.1:{opendkim}") as inst:
        send(inst, "dkim")
        inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<user@v\.example>.*status=sent")
        text = inst.maildir_message_with(inst.mailbox_dir / "user", "hello dkim")
    head = text.partition("\n\n")[0]
    assert "DKIM-Signature: v=1;" in head
    assert "d=example.com" in head and "s=test" in head


def test_milter_reject_answers_data_and_queues_nothing(tmp_path):
    script = {b"E": [peer.replycode("554 5.7.1 Rejected by the test milter")]}
    with ScriptedMilter(script=script) as m, instance(tmp_path, smtpd_milters=m.name) as inst:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(inst, "reject")
        inst.wait_for_log(r"cleanup\[\d+\]: \w+: milter-reject: END-OF-MESSAGE from "
                          r"\S+\[127\.0\.0\.1\]: 5\.7\.1 Rejected by the test milter; "
                          r"from=<a@example\.com> to=<user@v\.example> proto=ESMTP helo=<")
        assert queued_files(inst) == []
    assert refused.value.smtp_code == 554         # the milter's own code
    assert refused.value.smtp_error.decode() == "5.7.1 Rejected by the test milter"


def test_unreachable_milter_defers_and_the_retry_is_delivered(tmp_path):
    port = free_port()
    with instance(tmp_path, smtpd_milters=f"inet:127.0.0.1:{port}") as inst:
        with pytest.raises(smtplib.SMTPHeloError) as deferred:
            send(inst, "retry")
        assert (deferred.value.smtp_code, deferred.value.smtp_error.decode()) == \
            (451, "4.7.1 Service unavailable - try again later")
        inst.wait_for_log(rf"warning: connect to Milter service inet:127\.0\.0\.1:{port}: ")
        assert queued_files(inst) == []
        with ScriptedMilter(port=port):
            send(inst, "retry")
            inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<user@v\.example>.*status=sent")
        assert "hello retry" in inst.maildir_message_with(inst.mailbox_dir / "user", "hello retry")


def test_reject_at_connect_refuses_every_command_but_quit(tmp_path):
    script = {b"C": [peer.replycode("554 5.7.1 Go away, bad client")]}
    refusal = (554, b"5.7.1 Go away, bad client")
    with ScriptedMilter(script=script) as m, instance(tmp_path, smtpd_milters=m.name) as inst:
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            assert s.ehlo() == refusal
            assert s.docmd("MAIL FROM:<a@example.com>") == refusal
            assert s.docmd("RCPT TO:<user@v.example>") == refusal
            assert s.docmd("DATA") == refusal
            assert s.docmd("QUIT")[0] == 221
        inst.wait_for_log(r"smtpd\[\d+\]: NOQUEUE: milter-reject: CONNECT from \S+"
                          r"\[127\.0\.0\.1\]: 554 5\.7\.1 Go away, bad client; proto=SMTP$")
        inst.wait_for_log(r"smtpd\[\d+\]: disconnect from .* commands=1/5$")
        assert queued_files(inst) == []
    assert m.commands().count(b"M") == 0


def test_tempfail_at_rcpt_refuses_that_recipient_only(tmp_path):
    def rcpt(data: bytes) -> list[bytes]:
        if b"other@" in data:
            return [peer.replycode("451 4.7.1 Greylisted, come back later")]
        return [peer.reply(b"c")]
    with ScriptedMilter(script={b"R": rcpt}) as m, \
            instance(tmp_path, smtpd_milters=m.name) as inst:
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            refused = s.sendmail("a@example.com", ["other@v.example", "user@v.example"],
                                 MESSAGE.format(tag="grey"))
        assert refused == {"other@v.example": (451, b"4.7.1 Greylisted, come back later")}
        inst.wait_for_log(r"smtpd\[\d+\]: NOQUEUE: milter-reject: RCPT from \S+\[127\.0\.0\.1\]: "
                          r"451 4\.7\.1 Greylisted, come back later; from=<a@example\.com> "
                          r"to=<other@v\.example> proto=ESMTP helo=<\S+>$")
        inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<user@v\.example>.*status=sent")
        assert "hello grey" in inst.maildir_message_with(inst.mailbox_dir / "user", "hello grey")
        assert not (inst.mailbox_dir / "other").exists()


def test_header_added_at_eom_on_the_session_that_saw_the_smtp_events(tmp_path):
    script = {b"E": [peer.add_header("X-Milter", "seen by the test"), peer.reply(b"c")]}
    with ScriptedMilter(script=script) as m, instance(tmp_path, smtpd_milters=m.name) as inst:
        send(inst, "edit")
        inst.wait_for_log(r"postfix/virtual\[\d+\]: \w+: to=<user@v\.example>.*status=sent")
        text = inst.maildir_message_with(inst.mailbox_dir / "user", "hello edit")
        m.wait_until(lambda: any(got[-1:] == [b"Q"] for got in m.sessions if b"M" in got))
    assert "\nX-Milter: seen by the test\n" in text.partition("\n\n")[0] + "\n"
    # The client's session (not the instance's start-up probe) saw every event, in order.
    [events] = [[c for c in got if c != b"D"] for got in m.sessions if b"M" in got]
    assert events == [b"O", b"C", b"H", b"M", b"R", b"T"] + [b"L"] * 5 + \
        [b"N", b"B", b"E", b"Q"]


def test_master_cf_override_sets_the_milters_of_that_smtpd(tmp_path):
    script = {b"R": [peer.replycode("550 5.7.1 Not via this port")]}
    with ScriptedMilter(script=script) as m:
        inst = Instance(tmp_path, main_cf=virtual_settings(tmp_path), start=False)
        master_cf = inst.config_dir / "master.cf"
        text, found = re.subn(rf"(?m)^(127\.0\.0\.1:{inst.smtp_port}\s.*smtpd)$",
                              rf"\1\n  -o smtpd_milters={m.name}", master_cf.read_text())
        assert found == 1
        master_cf.write_text(text)
        with inst:
            inst.start()
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                send(inst, "override")
            inst.wait_for_log(r"NOQUEUE: milter-reject: RCPT from \S+: 550 5\.7\.1 Not via this port;")
