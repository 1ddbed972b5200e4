"""The fault suite's load, sink and ledger: who got 250, who got what.

A `Load` sends messages, each carrying a unique token (in Message-ID:,
Subject: and the body), from concurrent smtplib sessions and, for every
PICKUP_EVERY-th message, through `sendmail` (maildrop, pickup). A client
that gets a temporary failure or loses the connection tries the same token
again, as a real client does; the ledger notes whether an attempt was
*ambiguous*, that is whether the end of DATA was sent without a 250 coming
back (cleanup or smtpd killed after the commit: "451 and delivered anyway").
A duplicate is legitimate only for such a token, or for a delivery that was
in flight when its agent or qmgr was killed (an agent that dies after the
mailbox write and before its report is asked again, in Postfix too).

`Sink` is a minimal SMTP server on loopback that records each token it
receives; `tally()` counts tokens in Maildirs, in the sink and, for
discard, in the log (message-id= joined to status=sent on the queue ID).

Interface:
    Load(inst, sessions, messages, recipients, pickup_every).run(deadline)
    load.accepted / load.ambiguous / load.given_up / load.finished()
    Sink().start() / .stop() / .tokens (Counter)
    maildir_tokens(base) -> Counter
    discard_tokens(log_text) -> Counter
    queue_files(queue_dir) -> list[str], corrupt_files(queue_dir) -> list[str]
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import socketserver
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

TOKEN = re.compile(rb"FAULT-[0-9a-f]{8}-\d+")


def make_token(run: str, n: int) -> str:
    return f"FAULT-{run}-{n}"


def message_for(token: str, sender: str, rcpt: str) -> bytes:
    return (f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {token}\r\n"
            f"Message-ID: <{token}@faults.example>\r\n\r\n"
            f"token {token}\r\n" + "filler line for some size\r\n" * 8).encode()


class Load:
    """MESSAGES tokens over SESSIONS threads; the ledger of what the clients saw."""

    def __init__(self, inst, run: str, sessions: int, messages: int,
                 recipients: list[str], pickup_every: int = 0,
                 sender: str = "load@faults.example") -> None:
        self.inst = inst
        self.sessions = sessions
        self.recipients = recipients
        self.pickup_every = pickup_every
        self.sender = sender
        self.todo = [make_token(run, n) for n in range(messages)]
        self.rcpt_of = {t: recipients[n % len(recipients)] for n, t in enumerate(self.todo)}
        self.accepted: set[str] = set()
        self.ambiguous: Counter[str] = Counter()     # token -> DATA ends without 250
        self.given_up: set[str] = set()
        self.replies: Counter[str] = Counter()      # "451 4.3.0" ... what clients heard
        self._lock = threading.Lock()
        self._next = 0

    def finished(self) -> int:
        with self._lock:
            return len(self.accepted) + len(self.given_up)

    def _take(self) -> str | None:
        with self._lock:
            if self._next >= len(self.todo):
                return None
            token = self.todo[self._next]
            self._next += 1
            return token

    def _note(self, what: str) -> None:
        with self._lock:
            self.replies[what] += 1

    def run(self, deadline: float) -> None:
        """run - send everything, each token until 250 or DEADLINE (monotonic)."""
        threads = [threading.Thread(target=self._session_loop, args=(deadline,), daemon=True)
                   for _ in range(self.sessions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + 60)

    def _session_loop(self, deadline: float) -> None:
        conn: smtplib.SMTP | None = None
        n = 0
        while (token := self._take()) is not None:
            n += 1
            via_pickup = self.pickup_every and n % self.pickup_every == 0
            attempt = 0
            while True:
                attempt += 1
                if via_pickup:
                    ok = self._sendmail(token)
                else:
                    ok, conn = self._smtp(conn, token)
                if ok:
                    with self._lock:
                        self.accepted.add(token)
                    break
                if time.monotonic() > deadline:
                    with self._lock:
                        self.given_up.add(token)
                    break
                time.sleep(min(2.0, 0.1 * attempt))
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass

    def _sendmail(self, token: str) -> bool:
        rcpt = self.rcpt_of[token]
        try:
            done = self.inst.command("sendmail", "-i", "-f", self.sender, rcpt,
                                     input=message_for(token, self.sender, rcpt), timeout=60)
        except subprocess.TimeoutExpired:
            self._note("sendmail timeout")
            return False
        self._note(f"sendmail exit {done.returncode}")
        return done.returncode == 0

    def _smtp(self, conn: smtplib.SMTP | None, token: str) -> tuple[bool, smtplib.SMTP | None]:
        """_smtp - one attempt; whether it got 250, and the session to keep."""
        rcpt = self.rcpt_of[token]
        in_data = False
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", self.inst.smtp_port, timeout=60)
                conn.ehlo("client.faults.example")
            code, text = conn.mail(self.sender)
            if code != 250:
                self._note(f"MAIL {code} {text[:5].decode(errors='replace')}")
                conn.rset()
                return False, conn
            code, text = conn.rcpt(rcpt)
            if code not in (250, 251):
                self._note(f"RCPT {code} {text[:5].decode(errors='replace')}")
                conn.rset()
                return False, conn
            in_data = True
            code, text = conn.data(message_for(token, self.sender, rcpt))
            if code == 250:
                self._note("DATA 250")
                return True, conn
            self._note(f"DATA {code} {text[:5].decode(errors='replace')}")
            with self._lock:
                self.ambiguous[token] += 1
            return False, _closed(conn)
        except smtplib.SMTPDataError as e:        # the DATA command itself refused
            self._note(f"DATA {e.smtp_code}")
            return False, _closed(conn)
        except (smtplib.SMTPException, OSError) as e:
            self._note(f"{'in DATA' if in_data else 'session'}: {type(e).__name__}")
            if in_data:
                with self._lock:
                    self.ambiguous[token] += 1
            return False, _closed(conn)


def _closed(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass
    return None


class _SinkHandler(socketserver.StreamRequestHandler):
    """A plain SMTP server: no extensions, every message taken, tokens counted."""

    def handle(self) -> None:
        self._say(b"220 sink.faults.example ESMTP")
        while True:
            line = self.rfile.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"DATA":
                self._say(b"354 go ahead")
                body = []
                while (chunk := self.rfile.readline()) and chunk.rstrip(b"\r\n") != b".":
                    body.append(chunk)
                if not chunk:
                    return          # cut off mid-message: not taken
                self.server.took(b"".join(body))        # type: ignore[attr-defined]
                self._say(b"250 2.0.0 taken")
            elif verb == b"QUIT":
                self._say(b"221 bye")
                return
            elif verb in (b"EHLO", b"HELO"):
                self._say(b"250 sink.faults.example")
            else:
                self._say(b"250 ok")

    def _say(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")
        self.wfile.flush()


class Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _SinkHandler)
        self.tokens: Counter[str] = Counter()
        self._lock = threading.Lock()

    def took(self, data: bytes) -> None:
        with self._lock:
            for t in set(TOKEN.findall(data)):
                self.tokens[t.decode()] += 1

    def start(self) -> "Sink":
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def maildir_tokens(base: Path) -> Counter[str]:
    """maildir_tokens - token -> number of Maildir files (new/ and cur/) under BASE."""
    found: Counter[str] = Counter()
    for root, _, files in os.walk(base):
        if os.path.basename(root) not in ("new", "cur"):
            continue
        for f in files:
            data = Path(root, f).read_bytes()
            for t in set(TOKEN.findall(data)):
                found[t.decode()] += 1
    return found


def discard_tokens(log_text: str, domain: str) -> Counter[str]:
    """discard_tokens - token -> deliveries to DOMAIN that the log says were sent."""
    token_of = dict(re.findall(r"\]: (\w+): message-id=<(FAULT-[0-9a-f]{8}-\d+)@", log_text))
    found: Counter[str] = Counter()
    for qid in re.findall(rf"\]: (\w+): to=<[^>]*@{re.escape(domain)}>.*status=sent", log_text):
        if qid in token_of:
            found[token_of[qid]] += 1
    return found


def queue_files(queue_dir: Path, complete: bool = True) -> list[str]:
    """queue_files - messages still queued: maildrop files and queue files with
    the completion mark (COMPLETE), or the rest: files a killed cleanup or
    smtpd left unfinished, which no 250 was said for (the queue repair's work)."""
    out = []
    for q in ("maildrop", "incoming", "active", "deferred", "hold"):
        for root, _, files in os.walk(queue_dir / q):
            for f in files:
                path = os.path.join(root, f)
                try:
                    marked = q == "maildrop" or bool(os.stat(path).st_mode & 0o100) \
                        and not f.startswith(".")
                except FileNotFoundError:
                    continue
                if marked == complete:
                    out.append(path)
    return out


def corrupt_files(queue_dir: Path) -> list[str]:
    return [f for _, _, files in os.walk(queue_dir / "corrupt") for f in files]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
