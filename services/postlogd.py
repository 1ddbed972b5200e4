"""postlogd: the logging service that writes maillog_file, as Postfix's postlogd(8).

master.cf: `postlog unix-dgram n - n - 1 postlogd`. The master binds the
unix-domain datagram socket `$queue_directory/public/$postlog_service_name`
(mode 0666: whoever may enter public/ may log, as with Postfix), hands it
over as descriptor 3, and starts this program when a record waits there.

Protocol: one datagram is one record, a whole log line as pymaster.util.log
formats it, without the newline:

    Nov 28 20:03:44 HOST postfix/sendmail[1234]: fatal: ...

postlogd appends each record, with a newline, to maillog_file. Records are
never trusted to be well formed, since any local user in the setgid_group
can send one: control characters (a newline would forge a second line)
become `?` (tab, CR and LF a space), a record longer than RECORD_LIMIT
bytes is cut at a character boundary, and a record without the
`STAMP HOST TAG[PID]: ` shape is still written, behind postlogd's own tag
and `warning: malformed log record: `, so that no text is lost. The records
that wait at one wake-up are written with one write().

maillog_file is opened before the privilege drop (it is root's, mode
maillog_file_permissions when created); `/dev/stdout` is the inherited
descriptor (`make run`). After `postfix logrotate` renames the file,
postlogd reopens the name if it may (an unprivileged run); otherwise the
master's reload, which logrotate asks for, replaces it with one that opens
the new file. postlogd's own log lines go to the same file directly.

Lifetime: exits after max_idle seconds without a record, on reload or stop
(end of file on the alive pipe: the records still waiting stay in the
socket for its successor), or on SIGTERM. A write that takes longer than
postlogd_watchdog_timeout (a hung file system) ends the process (SIGALRM),
as Postfix's watchdog does. A write that fails (a full disk) drops the
records with one warning (to syslog or standard error, since the file
cannot take it) and, once writing works again, one line with the count.

Interface:
    sanitise(record: bytes) -> bytes    the line to append, newline included
    Postlogd(sock, writer).drain() -> int   write what waits; how many records
    pre_jail(svc) -> Postlogd, run(svc), main()   the body of libexec/postlogd
"""

from __future__ import annotations

import re
import select
import signal
import socket
import time

from pymaster.master import service
from pymaster.util import log

RECORD_LIMIT = log.RECORD_LIMIT
BATCH = 256                 # records read before one write
SHAPE = re.compile(rb"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \S+\[\d+\]: ")
# Bytes 0-31 and 127 become "?", except white space, which becomes a blank.
CONTROLS = bytes(range(32)) + b"\x7f"
PRINTABLE = bytes.maketrans(CONTROLS, bytes(0x20 if c in b"\t\n\r" else 0x3F
                                             for c in CONTROLS))


def sanitise(record: bytes) -> bytes:
    """sanitise - RECORD as one safe line of maillog_file, newline included."""
    record = record.rstrip(b"\r\n")
    if len(record) > RECORD_LIMIT:
        cut = RECORD_LIMIT
        # Not inside a UTF-8 sequence: continuation bytes are 10xxxxxx.
        while cut > 0 and record[cut] & 0xC0 == 0x80:
            cut -= 1
        record = record[:cut]
    record = record.translate(PRINTABLE)
    if not SHAPE.match(record):
        text = record.decode("utf-8", "surrogateescape")
        own = log.format_line("warning: malformed log record: " + text)
        record = own.encode("utf-8", "surrogateescape")
    return record + b"\n"


class Postlogd:
    """Reads records from the datagram socket and appends them to the writer."""

    def __init__(self, sock: socket.socket, writer: log.MaillogWriter) -> None:
        self.sock = sock
        self.writer = writer
        self.dropped = 0            # records lost since writing began to fail

    def drain(self) -> int:
        """drain - append the records that wait (at most BATCH) in one write."""
        lines = []
        for _ in range(BATCH):
            try:
                # One byte more than the limit shows sanitise that it was cut.
                record = self.sock.recv(RECORD_LIMIT + 1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            if record:
                lines.append(sanitise(record))
        if lines:
            # A rename we cannot follow leaves the old file: the reload that
            # `postfix logrotate` asks for replaces this process.
            self.writer.follow()
            self._write(lines)
        return len(lines)

    def _write(self, lines: list[bytes]) -> None:
        """_write - LINES to the file; when that fails (a full disk), one
        warning, the records dropped, and a count once writing works again."""
        if self.writer.write(b"".join(lines)):
            if self.dropped:
                log.warning(f"{self.dropped} log records were dropped: "
                            f"{self.writer.path} could not be written")
                self.dropped = 0
            return
        if not self.dropped:
            # Goes wherever pymaster.util.log can still write (syslog, stderr).
            log.warning(f"write {self.writer.path}: {self.writer.error}: "
                        f"dropping log records until it can be written again")
        self.dropped += len(lines)


def serve(svc: service.Service, daemon: Postlogd) -> None:
    """serve - drain records until max_idle, a reload or a stop."""
    max_idle = svc.cfg.time("max_idle")
    watchdog = svc.cfg.time("postlogd_watchdog_timeout")
    poller = select.poll()
    poller.register(daemon.sock.fileno(), select.POLLIN)
    poller.register(service.ALIVE_FD, select.POLLIN)
    idle_since = time.monotonic()
    while not svc.stopping:
        left = max_idle - (time.monotonic() - idle_since)
        if left <= 0:
            break
        ready = dict(poller.poll(int(left * 1000) + 1))
        if service.ALIVE_FD in ready and svc.master_gone():
            break
        if daemon.sock.fileno() not in ready:
            continue
        svc.busy = True
        signal.setitimer(signal.ITIMER_REAL, max(watchdog, 1))
        try:
            daemon.drain()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            svc.busy = False
        idle_since = time.monotonic()


def open_writer(svc: service.Service) -> log.MaillogWriter:
    """open_writer - maillog_file, opened while we may still create it."""
    path = svc.cfg.get("maillog_file")
    if not path:
        log.fatal("open logfile: empty maillog_file parameter")
    try:
        return log.MaillogWriter(path, log.file_mode(svc.cfg.get("maillog_file_permissions")))
    except OSError as e:
        log.fatal(f"open logfile {path}: {e.strerror}")


def pre_jail(svc: service.Service) -> Postlogd:
    """pre_jail - maillog_file opened, the socket taken, the time zone read
    (it is read on first use, and a chroot may hide it)."""
    writer = open_writer(svc)
    log.serve_postlog(writer)
    try:
        sock = socket.socket(fileno=service.LISTEN_FD)
    except OSError as e:
        log.fatal(f"postlog socket on descriptor {service.LISTEN_FD}: {e.strerror}")
    log.format_line("")
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    return Postlogd(sock, writer)


def run(svc: service.Service) -> None:
    serve(svc, svc.enter_jail(pre_jail))


def main() -> None:
    service.main("postlogd", run)
