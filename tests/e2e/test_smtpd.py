"""smtpd end to end: real master, real smtpd, cleanup, qmgr and delivery.

One instance serves the module. Its master.cf has a second smtpd on another
port with test overrides (a short smtpd_timeout, mynetworks without the
loopback so relay control applies), the way an administrator would add a
submission-style service.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess

import psutil
import pytest

from tests.support import smtpclient
from tests.support.instance import Instance, free_port
from tests.support.wait import poll, wait_until

HOST = "mx.example.com"


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smtpd")
    strict_port = free_port()
    extra = (f"127.0.0.1:{strict_port} inet n - n - - smtpd\n"
             "  -o smtpd_timeout=2s\n"
             "  -o mynetworks=192.0.2.0/24\n"
             "  -o smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination\n")
    with Instance(tmp, main_cf={
        "myhostname": HOST,
        "smtpd_error_sleep_time": "0",
        "smtpd_hard_error_limit": "5",
        "smtpd_recipient_limit": "3",
        "smtpd_forbid_unauth_pipelining": "yes",
        "message_size_limit": "60000000",
    }, master_cf_extra=extra) as instance:
        instance.strict_port = strict_port
        instance.wait_for_port(strict_port)
        yield instance


class Raw(smtpclient.Raw):
    """The byte-level client, with this instance's greeting and EHLO checked."""

    def __init__(self, port: int) -> None:
        super().__init__(port, timeout=20)

    def start(self, helo: str = "client.example") -> None:
        assert self.reply() == f"220 {HOST} ESMTP Postfix"
        assert self.cmd(f"EHLO {helo}").startswith(f"250-{HOST}")


def queued_id(reply: str | bytes) -> str:
    text = reply.decode() if isinstance(reply, bytes) else reply
    m = re.search(r"queued as (\S+)", text)
    assert m, text
    return m.group(1)


def wait_for_log_after(inst: Instance, offset: int, pattern: str, timeout: float = 20) -> None:
    """wait_for_log_after - PATTERN in the log past OFFSET (what a session logged later)."""
    regex = re.compile(pattern, re.M)
    wait_until(lambda: regex.search(inst.log_text(), offset), timeout,
               lambda: f"{pattern!r} in:\n{inst.log_text()[offset:]}")


def maildir(inst: Instance, user: str):
    return inst.mailbox_dir / "localhost" / user


class TestAcceptedMail:
    def test_smtplib_session_and_postfix_log_lines(self, inst):
        client = smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=20)
        client.ehlo("client.example")
        client.mail("a@example.com")
        client.rcpt("e2e-one@localhost")
        code, text = client.data(b"Subject: one\r\n\r\nhello\r\n")
        client.quit()
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
        qid = queued_id(text)
        inst.wait_for_log(rf"postfix/smtpd\[\d+\]: {qid}: client=localhost\[127\.0\.0\.1\]$")
        inst.wait_for_log(r"postfix/smtpd\[\d+\]: disconnect from localhost\[127\.0\.0\.1\] "
                          r"ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5$")
        inst.wait_for_log(rf"postfix/qmgr\[\d+\]: {qid}: from=<a@example\.com>, .*\(queue active\)$")
        # Postfix's order: smtpd names the ID at the first accepted recipient,
        # before cleanup and qmgr do, and before the session ends.
        log = inst.log_text()
        order = [re.search(pattern, log).start() for pattern in (
            rf"postfix/smtpd\[\d+\]: {qid}: client=localhost\[127\.0\.0\.1\]",
            rf"postfix/cleanup\[\d+\]: {qid}: message-id=",
            rf"postfix/qmgr\[\d+\]: {qid}: from=<a@example\.com>")]
        assert order == sorted(order), log
        assert "]: connect from localhost[127.0.0.1]" in log[:order[0]]
        assert "]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1" \
            in log[order[0]:]
        [message] = inst.maildir_messages(maildir(inst, "e2e-one"))
        assert re.match(rb"(?:Return-Path: <a@example.com>\n)?(?:X-Original-To: [^\n]*\n)?"
                        rb"(?:Delivered-To: [^\n]*\n)?"
                        rb"Received: from client.example \(localhost \[127.0.0.1\]\)\n"
                        rb"\tby mx.example.com \(Postfix\) with ESMTP id " + qid.encode() +
                        rb"\n\tfor <e2e-one@localhost>; ", message)

    @pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
    @pytest.mark.parametrize("options", [[], ["--pipeline"]])
    def test_swaks(self, inst, options):
        done = subprocess.run(["swaks", "--server", f"127.0.0.1:{inst.smtp_port}",
                               "--from", "a@example.com", "--to", "e2e-swaks@localhost",
                               "--helo", "client.example", *options],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "250 2.0.0 Ok: queued as" in done.stdout

    def test_bdat(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<e2e-bdat@localhost>")
        body = b"Subject: bdat\r\n\r\n.not stuffed\r\n"
        raw.send(b"BDAT %d LAST\r\n" % len(body) + body)
        queued_id(raw.reply())
        raw.close()
        [message] = inst.maildir_messages(maildir(inst, "e2e-bdat"))
        assert message.endswith(b"\n.not stuffed\n")

    def test_smuggling_never_splits_a_message(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<e2e-smuggle@localhost>")
        assert raw.cmd("DATA").startswith("354")
        smuggled = b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<e2e-smuggle@localhost>\r\nDATA\r\n"
        raw.send(b"Subject: first\r\n\r\nx\n.\n" + smuggled + b"y\r.\r" + smuggled +
                 b"z\r\n.\n" + smuggled + b"w\n.\r\n" + smuggled + b"Subject: end\r\n\r\n.\r\n")
        qid = queued_id(raw.reply())
        assert raw.cmd("QUIT") == "221 2.0.0 Bye"
        [message] = inst.maildir_messages(maildir(inst, "e2e-smuggle"))
        assert message.count(b"MAIL FROM:<evil@example.com>") == 4
        # The session's own count: one MAIL, one DATA (a smuggled transaction
        # would be counted there), and its one message was delivered.
        client = inst.wait_for_log(rf"postfix/smtpd\[(\d+)\]: {qid}: client=")
        wait_for_log_after(inst, client.end(),
                           rf"postfix/smtpd\[{client.group(1)}\]: disconnect from localhost"
                           r"\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5$")
        inst.wait_for_log(rf"{qid}: removed")
        assert len(list((maildir(inst, "e2e-smuggle") / "new").iterdir())) == 1

    def test_fifty_megabytes(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@example.com> SIZE=52500000")
        raw.cmd("RCPT TO:<e2e-big@localhost>")
        assert raw.cmd("DATA").startswith("354")
        line = b"x" * 998 + b"\r\n"
        block = b"Subject: big\r\n\r\n" + line * 1000
        for _ in range(50):
            raw.send(block)
            block = line * 1000
        raw.send(b".\r\n")
        queued_id(raw.reply())
        raw.close()


class TestRefusals:
    def test_relay_access_denied(self, inst):
        raw = Raw(inst.strict_port)
        raw.start("client.example")
        raw.cmd("MAIL FROM:<a@b.example>")
        assert raw.cmd("RCPT TO:<x@other.example>") == \
            "554 5.7.1 <x@other.example>: Relay access denied"
        raw.cmd("QUIT")
        inst.wait_for_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1 "
                          r"<x@other\.example>: Relay access denied; from=<a@b\.example> "
                          r"to=<x@other\.example> proto=ESMTP helo=<client\.example>$")

    def test_user_unknown(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@b.example>")
        assert raw.cmd(f"RCPT TO:<no-such-user-e2e@{HOST}>") == \
            f"550 5.1.1 <no-such-user-e2e@{HOST}>: Recipient address rejected: " \
            "User unknown in local recipient table"
        assert raw.cmd(f"RCPT TO:<root@{HOST}>") == "250 2.1.5 Ok"

    def test_rejects_after_the_first_accepted_recipient_name_the_queue_id(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@b.example>")
        assert raw.cmd(f"RCPT TO:<root@{HOST}>") == "250 2.1.5 Ok"
        assert raw.cmd(f"RCPT TO:<no-such-later-e2e@{HOST}>").startswith("550 5.1.1")
        m = inst.wait_for_log(r"postfix/smtpd\[\d+\]: (\w+): reject: RCPT from "
                              r"localhost\[127\.0\.0\.1\]: 550 5\.1\.1 <no-such-later-e2e@")
        qid = m.group(1)
        assert re.search(rf"postfix/smtpd\[\d+\]: {qid}: client=localhost\[127\.0\.0\.1\]$",
                         inst.log_text(), re.M)
        # The transaction ends without a message: its reserved file goes.
        assert raw.cmd("RSET") == "250 2.0.0 Ok"
        path = inst.queue_dir / "incoming" / qid
        poll(lambda: not path.exists(), timeout=20)
        assert not path.exists()
        raw.cmd("QUIT")

    def test_too_many_recipients(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        raw.cmd("MAIL FROM:<a@b.example>")
        for i in range(3):
            assert raw.cmd(f"RCPT TO:<r{i}@localhost>") == "250 2.1.5 Ok"
        assert raw.cmd("RCPT TO:<r4@localhost>") == "452 4.5.3 Error: too many recipients"

    def test_size_limit(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        assert raw.cmd("MAIL FROM:<a@b.example> SIZE=60000001") == \
            "552 5.3.4 Message size exceeds fixed limit"

    def test_sequence_and_syntax_errors(self, inst):
        raw = Raw(inst.smtp_port)
        assert raw.reply() == f"220 {HOST} ESMTP Postfix"
        assert raw.cmd("RCPT TO:<a@localhost>") == "503 5.5.1 Error: need MAIL command"
        assert raw.cmd("BOGUS") == "502 5.5.2 Error: command not recognized"
        assert raw.cmd("MAIL FROM:<a@b") == "501 5.1.7 Bad sender address syntax"
        assert raw.cmd("HELO") == "501 Syntax: HELO hostname"
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"
        assert raw.cmd("RSET") == "250 2.0.0 Ok"
        assert raw.cmd("VRFY root@localhost") == "252 2.0.0 root@localhost"

    def test_error_limit(self, inst):
        raw = Raw(inst.smtp_port)
        raw.start()
        for _ in range(5):
            raw.cmd("BOGUS")
        assert raw.cmd("NOOP") == f"421 4.7.0 {HOST} Error: too many errors"
        inst.wait_for_log(r"too many errors after UNKNOWN from localhost\[127\.0\.0\.1\]$")

    def test_timeout(self, inst):
        raw = Raw(inst.strict_port)
        raw.start()
        assert raw.reply() == f"421 4.4.2 {HOST} Error: timeout exceeded"
        inst.wait_for_log(r"timeout after EHLO from localhost\[127\.0\.0\.1\]$")

    def test_a_client_that_hangs_up_at_once_is_greeted_not_called_a_pipeliner(self, inst):
        # End of file before the greeting is no command: Postfix counts unread
        # bytes, and so does smtpd, so the log says what happened.
        with socket.create_connection(("127.0.0.1", inst.smtp_port)) as sock:
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            assert sock.recv(1024).startswith(b"220 ")
        inst.wait_for_log(r"lost connection after CONNECT from localhost\[127\.0\.0\.1\]$")

    def test_unauthorized_pipelining(self, inst):
        raw = Raw(inst.smtp_port)
        assert raw.reply().startswith("220 ")
        raw.send(b"EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n")
        assert raw.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
        inst.wait_for_log(r"improper command pipelining after EHLO from localhost\[127\.0\.0\.1\]: "
                          r"MAIL FROM:<a@b\.example>\\r\\n$")


# -- sessions per process (issue 15, item 5) ---------------------------------------

def _smtpd_holding(inst: Instance, client: Raw) -> int:
    """_smtpd_holding - the pid of the smtpd process serving CLIENT's connection."""
    here = client.sock.getsockname()
    for proc in psutil.Process(inst.master_pid()).children(recursive=True):
        try:
            if any(c.raddr and tuple(c.raddr) == here for c in proc.net_connections("tcp")):
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process holds the connection from {here}")


def _deliver(client: Raw, token: str) -> str:
    assert client.cmd("MAIL FROM:<a@example.com>").startswith("250")
    assert client.cmd("RCPT TO:<b@discard.example>").startswith("250")
    assert client.cmd("DATA").startswith("354")
    return client.cmd(f"Subject: {token}\r\n\r\n{token}\r\n.")


def test_a_crash_costs_only_the_sessions_of_one_process(tmp_path):
    # smtpd_per_process_session_limit bounds the sessions one smtpd carries; the
    # master starts another smtpd for the next ones, so a crash loses few.
    with Instance(tmp_path, main_cf={
        "myhostname": HOST, "smtpd_per_process_session_limit": "2",
        "transport_maps": "inline:{ discard.example=discard: }",
    }) as inst:
        clients = [Raw(inst.smtp_port) for _ in range(4)]
        for client in clients:
            client.start()
        holders = [_smtpd_holding(inst, client) for client in clients]
        assert sorted(holders.count(pid) for pid in set(holders)) == [2, 2]
        victim = holders[0]
        os.kill(victim, signal.SIGKILL)
        for client, pid in zip(clients, holders):
            if pid == victim:
                assert client.reply() == ""         # cut: end of file
            else:
                assert queued_id(_deliver(client, f"survivor-{pid}"))
            client.close()
        late = Raw(inst.smtp_port)      # the master replaces the lost process
        late.start()
        assert queued_id(_deliver(late, "late"))
        late.close()
