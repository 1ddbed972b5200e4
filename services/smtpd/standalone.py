"""smtpd's stand-alone mode (`smtpd -S`): one SMTP session on standard input
and output, for `sendmail -bs`, as Postfix's sendmail runs its smtpd.

It runs as the invoking user, not under the master: each accepted message
goes into maildrop like any local submission (pickup, then cleanup), and the
session's lines go to the log under smtpd's name.

A local pipe is not a network client: a script's LF-only lines are SMTP
lines and a lone `.` ends DATA (no smuggling checks, no pipelining checks).
The exit status is 0 only when no message was left unqueued: a transaction
still open at the end of input, or a DATA/BDAT that was not queued, exits
75 (EX_TEMPFAIL) with the reason on standard error, never in silence.

Interface: main(argv) -> exit status
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time

from pymaster.mail import maildrop, queue, records
from pymaster.mail.config import Config, ConfigError, load_config
from pymaster.util import log
from pymaster.util.sysexits import EX_TEMPFAIL, EX_UNAVAILABLE
from services.smtpd.check import Checker, ConfigurationError
from services.smtpd.connection import Connection
from services.smtpd.peer import Peer
from services.smtpd.session import Session, Settings
from services.smtpd.submit import QUEUE_ID_PLACEHOLDER


def main(argv: list[str]) -> int:
    """main - `smtpd -S [-c dir]`: the configuration from -c or $MAIL_CONFIG."""
    config_dir = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else None
    try:
        cfg = load_config(config_dir)
    except ConfigError as e:
        log.setup("smtpd", stderr=True)
        log.fatal(str(e), EX_TEMPFAIL)
    return smtp_on_stdio(cfg)


class MaildropSubmitter:
    """What smtpd's session calls to queue a message, writing to maildrop.

    sendmail -bs runs as the invoking user, so its messages take the local
    submission path (maildrop, pickup, cleanup), as Postfix's do."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def submit(self, header: dict, payload: list) -> dict:
        rcpts = [records.Recipient(r["address"], r.get("orig", "") or "",
                                   r.get("notify", "") or "", r.get("orcpt", "") or "")
                 for r in header.get("recipients", ())]
        attrs = {k: str(v) for k, v in (header.get("attrs") or {}).items()
                 if v not in (None, "", False)}
        attrs.update(uid=str(os.getuid()), rewrite_context="local")
        try:
            with queue.create(maildrop.MAILDROP, mode=maildrop.MAILDROP_MODE) as w:
                content = b"".join(bytes(p) if not isinstance(p, str) else p.encode()
                                   for p in payload)
                content = content.replace(QUEUE_ID_PLACEHOLDER.encode(), w.queue_id.encode(), 1)
                w.write_envelope(time.time(), header.get("sender", ""), rcpts, attrs)
                w.write_content([content])
                queue_id = w.commit()
        except OSError as e:
            log.warning(f"create file maildrop: {e.strerror or e}")
            return {"status": "defer", "dsn": "4.3.0", "reason": "Error: queue file write error"}
        maildrop.wake_pickup(self.cfg)
        return {"status": "ok", "queue_id": queue_id}

    def close(self) -> None:
        pass


def smtp_on_stdio(cfg: Config) -> int:
    """smtp_on_stdio - one SMTP session over standard input/output."""
    try:
        queue.enter_spool(cfg)
    except OSError as e:
        log.fatal(f"chdir {cfg.get('queue_directory')}: {e.strerror}", EX_TEMPFAIL)
    if not os.access("maildrop", os.W_OK | os.X_OK):
        log.fatal("-bs: no permission to write the maildrop queue", EX_UNAVAILABLE)
    settings = Settings.from_config(cfg)
    # A local user's script writes the whole dialogue at once: not an abuser.
    settings.forbid_unauth_pipelining = False
    settings.bare_newline = "normalize"
    settings.dot_lf_ends = True
    settings.proxy = None       # as Postfix: a local submission skips smtpd_proxy_filter
    settings.milters = None     # its mail goes through pickup: non_smtpd_milters, in cleanup
    # Session lines go to the log only, under smtpd's name as Postfix logs them.
    log.setup("smtpd", cfg)
    checker = Checker(cfg)
    try:
        checker.open_tables()
    except ConfigurationError as e:
        log.fatal(str(e), EX_TEMPFAIL)
    # The session speaks to a socket; threads copy it to and from stdin/stdout.
    ours, theirs = socket.socketpair()
    stdin_done = threading.Event()
    threading.Thread(target=_copy_stdin, args=(theirs, stdin_done), daemon=True).start()
    out = threading.Thread(target=_copy_stdout, args=(theirs,))
    out.start()

    async def converse() -> Session:
        loop = asyncio.get_running_loop()
        _, conn = await loop.connect_accepted_socket(Connection, ours)
        session = Session(conn, Peer("localhost", "127.0.0.1"), settings,
                          # submit() only: Session.reserves is False
                          checker, MaildropSubmitter(cfg))  # type: ignore[arg-type]
        running = asyncio.ensure_future(session.run())
        await _end_of_input(conn, ours, stdin_done, running)
        await running
        return session

    session = asyncio.run(converse())
    out.join(timeout=5)
    reason = unqueued(session)
    if reason:
        sys.stderr.write(f"sendmail: fatal: {reason}\n")
        return EX_TEMPFAIL
    return 0


def unqueued(session: Session) -> str:
    """unqueued - why a message of this session was not queued; "" when none was lost."""
    if session.mail is not None:
        return ("message not queued: the session ended inside a mail transaction "
                f"(at {session.where})")
    for verb in ("data", "bdat"):
        ok, total = session.counts.get(verb, (0, 0))
        if ok < total:
            return f"{total - ok} message(s) not queued: {verb.upper()} was refused"
    return ""


async def _end_of_input(conn, sock, stdin_done, session) -> None:
    """_end_of_input - tell the session about end of input once it read everything.

    Half-closing the socket would make the transport close at once, with
    commands still unread; so the end is signalled only when nothing is left."""
    while not session.done():
        await asyncio.sleep(0.05)
        if not stdin_done.is_set() or conn.pending():
            continue
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                continue
        except BlockingIOError:
            pass
        except OSError:
            return
        conn.eof_received()
        return


def _copy_stdin(sock, done) -> None:
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                break
            sock.sendall(data)
    except OSError:
        pass
    done.set()


def _copy_stdout(sock) -> None:
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            os.write(1, data)
    except OSError:
        pass
