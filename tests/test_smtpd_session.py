"""SMTP sessions against the real session code, with cleanup stood in for.

A real loopback socket and real clients (smtplib, raw sockets); only the
cleanup service is replaced, by a stand-in that records each request and
answers "ok", reserving queue IDs QID1, QID2 … as cleanup reserves queue
files (end-to-end tests in tests/e2e/test_smtpd.py use the real one).
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import threading
import time

import pytest

from pymaster.util import ipc, log
from pymaster.mail.config import load_config
from services.smtpd.check import Checker
from services.smtpd.connection import Connection
from services.smtpd.peer import Peer
from services.smtpd.session import Session, Settings
from services.smtpd.submit import QUEUE_ID_PLACEHOLDER
from tests.support.smtpclient import Raw
from tests.support.wait import wait_until


class StandInCleanup:
    """Records requests; answers like cleanup (or fails, when told to)."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, bytes]] = []
        self.reserved: list[str] = []
        self.abandoned: list[str] = []
        self.fail = False
        self.fail_reserve = False

    async def reserve(self) -> dict:
        if self.fail_reserve:
            raise ipc.IpcError("timeout after 1s waiting for private/cleanup")
        self.reserved.append(f"QID{len(self.reserved) + 1}")
        return {"status": "ok", "queue_id": self.reserved[-1]}

    def abandon(self, queue_id: str) -> None:
        self.abandoned.append(queue_id)

    async def submit(self, header: dict, payload: list) -> dict:
        if self.fail:
            raise ipc.IpcError("timeout after 1s waiting for private/cleanup")
        content = b"".join(bytes(p) for p in payload)
        self.messages.append((header, content))
        return {"status": "ok", "queue_id": header.get("queue_id") or f"QID{len(self.messages)}"}

    def close(self) -> None:
        pass


class Server:
    """A thread running sessions on a loopback port."""

    running: list["Server"] = []     # ended after each test (see _end_servers)

    def __init__(self, tmp_path, **settings) -> None:
        values = {"myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
                  "local_recipient_maps": "inline:{ alice=x, bob=x }", "alias_maps": "",
                  "smtpd_error_sleep_time": "0", "maillog_file": str(tmp_path / "maillog"),
                  **settings}
        (tmp_path / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
        self.cfg = load_config(str(tmp_path))
        log.setup("smtpd", self.cfg)
        self.logfile = tmp_path / "maillog"
        self.settings = Settings.from_config(self.cfg)
        self.checker = Checker(self.cfg)
        self.cleanup = StandInCleanup()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(10)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepting = threading.Event()     # cleared: connections wait in the backlog
        self.accepting.set()
        self.closed = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._serve(),), daemon=True)
        self.sessions: set[asyncio.Task] = set()
        self.thread.start()
        Server.running.append(self)

    async def _serve(self) -> None:
        while True:
            await self.loop.run_in_executor(None, self.accepting.wait)
            if self.closed:
                return
            sock, addr = await self.loop.sock_accept(self.listener)
            if self.closed:
                sock.close()
                return
            task = self.loop.create_task(self._session(sock, addr))
            self.sessions.add(task)
            task.add_done_callback(self.sessions.discard)

    def close(self) -> None:
        """close - end every session now, so none logs into the next test's file."""
        async def end_sessions() -> None:
            tasks = list(self.sessions)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(end_sessions(), self.loop).result(timeout=10)
        # Wake the accept loop so that it returns: an executor thread left
        # waiting would keep the test process from exiting.
        self.closed = True
        self.accepting.set()

    async def _session(self, sock, addr) -> None:
        _, conn = await self.loop.connect_accepted_socket(Connection, sock)
        await Session(conn, Peer("localhost", addr[0], addr[1]), self.settings,
                      self.checker, self.cleanup).run()

    def log(self) -> str:
        return self.logfile.read_text() if self.logfile.exists() else ""

    def wait_log(self, text: str, timeout: float = 20) -> str:
        wait_until(lambda: text in self.log(), timeout, lambda: f"{text!r} in log:\n{self.log()}",
                   interval=0.02)
        return self.log()

    def smtp(self) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, timeout=10)

    def raw(self) -> "Raw":
        return Raw(self.port)


@pytest.fixture(autouse=True)
def _end_servers():
    yield
    while Server.running:
        Server.running.pop().close()


@pytest.fixture
def server(tmp_path):
    return Server(tmp_path)


def hello(raw: Raw) -> None:
    assert raw.reply().startswith("220 mx.example.com ESMTP Postfix")
    raw.cmd("EHLO client.example")


class TestGreetingAndEhlo:
    def test_ehlo_features_in_postfix_order(self, server):
        code, text = server.smtp().ehlo("client.example")
        assert code == 250
        assert text.decode().split("\n") == [
            "mx.example.com", "PIPELINING", "SIZE 10240000", "VRFY", "ETRN",
            "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]

    def test_helo_and_syntax(self, server):
        raw = server.raw()
        raw.reply()
        assert raw.cmd("HELO") == "501 Syntax: HELO hostname"
        assert raw.cmd("HELO client.example") == "250 mx.example.com"

    def test_vrfy_disabled(self, tmp_path):
        s = Server(tmp_path, disable_vrfy_command="yes")
        raw = s.raw()
        raw.reply()
        assert "VRFY" not in raw.cmd("EHLO x")
        assert raw.cmd("VRFY alice") == "502 5.5.1 VRFY command is disabled"


class TestSequence:
    @pytest.mark.parametrize("line, reply", [
        ("RCPT TO:<alice@mx.example.com>", "503 5.5.1 Error: need MAIL command"),
        ("DATA", "503 5.5.1 Error: need RCPT command"),      # Postfix's wording
        ("FOO", "502 5.5.2 Error: command not recognized"),
        ("MAIL FROM:<a@b", "501 5.1.7 Bad sender address syntax"),
        ("MAIL TO:<a@b>", "501 5.5.4 Syntax: MAIL FROM:<address>"),
        ("NOOP", "250 2.0.0 Ok"),
        ("RSET", "250 2.0.0 Ok"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"),
        ("VRFY alice@mx.example.com", "252 2.0.0 alice@mx.example.com"),
        ("VRFY nobody@mx.example.com", "550 5.1.1 <nobody@mx.example.com>: Recipient address "
                                       "rejected: User unknown in local recipient table"),
        ("ETRN", "500 Syntax: ETRN domain"),
        ("ETRN other.example", "459 <other.example>: service unavailable"),
    ])
    def test_replies(self, server, line, reply):
        raw = server.raw()
        hello(raw)
        assert raw.cmd(line) == reply

    def test_nested_mail_and_need_rcpt(self, server):
        raw = server.raw()
        hello(raw)
        assert raw.cmd("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
        assert raw.cmd("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: nested MAIL command"
        assert raw.cmd("DATA") == "554 5.5.1 Error: no valid recipients"

    def test_helo_required(self, tmp_path):
        raw = Server(tmp_path, smtpd_helo_required="yes").raw()
        raw.reply()
        assert raw.cmd("MAIL FROM:<a@b.example>") == "503 5.5.1 Error: send HELO/EHLO first"

    def test_size_too_big_in_mail_from(self, server):
        raw = server.raw()
        hello(raw)
        assert raw.cmd("MAIL FROM:<a@b.example> SIZE=20000000") == \
            "552 5.3.4 Message size exceeds fixed limit"

    def test_too_many_recipients(self, tmp_path):
        raw = Server(tmp_path, smtpd_recipient_limit="1").raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@b.example>")
        assert raw.cmd("RCPT TO:<alice@mx.example.com>") == "250 2.1.5 Ok"
        assert raw.cmd("RCPT TO:<bob@mx.example.com>") == "452 4.5.3 Error: too many recipients"

    def test_hard_error_limit(self, tmp_path):
        s = Server(tmp_path, smtpd_hard_error_limit="3")
        raw = s.raw()
        hello(raw)
        for _ in range(3):
            raw.cmd("FOO")
        assert raw.cmd("NOOP") == "421 4.7.0 mx.example.com Error: too many errors"
        log = s.wait_log("disconnect from localhost[127.0.0.1] ehlo=1 unknown=0/3 commands=1/4")
        assert "too many errors after UNKNOWN from localhost[127.0.0.1]" in log

    def test_timeout(self, tmp_path):
        s = Server(tmp_path, smtpd_timeout="1s")
        raw = s.raw()
        hello(raw)
        assert raw.reply() == "421 4.4.2 mx.example.com Error: timeout exceeded"
        assert "timeout after EHLO from localhost[127.0.0.1]" in s.wait_log("timeout after")

    def test_long_command_line(self, server):
        raw = server.raw()
        hello(raw)
        # As Postfix: the line is cut at line_length_limit, logged, and obeyed.
        assert raw.cmd("NOOP " + "x" * 5000) == "250 2.0.0 Ok"
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"


class TestMessages:
    def test_message_goes_to_cleanup_with_received_header(self, server):
        client = server.smtp()
        client.ehlo("client.example")
        client.mail("a@example.com", ["SIZE=100", "BODY=8BITMIME"])
        client.rcpt("alice@mx.example.com", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;alice@mx.example.com"])
        code, text = client.data(b"Subject: hi\r\n\r\n.dot\r\nbody\r\n")
        assert (code, text) == (250, b"2.0.0 Ok: queued as QID1")
        client.quit()
        header, content = server.cleanup.messages[0]
        assert header["sender"] == "a@example.com"
        assert header["recipients"] == [{"address": "alice@mx.example.com",
                                         "orig": "alice@mx.example.com",
                                         "notify": "SUCCESS,FAILURE",
                                         "orcpt": "rfc822;alice@mx.example.com"}]
        assert header["attrs"]["body"] == "8BITMIME" and header["attrs"]["protocol"] == "ESMTP"
        received, _, rest = content.partition(b"\nSubject")
        assert received.startswith(
            b"Received: from client.example (localhost [127.0.0.1])\n"
            b"\tby mx.example.com (Postfix) with ESMTP id QID1\n"
            b"\tfor <alice@mx.example.com>; ")
        assert header["queue_id"] == "QID1" and "queue_id_placeholder" not in header
        assert rest == b": hi\n\n.dot\nbody\n"     # smtplib stuffed the dot; we unstuffed it
        log = server.wait_log("disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1")
        assert "QID1: client=localhost[127.0.0.1]" in log
        assert "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5" in log

    def test_with_several_recipients_the_date_follows_the_queue_id(self, server):
        client = server.smtp()
        client.ehlo("client.example")
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        client.rcpt("bob@mx.example.com")
        assert client.data(b"Subject: hi\r\n\r\nbody\r\n")[0] == 250
        client.quit()
        _, content = server.cleanup.messages[0]
        assert content.startswith(
            b"Received: from client.example (localhost [127.0.0.1])\n"
            b"\tby mx.example.com (Postfix) with ESMTP id QID1;\n\t")

    def test_cleanup_failure_is_a_temporary_error(self, server):
        server.cleanup.fail = True
        client = server.smtp()
        client.ehlo("x")
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        assert client.data(b"x\r\n") == (451, b"4.3.0 Error: queue file write error")
        client.quit()
        server.wait_log("disconnect from")
        assert server.cleanup.abandoned == ["QID1"]     # cleanup may not have written it

    def test_bdat_chunks(self, server):
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        raw.send(b"BDAT 9\r\nSubject: ")
        assert raw.reply() == "250 2.0.0 Ok: 9 bytes"
        raw.send(b"BDAT 9 LAST\r\nx\r\n\r\n.b\r\n")
        assert raw.reply() == "250 2.0.0 Ok: 18 bytes queued as QID1"
        assert server.cleanup.messages[0][1].endswith(b"Subject: x\n\n.b\n")

    @pytest.mark.parametrize("count", ["99999999999999999999999", str(2 ** 63), "\u0661"])
    def test_bdat_count_past_a_file_offset_hangs_up(self, server, count):
        """Postfix: a count that does not fit a 64-bit off_t is a syntax error (521, hang
        up); before, pymaster read and dropped everything the client sent after it."""
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        assert raw.cmd(f"BDAT {count} LAST") == "521 5.5.4 Syntax: BDAT count [LAST]"
        assert raw.reply() == ""        # closed
        assert f"malformed BDAT command syntax from localhost[127.0.0.1]: BDAT {count} LAST" \
            in server.wait_log("disconnect from")

    def test_bdat_chunk_past_the_size_limit_is_read_and_dropped(self, tmp_path):
        """As Postfix: the chunk that would pass message_size_limit is refused once it
        has been read (552 "Chunk exceeds"), every later chunk up to LAST is dropped
        (551 "Discarded"), and the client may start over."""
        s = Server(tmp_path, message_size_limit="1000")
        raw = s.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        raw.send(b"BDAT 600\r\n" + b"x" * 600)
        assert raw.reply() == "250 2.0.0 Ok: 600 bytes"
        raw.send(b"BDAT 200000\r\n" + b"y" * 200000)
        assert raw.reply() == "552 5.3.4 Chunk exceeds message size limit"
        assert raw.cmd("MAIL FROM:<b@example.com>") == "503 5.5.1 Error: nested MAIL command"
        assert raw.cmd("RCPT TO:<bob@mx.example.com>") == "503 5.5.1 Error: RCPT after BDAT"
        assert raw.cmd("DATA") == "503 5.5.1 Error: DATA after BDAT"
        raw.send(b"BDAT 5 LAST\r\nhello")
        assert raw.reply() == "551 5.0.0 Discarded 5 bytes after earlier error"
        assert raw.cmd("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"
        assert s.cleanup.messages == []
        assert "warning: QID1: BDAT request from localhost[127.0.0.1] exceeds message size " \
            "limit" in s.log()

    def test_refused_bdat_starts_a_sequence(self, server):
        raw = server.raw()
        hello(raw)
        raw.send(b"BDAT 3\r\nabc")
        assert raw.reply() == "503 5.5.1 Error: need RCPT command"
        assert raw.cmd("MAIL FROM:<a@example.com>") == "503 5.5.1 Error: MAIL after BDAT"
        raw.send(b"BDAT 3 LAST\r\nabc")
        assert raw.reply() == "551 5.0.0 Discarded 3 bytes after earlier error"
        assert raw.cmd("MAIL FROM:<a@example.com>") == "250 2.1.0 Ok"

    def test_smuggled_message_stays_inside_the_first(self, server):
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        assert raw.cmd("DATA").startswith("354")
        raw.send(b"Subject: one\r\n\r\nbody\n.\nMAIL FROM:<evil@example.com>\r\n"
                 b"RCPT TO:<bob@mx.example.com>\r\nDATA\r\nSubject: two\r\n\r\n.\r\n")
        assert raw.reply() == "250 2.0.0 Ok: queued as QID1"
        assert len(server.cleanup.messages) == 1
        assert b"MAIL FROM:<evil@example.com>" in server.cleanup.messages[0][1]

    def test_size_limit_in_data(self, tmp_path):
        s = Server(tmp_path, message_size_limit="1000")
        client = s.smtp()
        client.ehlo("x")
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        assert client.data(b"x" * 2000 + b"\r\n") == (552, b"5.3.4 Message size exceeds fixed limit")
        assert s.cleanup.messages == []



class TestSmuggling:
    """smtpd_forbid_bare_newline as Postfix 3.10 has it (default normalize);
    the replies, log lines and counts are those of Debian's Postfix 3.7.11,
    which has the same settings (tests/e2e/test_postfix_parity.py plays them)."""

    BARE_LF = "550 5.5.2 mx.example.com Error: bare <LF> received"

    def transaction(self, raw: Raw) -> None:
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")

    def test_defaults_are_postfix_3_10s(self, server):
        assert (server.settings.bare_newline, server.settings.forbid_unauth_pipelining) == \
            ("normalize", True)
        assert server.cfg.get("smtpd_forbid_bare_newline_exclusions") == \
            server.cfg.get("mynetworks")
        assert server.settings.bare_newline_code == 550

    @pytest.mark.parametrize("smuggled", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"])
    def test_normalize_a_smuggled_end_of_data_is_content(self, tmp_path, smuggled):
        s = Server(tmp_path, mynetworks="192.0.2.0/24")     # no exclusion for loopback
        raw = s.raw()
        self.transaction(raw)
        raw.cmd("DATA")
        raw.send(b"a" + smuggled + b"MAIL FROM:<evil@example.com>\r\n.\r\n")
        assert raw.reply() == "250 2.0.0 Ok: queued as QID1"
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"
        content = s.cleanup.messages[0][1]
        assert content.endswith(b"a\n\nMAIL FROM:<evil@example.com>\n")   # LF ends, dot removed
        assert len(s.cleanup.messages) == 1

    def test_normalize_a_bare_lf_command_is_a_command(self, tmp_path):
        s = Server(tmp_path, mynetworks="192.0.2.0/24")
        raw = s.raw()
        hello(raw)
        raw.send(b"NOOP\n")
        assert raw.reply() == "250 2.0.0 Ok"

    def test_reject_a_bare_lf_command_ends_the_session(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject", mynetworks="192.0.2.0/24")
        raw = s.raw()
        hello(raw)
        raw.send(b"NOOP\n")
        assert raw.reply() == self.BARE_LF
        assert raw.file.readline() == b""
        log = s.wait_log("disconnect from localhost[127.0.0.1] ehlo=1 commands=1\n")
        assert "NOQUEUE: reject: EHLO from localhost[127.0.0.1]: bare <LF> received; " \
               "proto=ESMTP helo=<client.example>\n" in log

    def test_reject_bare_lf_content_refuses_the_message(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject",
                   smtpd_forbid_bare_newline_exclusions="")
        raw = s.raw()
        self.transaction(raw)
        raw.cmd("DATA")
        raw.send(b"a\nb\r\n.\r\n")
        assert raw.reply() == self.BARE_LF
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"     # the session goes on
        raw.cmd("QUIT")
        assert s.cleanup.messages == []
        log = s.wait_log("disconnect from")
        assert "QID1: reject: END-OF-MESSAGE from localhost[127.0.0.1]: bare <LF> received; " \
               "from=<a@example.com> to=<alice@mx.example.com> proto=ESMTP " \
               "helo=<client.example>\n" in log
        assert "ehlo=1 mail=1 rcpt=1 data=0/1 noop=1 quit=1 commands=5/6" in log

    def test_reject_code_521_hangs_up(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject",
                   smtpd_forbid_bare_newline_reject_code="521", mynetworks="192.0.2.0/24")
        raw = s.raw()
        self.transaction(raw)
        raw.cmd("DATA")
        raw.send(b"a\nb\r\n.\r\n")
        assert raw.reply() == "521 5.5.2 mx.example.com Error: bare <LF> received"
        assert raw.file.readline() == b""
        s.wait_log("ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4")

    def test_reject_bare_lf_in_bdat(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject", mynetworks="192.0.2.0/24")
        raw = s.raw()
        self.transaction(raw)
        raw.send(b"BDAT 3\r\na\r\r")
        assert raw.reply() == "250 2.0.0 Ok: 3 bytes"
        raw.send(b"BDAT 3 LAST\r\n\nb\n")     # a CRLF split across chunks, then a bare LF
        assert raw.reply() == self.BARE_LF
        assert s.cleanup.messages == []
        assert "QID1: reject: END-OF-MESSAGE" in s.wait_log("bare <LF> received")

    def test_bdat_crlf_split_across_chunks_is_no_bare_lf(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject", mynetworks="192.0.2.0/24")
        raw = s.raw()
        self.transaction(raw)
        raw.send(b"BDAT 2\r\na\r")
        raw.reply()
        raw.send(b"BDAT 1 LAST\r\n\n")
        assert raw.reply().startswith("250 2.0.0 Ok: 3 bytes queued as")

    def test_excluded_clients_are_exempt(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_bare_newline="reject", mynetworks="127.0.0.0/8")
        raw = s.raw()
        self.transaction(raw)
        raw.send(b"NOOP\n")
        assert raw.reply() == "250 2.0.0 Ok"
        raw.cmd("DATA")
        raw.send(b"a\nb\r\n.\r\n")
        assert raw.reply() == "250 2.0.0 Ok: queued as QID1"


class TestQueueIdFromFirstRecipient:
    """As Postfix: the queue file exists from the first accepted recipient on."""

    def test_log_order_and_queue_id_in_later_rejects(self, server):
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        assert raw.cmd("RCPT TO:<x@mx.example.com>").startswith("550")
        assert server.cleanup.reserved == []        # nothing accepted: no queue file
        assert raw.cmd("RCPT TO:<alice@mx.example.com>") == "250 2.1.5 Ok"
        assert server.cleanup.reserved == ["QID1"]
        assert raw.cmd("RCPT TO:<y@mx.example.com>").startswith("550")
        assert raw.cmd("RCPT TO:<bob@mx.example.com>") == "250 2.1.5 Ok"
        assert server.cleanup.reserved == ["QID1"]  # one file per transaction
        raw.cmd("DATA")
        assert raw.cmd("Subject: x\r\n\r\nhi\r\n.") == "250 2.0.0 Ok: queued as QID1"
        raw.cmd("QUIT")
        lines = [line.split(": ", 1)[1] for line in
                 server.wait_log("disconnect from").splitlines() if "]: " in line]
        assert lines[:5] == [
            "connect from localhost[127.0.0.1]",
            "NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <x@mx.example.com>: "
            "Recipient address rejected: User unknown in local recipient table; "
            "from=<a@example.com> to=<x@mx.example.com> proto=ESMTP helo=<client.example>",
            "QID1: client=localhost[127.0.0.1]",
            "QID1: reject: RCPT from localhost[127.0.0.1]: 550 5.1.1 <y@mx.example.com>: "
            "Recipient address rejected: User unknown in local recipient table; "
            "from=<a@example.com> to=<y@mx.example.com> proto=ESMTP helo=<client.example>",
            "disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=2/4 data=1 quit=1 "
            "commands=6/8"]
        assert server.cleanup.abandoned == []       # written, not abandoned

    @pytest.mark.parametrize("end", [b"RSET", b"HELO again", b"QUIT", None])
    def test_a_transaction_without_message_abandons_its_file(self, server, end):
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        if end is None:     # the client goes away
            raw.file.close()
            raw.close()
            server.wait_log("disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 commands=3")
        elif end == b"QUIT":
            raw.cmd("QUIT")
            server.wait_log("disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 quit=1")
        else:
            raw.cmd(end.decode())
        assert server.cleanup.abandoned == ["QID1"]

    def test_a_refused_message_abandons_its_file(self, tmp_path):
        s = Server(tmp_path, message_size_limit="1000")
        client = s.smtp()
        client.ehlo("x")
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        assert client.data(b"x" * 2000 + b"\r\n")[0] == 552
        assert s.cleanup.abandoned == ["QID1"]
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        assert client.data(b"x\r\n") == (250, b"2.0.0 Ok: queued as QID2")

    def test_no_queue_file_no_recipient(self, server):
        server.cleanup.fail_reserve = True
        raw = server.raw()
        hello(raw)
        raw.cmd("MAIL FROM:<a@example.com>")
        assert raw.cmd("RCPT TO:<alice@mx.example.com>") == \
            "451 4.3.0 Error: queue file write error"
        assert raw.cmd("DATA") == "554 5.5.1 Error: no valid recipients"

    def test_a_submitter_without_reservations_learns_the_id_at_the_end(self, server):
        server.cleanup.reserve = None     # sendmail -bs: maildrop files, IDs at the end
        client = server.smtp()
        client.ehlo("client.example")
        client.mail("a@example.com")
        client.rcpt("alice@mx.example.com")
        assert client.data(b"Subject: hi\r\n\r\nx\r\n") == (250, b"2.0.0 Ok: queued as QID1")
        client.quit()
        header, content = server.cleanup.messages[0]
        assert header["queue_id_placeholder"] == QUEUE_ID_PLACEHOLDER
        assert b" id " + QUEUE_ID_PLACEHOLDER.encode() + b"\n" in content
        assert "QID1: client=localhost[127.0.0.1]" in server.wait_log("disconnect from")


class TestPipelining:
    @pytest.fixture
    def server(self, tmp_path):
        return Server(tmp_path, smtpd_forbid_unauth_pipelining="yes")

    def test_on_by_default_for_every_client(self, tmp_path):
        # As Postfix 3.10 (and 3.7 with the setting): mynetworks is no exemption.
        s = Server(tmp_path, mynetworks="127.0.0.0/8")
        raw = s.raw()
        raw.reply()
        raw.send(b"HELO client.example\r\nNOOP\r\n")
        assert raw.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
        assert raw.file.readline() == b""
        log = s.wait_log("disconnect from localhost[127.0.0.1] helo=0/1 commands=0/1\n")
        assert "improper command pipelining after HELO from localhost[127.0.0.1]: NOOP\\r\\n" \
            in log

    def test_off_when_set_to_no(self, tmp_path):
        s = Server(tmp_path, smtpd_forbid_unauth_pipelining="no")
        raw = s.raw()
        raw.reply()
        raw.send(b"HELO client.example\r\nNOOP\r\n")
        assert [raw.reply(), raw.reply()] == ["250 mx.example.com", "250 2.0.0 Ok"]

    def test_esmtp_client_may_pipeline_mail_and_rcpt(self, server):
        raw = server.raw()
        hello(raw)
        raw.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<alice@mx.example.com>\r\nDATA\r\n")
        assert [raw.reply() for _ in range(3)] == [
            "250 2.1.0 Ok", "250 2.1.5 Ok", "354 End data with <CR><LF>.<CR><LF>"]

    def test_command_after_ehlo_in_the_same_packet(self, server):
        raw = server.raw()
        raw.reply()
        raw.send(b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n")
        assert raw.reply() == "554 5.5.0 Error: SMTP protocol synchronization"
        assert "improper command pipelining after EHLO from localhost[127.0.0.1]: " \
               "MAIL FROM:<a@example.com>\\r\\n" in server.wait_log("improper")

    def test_early_talker(self, server):
        # The server accepts only after the client has talked, so its words
        # are certainly there before the greeting.
        server.accepting.clear()
        socket.create_connection(("127.0.0.1", server.port)).close()   # the accept in progress
        time.sleep(0.2)
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"EHLO client.example\r\n")
        time.sleep(0.1)
        server.accepting.set()
        sock.settimeout(10)
        data = sock.recv(1000)
        assert data.startswith(b"554 5.5.0 Error: SMTP protocol synchronization")
        assert "improper command pipelining after CONNECT" in server.wait_log("improper")


class TestJunkCommands:
    """smtpd_junk_command_limit: past the limit, each NOOP, VRFY, ETRN, RSET,
    HELO or EHLO counts as an error, so smtpd_hard_error_limit ends the session."""

    def test_junk_past_the_limit_leads_to_too_many_errors(self, tmp_path):
        s = Server(tmp_path, smtpd_junk_command_limit="2", smtpd_hard_error_limit="3")
        raw = s.raw()
        raw.reply()
        # Junk 1-3 are free (the count before each is compared to the limit);
        # 4, 5 and 6 are errors 1, 2 and 3.
        for line in ("HELO a", "EHLO b", "NOOP", "RSET", "NOOP"):
            assert raw.cmd(line).startswith("250")
        assert raw.cmd("NOOP") == "250 2.0.0 Ok"
        assert raw.reply() == "421 4.7.0 mx.example.com Error: too many errors"
        s.wait_log("too many errors after NOOP from localhost[127.0.0.1]")

    def test_other_commands_are_not_junk(self, tmp_path):
        s = Server(tmp_path, smtpd_junk_command_limit="1", smtpd_hard_error_limit="2")
        raw = s.raw()
        hello(raw)
        # EHLO was junk 1; RSETs are junk 2 (free), 3 and 4 (errors 1 and 2).
        for _ in range(3):
            assert raw.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
            assert raw.cmd("RCPT TO:<alice@mx.example.com>") == "250 2.1.5 Ok"
            assert raw.cmd("RSET") == "250 2.0.0 Ok"
        assert raw.reply() == "421 4.7.0 mx.example.com Error: too many errors"

    def test_a_queued_message_resets_the_count(self, tmp_path):
        s = Server(tmp_path, smtpd_junk_command_limit="1", smtpd_hard_error_limit="2")
        raw = s.raw()
        hello(raw)                                       # junk 1
        assert raw.cmd("NOOP").startswith("250")         # junk 2: free
        assert raw.cmd("MAIL FROM:<a@example.org>").startswith("250")
        assert raw.cmd("RCPT TO:<alice@mx.example.com>").startswith("250")
        assert raw.cmd("DATA").startswith("354")
        assert raw.cmd("Subject: x\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued")
        for _ in range(3):                               # junk 1, 2, 3: one error
            assert raw.cmd("NOOP") == "250 2.0.0 Ok"
        assert raw.cmd("QUIT") == "221 2.0.0 Bye"


class TestClientPortLogging:
    def test_log_lines_name_the_port(self, tmp_path):
        s = Server(tmp_path, smtpd_client_port_logging="yes")
        raw = s.raw()
        hello(raw)
        port = raw.sock.getsockname()[1]
        raw.cmd("MAIL FROM:<a@example.org>")
        raw.cmd("RCPT TO:<nobody@mx.example.com>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        raw.cmd("QUIT")
        text = s.wait_log(f"disconnect from localhost[127.0.0.1]:{port} ")
        assert f"connect from localhost[127.0.0.1]:{port}\n" in text
        assert f"QID1: client=localhost[127.0.0.1]:{port}\n" in text
        assert f"NOQUEUE: reject: RCPT from localhost[127.0.0.1]:{port}: 550 " in text

    def test_off_by_default(self, server):
        raw = server.raw()
        hello(raw)
        raw.cmd("QUIT")
        text = server.wait_log("disconnect from localhost[127.0.0.1] ")
        assert "connect from localhost[127.0.0.1]\n" in text


class TestRejectFooter:
    """smtpd_reject_footer goes on every 4xx/5xx reply, not only on refusals."""

    FOOTER = r"For help: $client_address:$client_port\n sender=$sender rcpt=$recipient $nosuch"

    def test_every_error_reply_carries_the_footer(self, tmp_path):
        s = Server(tmp_path, smtpd_reject_footer=self.FOOTER)
        raw = s.raw()
        hello(raw)
        port = raw.sock.getsockname()[1]
        assert raw.cmd("BOGUS") == (
            "502-5.5.2 Error: command not recognized\n"
            f"502-5.5.2 For help: 127.0.0.1:{port}\n"
            "502 5.5.2  sender= rcpt= ")
        raw.cmd("MAIL FROM:<s@example.org>")
        raw.cmd("RCPT TO:<alice@mx.example.com>")
        # $recipient is the transaction's last accepted recipient, as in Postfix.
        assert raw.cmd("RCPT TO:<nobody@mx.example.com>").endswith(
            "\n550 5.1.1  sender=s@example.org rcpt=alice@mx.example.com ")
        assert raw.cmd("MAIL FROM:<t@example.org>").startswith(
            "503-5.5.1 Error: nested MAIL command\n503-5.5.1 For help")

    def test_too_many_errors_and_backslash_c(self, tmp_path):
        s = Server(tmp_path, smtpd_reject_footer=r"\c (see $server_name/help)",
                   smtpd_hard_error_limit="1")
        raw = s.raw()
        hello(raw)
        assert raw.cmd("BOGUS") == "502 5.5.2 Error: command not recognized " \
                                   "(see mx.example.com/help)"
        assert raw.reply() == "421 4.7.0 mx.example.com Error: too many errors " \
                              "(see mx.example.com/help)"

    def test_success_replies_have_none(self, tmp_path):
        s = Server(tmp_path, smtpd_reject_footer="footer")
        raw = s.raw()
        assert "footer" not in raw.reply()
        assert "footer" not in raw.cmd("EHLO x") + raw.cmd("NOOP")

    def test_footer_maps_choose_by_reply_text(self, tmp_path):
        (tmp_path / "footers").write_text("/^5/ permanent: call us\n/^4/ try later\n")
        s = Server(tmp_path, smtpd_reject_footer="default footer",
                   smtpd_reject_footer_maps=f"regexp:{tmp_path / 'footers'}")
        raw = s.raw()
        hello(raw)
        assert raw.cmd("BOGUS").endswith("\n502 5.5.2 permanent: call us")
