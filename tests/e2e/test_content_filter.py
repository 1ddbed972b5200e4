"""After-queue content filters end to end (Postfix's FILTER_README).

The receiving program (smtpd, pickup) records its content_filter in the
queue file; qmgr then sends every recipient to that transport:nexthop
instead of the resolved one. The filter gives the mail back to a receiver
that has no content_filter, and it is delivered normally.

  * the simple filter: smtpd `-o content_filter=filter:dummy`, a pipe(8)
    service running a program that adds a header and re-injects with
    `sendmail -G -i -f SENDER -- RECIPIENT...`
  * the advanced filter: `content_filter = scan:[127.0.0.1]:PORT` in
    main.cf, an smtp(8) transport to an SMTP filter (here a small one in
    the test), re-injection into a second smtpd with `-o content_filter=`
    and `-o receive_override_options=no_address_mappings`.

As root the pipe program runs as nobody, who cannot reach the virtualenv's
Python under /root, so it re-injects over SMTP (swaks) into that second
smtpd, as FILTER_README's advanced example does.
"""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socketserver
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest

from tests.support.instance import BIN, ROOT, Instance, free_port

pytestmark = pytest.mark.skipif(
    not (ROOT / "libexec" / "pipe").exists() or not (ROOT / "libexec" / "virtual").exists(),
    reason="needs the pipe and virtual services")

AS_ROOT = os.geteuid() == 0
MARK = "X-Content-Filtered: by the test filter"


@pytest.fixture
def tmp():
    """tmp - a directory unprivileged services can always reach (pytest's base is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pymaster-filter-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def reinjection_smtpd(port: int) -> str:
    """reinjection_smtpd - the master.cf entry for the unfiltered way back in."""
    return (f"127.0.0.1:{port} inet n - n - - smtpd\n"
            f"  -o content_filter=\n"
            f"  -o receive_override_options=no_address_mappings\n")


def with_smtpd_options(inst: Instance, options: str) -> None:
    """with_smtpd_options - add `-o` OPTIONS to the instance's public smtpd entry."""
    path = inst.config_dir / "master.cf"
    text = path.read_text()
    pattern = rf"(?m)^(127\.0\.0\.1:{inst.smtp_port}\s+inet\s.*smtpd)$"
    assert re.search(pattern, text), "the shipped master.cf has no smtpd entry"
    path.write_text(re.sub(pattern, lambda m: m.group(1) + "\n  " + options, text, count=1))


def send(inst: Instance, sender: str, rcpts: list[str], body: str) -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


# -- the simple filter: pipe(8) and sendmail ------------------------------------------

def filter_program(tmp: Path, back_port: int) -> Path:
    """filter_program - `filter -f SENDER -- RCPT...`: mark the message and put it back."""
    if AS_ROOT:
        if not os.path.exists("/usr/bin/swaks"):
            pytest.skip("as root the filter program needs swaks to re-inject")
        reinject = textwrap.dedent(f"""\
            [ "$1" = -f ] && {{ sender="$2"; shift 2; }}
            [ "$1" = -- ] && shift
            to=$(echo "$@" | tr ' ' ',')
            /usr/bin/swaks --silent 2 --server 127.0.0.1 --port {back_port} \\
                --from "$sender" --to "$to" --data - < "$out"
            """)
    else:
        reinject = f'{BIN / "sendmail"} -G -i "$@" < "$out"\n'
    program = tmp / "filter"
    program.write_text("#!/bin/sh\n"
                       f"out={tmp}/work/msg.$$\n"
                       f"{{ echo '{MARK}'; cat; }} > \"$out\" || exit 75\n"
                       + reinject +
                       "status=$?\n"
                       "rm -f \"$out\"\n"
                       "exit $status\n")
    program.chmod(0o755)
    work = tmp / "work"
    work.mkdir()
    work.chmod(0o777)
    return program


class TestPipeFilter:
    def test_mail_passes_the_filter_and_is_delivered_marked(self, tmp):
        inst = Instance(tmp, start=False)
        back_port = free_port()
        program = filter_program(tmp, back_port)
        with_smtpd_options(inst, "-o content_filter=filter:dummy")
        with (inst.config_dir / "master.cf").open("a") as f:
            f.write(f"filter unix - n n - 10 pipe\n"
                    f"  flags=Rq user=nobody null_sender=\n"
                    f"  argv={program} -f ${{sender}} -- ${{recipient}}\n")
            f.write(reinjection_smtpd(back_port))
        with inst.start():
            send(inst, "client@localhost", ["user@localhost"],
                 "Subject: filter me\n\nplain text\n")
            inst.wait_for_log(r"to=<user@localhost>, relay=filter, .*status=sent "
                              r"\(delivered via filter service\)")
            # The delivery agent logs after the file is in place: wait for its line.
            inst.wait_for_log(r"to=<user@localhost>, relay=virtual, .*status=sent")
            message = inst.maildir_messages(inst.mailbox_dir / "localhost" / "user")[0]
            log = inst.log_text()
        assert MARK.encode() in message and b"Subject: filter me" in message
        # Delivered once, after the filter: the re-injected copy was not filtered again.
        assert len(re.findall(r"relay=filter,", log)) == 1

    def test_without_the_smtpd_option_mail_is_not_filtered(self, tmp):
        with Instance(tmp) as inst:
            send(inst, "client@localhost", ["user@localhost"], "Subject: plain\n\nx\n")
            message = inst.maildir_messages(inst.mailbox_dir / "localhost" / "user")[0]
            assert "relay=filter" not in inst.log_text()
        assert MARK.encode() not in message


# -- the advanced filter: smtp(8) to an SMTP filter ---------------------------------------

class FilterHandler(socketserver.StreamRequestHandler):
    """A minimal SMTP content filter: accept, mark, re-inject, then say 250."""

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self) -> None:
        sender, rcpts = "", []
        self.reply("220 filter.test ESMTP")
        while True:
            line = self.rfile.readline().decode(errors="replace").rstrip("\r\n")
            verb = line[:4].upper()
            if not line or verb == "QUIT":
                self.reply("221 bye")
                return
            if verb in ("EHLO", "HELO"):
                self.reply("250 filter.test")
            elif verb == "MAIL":
                sender, rcpts = re.search(r"<(.*?)>", line).group(1), []
                self.reply("250 ok")
            elif verb == "RCPT":
                rcpts.append(re.search(r"<(.*?)>", line).group(1))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go ahead")
                self.reply(self.server.pass_on(sender, rcpts, self.read_data()))
            else:
                self.reply("250 ok")

    def read_data(self) -> bytes:
        lines = []
        while True:
            line = self.rfile.readline()
            if line in (b".\r\n", b".\n", b""):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b"..") else line)


class SmtpFilter(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, back_port: int) -> None:
        super().__init__(("127.0.0.1", 0), FilterHandler)
        self.back_port = back_port
        self.seen: list[tuple[str, list[str]]] = []

    def pass_on(self, sender: str, rcpts: list[str], data: bytes) -> str:
        self.seen.append((sender, rcpts))
        try:
            with smtplib.SMTP("127.0.0.1", self.back_port, timeout=30) as s:
                s.sendmail(sender, rcpts, MARK.encode() + b"\r\n" + data)
        except (OSError, smtplib.SMTPException) as e:
            return f"451 4.3.0 re-injection failed: {e}"
        return "250 2.0.0 Ok: filtered"


@pytest.fixture
def smtp_filter():
    back_port = free_port()
    server = SmtpFilter(back_port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(not (ROOT / "libexec" / "smtp").exists(), reason="needs the smtp client")
class TestSmtpFilter:
    def test_mail_goes_through_the_smtp_filter_and_comes_back(self, tmp, smtp_filter):
        port = smtp_filter.server_address[1]
        inst = Instance(tmp, main_cf={"content_filter": f"scan:[127.0.0.1]:{port}"},
                        master_cf_extra=("scan unix - - n - 10 smtp\n"
                                         + reinjection_smtpd(smtp_filter.back_port)))
        with inst:
            send(inst, "client@localhost", ["user@localhost"], "Subject: scan me\n\nx\n")
            inst.wait_for_log(rf"to=<user@localhost>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                              rf"{port}, .*status=sent")
            message = inst.maildir_messages(inst.mailbox_dir / "localhost" / "user")[0]
        assert smtp_filter.seen == [("client@localhost", ["user@localhost"])]
        assert MARK.encode() in message and b"Subject: scan me" in message
