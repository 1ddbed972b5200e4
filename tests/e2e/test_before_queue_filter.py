"""The before-queue content filter end to end (Postfix's SMTPD_PROXY_README).

The real master runs the master.cf of the README: a public smtpd with
`-o smtpd_proxy_filter=127.0.0.1:F` and a re-injection smtpd on
127.0.0.1:B that trusts the filter's XFORWARD and has no filter of its
own. Between them runs a real filter program, tests/support/proxyfilter.py:
it refuses a message holding a marker with 550 5.7.1 and re-injects the
rest over SMTP into the re-injection smtpd, answering with its reply.

  * the client gets 550 for the marked message, 250 (the re-injection
    smtpd's queue ID) for the others, which arrive once each;
  * a filter that is down: 451 4.3.0 at RCPT, nothing queued;
  * speed_adjust: the filter is connected only after the client's `.`;
  * a filter slower than smtpd_proxy_timeout: 451 4.3.0, nothing delivered.
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.instance import ROOT, Instance, free_port, listening
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(not (ROOT / "libexec" / "virtual").exists(),
                                reason="needs the virtual delivery agent")

REJECT_MARK = "X-Test-Verdict: reject"
STALL_MARK = "X-Test-Verdict: stall"
QUEUE_WRITE_ERROR = "451 4.3.0 Error: queue file write error"
RCPT = "user@localhost"


class FilterProgram:
    """tests/support/proxyfilter.py as its own process, on a free port."""

    def __init__(self, tmp: Path, back_port: int, stall: float = 30) -> None:
        self.port = free_port()
        self.journal = tmp / "filter-journal"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.proxyfilter",
             "--listen", f"127.0.0.1:{self.port}", "--downstream", f"127.0.0.1:{back_port}",
             "--journal", str(self.journal), "--marker", REJECT_MARK,
             "--stall-marker", STALL_MARK, "--stall", str(stall)], cwd=ROOT)
        wait_until(lambda: listening("127.0.0.1", self.port), 20, "the filter program")

    def lines(self) -> list[str]:
        return self.journal.read_text().splitlines() if self.journal.exists() else []

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def filtered_instance(tmp: Path, filter_port: int, back_port: int, *options: str) -> Instance:
    """filtered_instance - SMTPD_PROXY_README's master.cf: a filtered smtpd on
    its own port (inst.front_port) and the re-injection smtpd on BACK_PORT."""
    front_port = free_port()
    extra = (f"127.0.0.1:{front_port} inet n - n - - smtpd\n"
             f"  -o smtpd_proxy_filter=127.0.0.1:{filter_port}\n"
             f"  -o smtpd_client_connection_count_limit=10\n"
             + "".join(f"  -o {o}\n" for o in options) +
             f"127.0.0.1:{back_port} inet n - n - - smtpd\n"
             "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
             "  -o smtpd_client_restrictions=\n"
             "  -o smtpd_helo_restrictions=\n"
             "  -o smtpd_sender_restrictions=\n"
             "  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
             "  -o smtpd_data_restrictions=\n"
             "  -o mynetworks=127.0.0.0/8\n"
             "  -o smtpd_proxy_filter=\n"
             "  -o receive_override_options=no_unknown_recipient_checks\n")
    inst = Instance(tmp, main_cf={"myhostname": "mx.example.com"}, master_cf_extra=extra,
                    start=False)      # started(): the master, then the filtered port
    inst.front_port = front_port
    return inst


def started(inst: Instance) -> Instance:
    inst.start()
    inst.wait_for_port(inst.front_port)
    return inst


def message(subject: str, *extra_headers: str) -> str:
    return "".join(h + "\r\n" for h in extra_headers) + \
        f"From: client@example.com\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"


def transaction(s: smtplib.SMTP, text: str) -> tuple[int, str]:
    """transaction - (EHLO,) MAIL, RCPT, DATA; the reply to the end of the data."""
    if s.ehlo_resp is None:
        s.ehlo("client.example")
    assert s.mail("client@example.com")[0] == 250
    assert s.rcpt(RCPT)[0] == 250
    code, reply = s.data(text)
    return code, reply.decode()


def mailbox(inst: Instance) -> Path:
    return inst.mailbox_dir / "localhost" / "user"


class TestFilter:
    def test_marked_message_refused_the_rest_delivered_once(self, tmp_path):
        back_port = free_port()
        filt = FilterProgram(tmp_path, back_port)
        try:
            with started(filtered_instance(tmp_path, filt.port, back_port)) as inst:
                with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                    first = transaction(s, message("first"))
                    marked = transaction(s, message("marked", REJECT_MARK))
                    second = transaction(s, message("second"))
                messages = inst.maildir_messages(mailbox(inst), count=2)
                for code, reply in (first, second):
                    queue_id = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", reply).group(1)
                    inst.wait_for_log(rf"{queue_id}: to=<{RCPT}>, .*status=sent")
                log = inst.log_text()
        finally:
            filt.stop()
        assert first[0] == second[0] == 250
        assert marked == (550, "5.7.1 Message content rejected by the test filter")
        subjects = sorted(re.search(rb"Subject: (\w+)", m).group(1) for m in messages)
        assert subjects == [b"first", b"second"]
        assert len(re.findall(r"\bproxy-accept: END-OF-MESSAGE: 250 2\.0\.0 Ok: queued as \S+; "
                              r"from=<client@example\.com> to=<user@localhost> proto=ESMTP "
                              r"helo=<\S+>", log)) == 2
        assert "proxy-reject: END-OF-MESSAGE: 550 5.7.1 Message content rejected by the " \
               "test filter; from=<client@example.com> to=<user@localhost>" in log
        # The filtered smtpd made no queue file: only the two re-injected ones exist.
        assert len(re.findall(r": message-id=", log)) == 2
        assert len(re.findall(r"NOQUEUE: client=localhost\[127\.0\.0\.1\]", log)) == 3
        # smtpd's Received: header (no queue ID yet) went through the filter.
        assert all(b"(Postfix) with ESMTP\n\tfor <user@localhost>;" in m for m in messages)
        journal = filt.lines()
        assert any(re.fullmatch(r"XFORWARD NAME=localhost ADDR=127\.0\.0\.1 PORT=\d+ "
                                r"HELO=\S+ IDENT=\[UNAVAILABLE\] PROTO=ESMTP SOURCE=LOCAL", line)
                   for line in journal), journal
        assert journal.count("EHLO mx.example.com") == 3

    def test_the_unfiltered_smtpd_beside_it_does_not_use_the_filter(self, tmp_path):
        back_port = free_port()
        filt = FilterProgram(tmp_path, back_port)
        try:
            with started(filtered_instance(tmp_path, filt.port, back_port)) as inst:
                with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                    assert transaction(s, message("direct"))[0] == 250
                inst.maildir_messages(mailbox(inst))
        finally:
            filt.stop()
        assert not any(line.startswith("MAIL") for line in filt.lines())

    def test_filter_down_is_a_temporary_error_and_nothing_is_queued(self, tmp_path):
        filter_port, back_port = free_port(), free_port()    # nothing listens there
        with started(filtered_instance(tmp_path, filter_port, back_port)) as inst:
            with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                s.ehlo("client.example")
                assert s.mail("client@example.com")[0] == 250
                code, reply = s.rcpt(RCPT)
                assert (code, reply.decode()) == (451, QUEUE_WRITE_ERROR[4:])
                s.rset()
            inst.wait_for_log(rf"warning: connect to proxy filter 127\.0\.0\.1:{filter_port}: "
                              r"Connection refused")
            inst.wait_for_log(r"disconnect from .* rcpt=0/1")
            queue = inst.command("postqueue", "-c", str(inst.config_dir), "-p")
            log = inst.log_text()
        assert b"Mail queue is empty" in queue.stdout
        assert "message-id=" not in log and "client=" not in log

    def test_speed_adjust_connects_after_the_whole_message(self, tmp_path):
        back_port = free_port()
        filt = FilterProgram(tmp_path, back_port)
        try:
            inst = filtered_instance(tmp_path, filt.port, back_port,
                                     "smtpd_proxy_options=speed_adjust")
            with started(inst):
                before = len(filt.lines())
                with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                    s.ehlo("client.example")
                    assert s.mail("client@example.com") == (250, b"2.1.0 Ok")
                    assert s.rcpt(RCPT) == (250, b"2.1.5 Ok")       # smtpd's own reply
                    seen_before_data = filt.lines()[before:]
                    code, reply = s.data(message("adjusted"))
                    refused = transaction(s, message("refused", REJECT_MARK))
                inst.maildir_messages(mailbox(inst))
                log = inst.log_text()
        finally:
            filt.stop()
        assert seen_before_data == []
        assert code == 250 and reply.startswith(b"2.0.0 Ok: queued as ")
        assert refused == (550, "5.7.1 Message content rejected by the test filter")
        first = filt.lines()[before:][:7]
        assert [line.split()[0] for line in first] == \
            ["connect", "EHLO", "XFORWARD", "MAIL", "RCPT", "DATA", "DATA-END"]
        assert "proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as" in log

    def test_filter_slower_than_the_timeout(self, tmp_path):
        back_port = free_port()
        filt = FilterProgram(tmp_path, back_port, stall=4)
        try:
            inst = filtered_instance(tmp_path, filt.port, back_port, "smtpd_proxy_timeout=1s")
            with started(inst):
                with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                    assert transaction(s, message("slow", STALL_MARK)) == \
                        (451, QUEUE_WRITE_ERROR[4:])
                inst.wait_for_log(rf"warning: timeout talking to proxy 127\.0\.0\.1:{filt.port}")
                inst.wait_for_log(r"proxy-reject: END-OF-MESSAGE: 451 4\.3\.0 Error: queue file "
                                  r"write error; from=<client@example\.com>")
                # The filter gives up its downstream transaction after the stall.
                inst.wait_for_log(r"disconnect from localhost\[127\.0\.0\.1\].* rset=1")
                with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                    assert transaction(s, message("quick"))[0] == 250
                messages = inst.maildir_messages(mailbox(inst))
        finally:
            filt.stop()
        assert len(messages) == 1 and b"Subject: quick" in messages[0]
