"""flush: the fast flush service (Postfix's flush(8)).

For each destination that `fast_flush_domains` lists (default
`$relay_domains`, parent domains matching as parent_domain_matches_subdomains
says), a log file `flush/SITE` in the queue directory holds the queue IDs of
messages deferred for it, one per line. qmgr adds a message's ID for each
deferred recipient's domain when it moves the message to deferred/. A
request to flush SITE (SMTP `ETRN SITE`, `postqueue -s SITE`, `sendmail
-qRSITE`) moves the listed messages that are still in deferred/ to
incoming/ and wakes qmgr, which revives dead destinations and delivers them
at once: no walk over the whole deferred queue. The log is emptied; what is
deferred again is logged again.

Log upkeep, on the master's wakeup (`flush unix n - n 1000? 0 flush`) and
on `refresh` requests: a non-empty log that was not read for
`fast_flush_refresh_time` is flushed anyway (so it cannot grow without
bound), and an empty one left untouched for `fast_flush_purge_time` is
deleted. `purge` (postqueue -f, sendmail -q, postfix flush) flushes every
non-empty log.

Requests and answers: see pymaster/mail/flush_client.py. Each log is locked
(flock) while it is appended to or read and emptied, so any number of flush
processes may share the directory. A log's access time records its last
read (set explicitly: relatime mounts would not).

Interface:
    FastFlush(cfg, wake=...).handle(header) -> reply header
    log_path(site) -> the log file of SITE, relative to the queue directory
    main()   the body of libexec/flush
"""

from __future__ import annotations

import fcntl
import os
import time
from typing import Callable

from pymaster.mail import endpoints, queue
from pymaster.mail.config import Config
from pymaster.mail.domains import DomainList
from pymaster.mail.flush_client import BAD, DENY, OK, valid_site
from pymaster.master import service
from pymaster.util import ipc, log

FLUSH_DIR = "flush"


def log_path(site: str) -> str:
    """log_path - where SITE's log lives (SITE is valid_site and lower case)."""
    return os.path.join(FLUSH_DIR, site)


class FastFlush:
    """Per-destination logs of deferred mail, and flushing them."""

    def __init__(self, cfg: Config, wake: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.domains = DomainList(cfg, "fast_flush_domains")
        self.refresh_time = float(cfg.time("fast_flush_refresh_time"))
        self.purge_time = float(cfg.time("fast_flush_purge_time"))
        self.wake = wake or (lambda: None)
        self.clock = clock

    # -- requests ----------------------------------------------------------
    def handle(self, header: dict) -> dict:
        """handle - one request; the reply header."""
        op = header.get("op")
        if op in ("add", "send_site"):
            site = str(header.get("site", "")).lower()
            if not valid_site(site):
                return {"status": BAD}
            if not self.eligible(site):
                return {"status": DENY}
            if op == "add":
                queue_id = str(header.get("queue_id", ""))
                if not queue.is_queue_id(queue_id):
                    return {"status": BAD}
                return {"status": self.add(site, queue_id)}
            return {"status": self.send_site(site)}
        if op == "send_file":
            queue_id = str(header.get("queue_id", ""))
            if not queue.is_queue_id(queue_id):
                return {"status": BAD}
            if self._requeue(queue_id):
                self.wake()
            return {"status": OK}
        if op in ("refresh", "wakeup"):
            self.refresh(everything=False)
            return {"status": OK}
        if op == "purge":
            self.refresh(everything=True)
            return {"status": OK}
        return {"status": BAD, "reason": f"unknown request: {op}"}

    def eligible(self, site: str) -> bool:
        return self.domains.match(site.strip("[]")) or self.domains.match(site)

    def add(self, site: str, queue_id: str) -> str:
        """add - append QUEUE_ID to SITE's log."""
        path = log_path(site)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            log.warning(f"{queue_id}: open fast flush logfile {path}: {e.strerror}")
            return BAD
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{queue_id}\n".encode())
        except OSError as e:
            log.warning(f"write fast flush logfile {path}: {e.strerror}")
        finally:
            os.close(fd)
        return OK

    def send_site(self, site: str) -> str:
        """send_site - requeue what SITE's log lists; wake qmgr if anything moved."""
        if self._send_path(log_path(site)):
            self.wake()
        return OK

    # -- the logs ----------------------------------------------------------
    def _send_path(self, path: str) -> int:
        """_send_path - requeue every message PATH lists, empty it; how many moved."""
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning(f"open fast flush logfile {path}: {e.strerror}")
            return 0
        moved = 0
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with os.fdopen(os.dup(fd), "rb") as f:
                text = f.read().decode("ascii", "replace")
            seen: set[str] = set()
            for queue_id in text.split():
                if queue_id in seen:
                    continue
                seen.add(queue_id)
                if not queue.is_queue_id(queue_id):
                    log.warning(f'bad queue id "{queue_id[:30]}..." in fast flush logfile {path}')
                elif self._requeue(queue_id):
                    moved += 1
            os.ftruncate(fd, 0)
            now = self.clock()
            os.utime(fd, (now, now))
        except OSError as e:
            log.warning(f"flush logfile {path}: {e.strerror}")
        finally:
            os.close(fd)
        return moved

    def _requeue(self, queue_id: str) -> bool:
        """_requeue - deferred QUEUE_ID to incoming, due now; False if not deferred."""
        try:
            path = queue.move(queue_id, "deferred", "incoming")
        except FileNotFoundError:
            return False        # delivered, bounced, or already on its way
        except OSError as e:
            log.warning(f"{queue_id}: cannot requeue: {e.strerror}")
            return False
        try:
            now = self.clock()
            os.utime(path, (now, now))
        except OSError:
            pass
        return True

    def refresh(self, everything: bool) -> None:
        """refresh - flush logs unread for fast_flush_refresh_time (EVERYTHING:
        all non-empty logs), delete those empty for fast_flush_purge_time."""
        try:
            names = os.listdir(FLUSH_DIR)
        except OSError as e:
            log.warning(f"open {FLUSH_DIR}: {e.strerror}")
            return
        now, moved = self.clock(), 0
        for name in names:
            path = os.path.join(FLUSH_DIR, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_size > 0:
                if everything or now - st.st_atime >= self.refresh_time:
                    moved += self._send_path(path)
            elif now - st.st_mtime >= self.purge_time:
                self._purge(path)
        if moved:
            self.wake()

    def _purge(self, path: str) -> None:
        """_purge - delete the log PATH if it is still empty, under its lock."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)


def pre_jail(svc: service.Service) -> FastFlush:
    cfg = svc.cfg
    qmgr = endpoints.endpoint(cfg, "qmgr")

    def wake() -> None:
        # Dead destinations must come alive, or the requeued mail would wait.
        ipc.trigger(qmgr, {"op": "wakeup", "revive": True})

    return FastFlush(cfg, wake)


def run(svc: service.Service) -> None:
    flush = svc.enter_jail(pre_jail)
    try:
        os.makedirs(FLUSH_DIR, exist_ok=True)
    except OSError as e:
        log.warning(f"mkdir {FLUSH_DIR}: {e.strerror}")
    svc.serve_requests(lambda header, payload: (flush.handle(header), []), many=True)


def main() -> None:
    service.main("flush", run)
