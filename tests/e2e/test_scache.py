"""scache: one SMTP connection carries mail that several smtp processes deliver.

A small SMTP sink in the test counts the TCP connections it accepts and
records which recipients each one carried. The smtp service runs with
maxproc 2 and max_use 1, so every delivery is made by a new smtp process;
with scache in master.cf the connection one process opened is handed to
the next as a descriptor, and the sink sees one connection for all of the
messages, and scache's statistics line counts the hits. Without scache
each process has only its own cache, and every message needs a new
connection."""

from __future__ import annotations

import re
import smtplib
import socketserver
import threading

from tests.support.instance import Instance, free_port
from tests.support.wait import wait_until

SINK_HOST = "127.0.0.2"           # not this host's own address: no mail loop
SMTP_ONE_USE = "smtp      unix  -       -       n       -       2       smtp -o max_use=1"


class Sink(socketserver.ThreadingTCPServer):
    """An SMTP server that accepts everything and remembers each connection's
    recipients."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        self.connections: list[list[str]] = []
        self.lock = threading.Lock()
        super().__init__((SINK_HOST, port), SinkSession)


class SinkSession(socketserver.StreamRequestHandler):
    server: Sink

    def handle(self) -> None:
        rcpts: list[str] = []
        with self.server.lock:
            self.server.connections.append(rcpts)
        self.reply("220 sink.test ESMTP")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.reply("250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME")
            elif verb == b"RCPT":
                rcpts.append(line.decode().split("<", 1)[1].split(">", 1)[0])
                self.reply("250 2.1.5 Ok")
            elif verb == b"DATA":
                self.reply("354 go ahead")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                self.reply("250 2.0.0 Ok: queued")
            elif verb == b"QUIT":
                self.reply("221 2.0.0 Bye")
                return
            else:                       # HELO, MAIL, RSET, NOOP
                self.reply("250 2.0.0 Ok")

    def reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")


def run_sink() -> tuple[Sink, int]:
    port = free_port()
    sink = Sink(port)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    return sink, port


def settings(port: int, **extra: str) -> dict[str, str]:
    out = {"myhostname": "a.test", "inet_interfaces": "127.0.0.1",
           "relay_domains": "sink.example",
           "transport_maps": f"inline:{{ sink.example=smtp:[{SINK_HOST}]:{port} }}",
           "smtp_tls_security_level": "none",
           # A new smtp process per message takes a while to start on a busy machine.
           "smtp_connection_cache_time_limit": "60s", "connection_cache_ttl_limit": "60s",
           "connection_cache_status_update_time": "1s"}
    out.update(extra)
    return out


def deliver_one_by_one(inst: Instance, count: int) -> dict[str, str]:
    """deliver_one_by_one - COUNT messages, each sent when the one before is
    delivered; recipient -> the pid of the smtp process that delivered it."""
    pids = {}
    for n in range(count):
        rcpt = f"user{n}@sink.example"
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.sendmail("alice@example.com", [rcpt], f"Subject: {n}\n\nhello\n".encode())
        m = inst.wait_for_log(rf"postfix/smtp\[(\d+)\]: \w+: to=<{rcpt}>, .*status=sent")
        pids[rcpt] = m.group(1)
    return pids


def test_one_connection_carries_mail_of_several_smtp_processes(tmp_path):
    sink, port = run_sink()
    try:
        main_cf = settings(port, smtp_connection_cache_destinations=f"[{SINK_HOST}]:{port}",
                           smtp_connection_cache_on_demand="no")
        with Instance(tmp_path, main_cf=main_cf, master_cf_extra=SMTP_ONE_USE) as inst:
            pids = deliver_one_by_one(inst, 4)
            assert len(set(pids.values())) >= 2, pids
            with sink.lock:
                connections = [list(c) for c in sink.connections]
            carried = [c for c in connections if len({pids[r] for r in c}) >= 2]
            assert carried, (connections, pids)
            assert len(connections) < len(pids)
            # scache logs its statistics per interval (1 s here): an interval
            # may hold only the first lookup's miss; one holds the hit.
            inst.wait_for_log(r"postfix/scache\[\d+\]: statistics: domain lookup "
                              r"hits=[1-9]\d* miss=\d+ success=\d+%")
            inst.wait_for_log(r"postfix/scache\[\d+\]: statistics: max simultaneous "
                              r"domains=1 addresses=1 connection=1")
        log = inst.log_text()
        assert not re.search(r"(smtp|scache)\[\d+\]: (warning|fatal|panic)", log), log
    finally:
        sink.shutdown()
        sink.server_close()


def test_without_scache_each_process_connects_itself(tmp_path):
    sink, port = run_sink()
    try:
        main_cf = settings(port, smtp_connection_cache_destinations=f"[{SINK_HOST}]:{port}")
        with Instance(tmp_path, main_cf=main_cf,
                      master_cf_extra=SMTP_ONE_USE + "\n# no scache") as inst:
            master_cf = inst.config_dir / "master.cf"
            master_cf.write_text(re.sub(r"(?m)^scache\s.*$", "", master_cf.read_text()))
            assert inst.postfix("reload").returncode == 0
            inst.wait_for_log(r"reload -- version")
            pids = deliver_one_by_one(inst, 3)
            wait_until(lambda: len(sink.connections) == 3)
            assert len(set(pids.values())) == 3
        assert "postfix/scache" not in inst.log_text().split("reload -- version")[-1]
    finally:
        sink.shutdown()
        sink.server_close()
