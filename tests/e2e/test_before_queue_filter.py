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
  * a filter slower than smtpd_proxy_timeout: 451 4.3.0, nothing delivered;
  * the same dialogues to Debian's Postfix 3.7 with the same filter program:
    the same client replies and the same log lines (TestPostfixParity).
"""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.instance import ROOT, Instance, free_port, listening
from tests.support.parity import postfix
from tests.support.parity.dialogue import Raw, play
from tests.support.parity.mask import log_shapes, mask_reply
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


@contextmanager
def filtering(tmp: Path, *options: str, stall: float = 30) -> Iterator[tuple[FilterProgram,
                                                                            Instance]]:
    """filtering - the filter program and the started instance that uses it."""
    back_port = free_port()
    filt = FilterProgram(tmp, back_port, stall)
    try:
        with started(filtered_instance(tmp, filt.port, back_port, *options)) as inst:
            yield filt, inst
    finally:
        filt.stop()


class TestFilter:
    def test_marked_message_refused_the_rest_delivered_once(self, tmp_path):
        with filtering(tmp_path) as (filt, inst):
            with smtplib.SMTP("127.0.0.1", inst.front_port, timeout=30) as s:
                first = transaction(s, message("first"))
                marked = transaction(s, message("marked", REJECT_MARK))
                second = transaction(s, message("second"))
            messages = inst.maildir_messages(mailbox(inst), count=2)
            for _, reply in (first, second):
                queue_id = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", reply).group(1)
                inst.wait_for_log(rf"{queue_id}: to=<{RCPT}>, .*status=sent")
            log = inst.log_text()
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
        with filtering(tmp_path) as (filt, inst):
            with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
                assert transaction(s, message("direct"))[0] == 250
            inst.maildir_messages(mailbox(inst))
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
        with filtering(tmp_path, "smtpd_proxy_options=speed_adjust") as (filt, inst):
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
        assert seen_before_data == []
        assert code == 250 and reply.startswith(b"2.0.0 Ok: queued as ")
        assert refused == (550, "5.7.1 Message content rejected by the test filter")
        first = filt.lines()[before:][:7]
        assert [line.split()[0] for line in first] == \
            ["connect", "EHLO", "XFORWARD", "MAIL", "RCPT", "DATA", "DATA-END"]
        assert "proxy-accept: END-OF-MESSAGE: 250 2.0.0 Ok: queued as" in log

    def test_filter_slower_than_the_timeout(self, tmp_path):
        with filtering(tmp_path, "smtpd_proxy_timeout=1s", stall=4) as (filt, inst):
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
        assert len(messages) == 1 and b"Subject: quick" in messages[0]


# -- side by side with Debian's Postfix ------------------------------------------------

PARITY_SETTINGS = {
    "myhostname": "mx.example.com",
    "mydestination": "localhost",
    "relay_domains": "discard.example",
    "transport_maps": "inline:{discard.example=discard:}",
    "alias_maps": "",
    "alias_database": "",
    "smtpd_error_sleep_time": "0",
}
PARITY_RCPT = b"RCPT TO:<b@discard.example>"
PARITY_EHLO = b"EHLO client.example"


def parity_message(*headers: str) -> Raw:
    head = "".join(h + "\r\n" for h in headers)
    return Raw(f"{head}Subject: parity\r\n\r\nhello\r\n.\r\n".encode())


# front service (its -o options) -> the dialogue played to it
PARITY_FRONTS = {
    "filtered": ([], [PARITY_EHLO, b"MAIL FROM:<a@example.com>", PARITY_RCPT, b"DATA",
                      parity_message(), b"MAIL FROM:<a@example.com>", PARITY_RCPT, b"DATA",
                      parity_message(REJECT_MARK), b"QUIT"]),
    "speed_adjust": (["smtpd_proxy_options=speed_adjust"],
                     [PARITY_EHLO, b"MAIL FROM:<a@example.com>", PARITY_RCPT, b"DATA",
                      parity_message(), b"QUIT"]),
    "slow": (["smtpd_proxy_timeout=1s"],
             [PARITY_EHLO, b"MAIL FROM:<a@example.com>", PARITY_RCPT, b"DATA",
              parity_message(STALL_MARK), b"QUIT"]),
    "down": ([], [PARITY_EHLO, b"MAIL FROM:<a@example.com>", PARITY_RCPT, b"DATA", b"QUIT"]),
    # the re-injection smtpd refuses this recipient; the filter passes its reply on
    "rcpt_refused": ([], [PARITY_EHLO, b"MAIL FROM:<a@example.com>",
                          b"RCPT TO:<refused@discard.example>", PARITY_RCPT, b"DATA",
                          parity_message(), b"QUIT"]),
}
# the filter's sessions into the re-injection smtpd: one per transaction
# that reaches the filter (filtered 2, speed_adjust, slow, rcpt_refused)
PARITY_BACK_SESSIONS = 5


def parity_master_cf(fronts: dict[str, int], filter_port: int, dead_port: int,
                     back_port: int) -> str:
    """parity_master_cf - one filtered smtpd per PARITY_FRONTS entry, and the way back."""
    text = ""
    for name, port in fronts.items():
        target = dead_port if name == "down" else filter_port
        text += (f"127.0.0.1:{port} inet n - n - - smtpd\n"
                 f"  -o smtpd_proxy_filter=127.0.0.1:{target}\n"
                 + "".join(f"  -o {o}\n" for o in PARITY_FRONTS[name][0]))
    return text + (f"127.0.0.1:{back_port} inet n - n - - smtpd\n"
                   "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
                   "  -o mynetworks=127.0.0.0/8\n"
                   "  -o smtpd_recipient_restrictions=check_recipient_access,"
                   "inline:{refused@discard.example=REJECT},permit_mynetworks,reject\n"
                   "  -o smtpd_proxy_filter=\n")


def front_log_shapes(text: str) -> set[str]:
    """front_log_shapes - the filtered smtpds' own lines, ports masked."""
    lines = {line for line in log_shapes(text, ("smtpd",))
             if re.search(r"proxy|NOQUEUE: client=|disconnect from .* data=", line)}
    return {re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line) for line in lines}


def journal_shape(filt: FilterProgram) -> list[str]:
    """journal_shape - the commands the filter got and the first lines of each
    message (smtpd's Received: header), client ports and dates masked."""
    lines = [re.sub(r"PORT=\d+", "PORT=N", line) for line in filt.lines()
             if line not in ("connect", "disconnect")]
    for path in sorted(filt.journal.parent.glob(filt.journal.name + ".*")):
        head = path.read_text().split("Subject:")[0]
        lines.append(re.sub(r"; .*\d{4} .*", "; DATE", head))
    return sorted(lines)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs - {system: (replies per front, log text, what the filter got)} for
    Postfix and pymaster."""
    out = {}
    for system in ("postfix", "pymaster"):
        tmp = tmp_path_factory.mktemp(system)
        back_port, dead_port = free_port(), free_port()
        fronts = {name: free_port() for name in PARITY_FRONTS}
        filt = FilterProgram(tmp, back_port, stall=3)
        extra = parity_master_cf(fronts, filt.port, dead_port, back_port)
        if system == "postfix":
            inst = postfix.DebianPostfix(tmp / "pf", {**PARITY_SETTINGS,
                                                      "enable_long_queue_ids": "yes"})
            with (inst.config_dir / "master.cf").open("a") as f:
                f.write(extra)
        else:
            inst = Instance(tmp / "pm", main_cf=PARITY_SETTINGS, master_cf_extra=extra,
                            start=False)
        try:
            inst.start()
            for port in fronts.values():
                wait_until(lambda p=port: listening("127.0.0.1", p), 20, f"port {port}")
            replies = {name: play(fronts[name], steps)
                       for name, (_, steps) in PARITY_FRONTS.items()}
            # Each smtpd logs "disconnect from" last: the probes of the main
            # port and of each front, each front session, and the filter's
            # sessions into the re-injection smtpd.
            inst.wait_for_log(r"\]: disconnect from ",
                              count=1 + 2 * len(PARITY_FRONTS) + PARITY_BACK_SESSIONS)
            out[system] = (replies, inst.log_text(), journal_shape(filt))
        finally:
            inst.stop()
            filt.stop()
    return out


@pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")
class TestPostfixParity:
    @pytest.mark.parametrize("front", list(PARITY_FRONTS))
    def test_client_replies_match_postfix(self, runs, front):
        want = [mask_reply(r) for r in runs["postfix"][0][front]]
        got = [mask_reply(r) for r in runs["pymaster"][0][front]]
        assert got == want

    def test_the_filter_gets_what_postfix_sends(self, runs):
        assert runs["pymaster"][2] == runs["postfix"][2]

    def test_log_lines_match_postfix(self, runs):
        want = front_log_shapes(runs["postfix"][1])
        got = front_log_shapes(runs["pymaster"][1])
        assert got == want
