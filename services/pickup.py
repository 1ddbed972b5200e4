"""pickup: moves locally submitted mail from maildrop/ to cleanup, as Postfix's pickup(8).

One process (master.cf: `pickup unix n - y 60 1 pickup`). It scans maildrop
when it starts, on every trigger (`public/pickup`, sent by sendmail, postdrop
and postsuper -r) and on the master's wakeup every 60 seconds. For each
complete file (owner-execute bit set; postdrop sets it last) it:

  1. reads and checks it (a regular file, parses as a queue file); a file
     that does not is moved to corrupt/ with a warning
  2. sends cleanup one `message` request: the sender, the recipients not yet
     done, attrs origin=pickup, rewrite_context=local, and the submitter's
     own attributes (full_name, envid, ret, body; flag "extract" for -t). A
     file owned by root or mail_owner (sendmail run by them, postsuper -r)
     is trusted with every attribute it carries; a user's file only with
     those, so nobody can forge client or SASL attributes.
  3. on "ok" logs `QUEUEID: uid=UID from=<SENDER>` (UID: the file owner)
     and removes the maildrop file; on "defer" or no answer leaves it for
     the next scan; on "reject" (no recipients, too big) logs a warning and
     moves it to corrupt/ (a bounce to the sender would be Postfix's way;
     nothing accepted is thrown away silently).

As smtpd does, pickup passes its own content_filter (attrs["content_filter"])
and receive_override_options (flags) to cleanup, so `-o content_filter=…` on
the pickup line of master.cf filters local submissions (FILTER_README).

Interface: main(); pre_jail(svc) -> Pickup; run(svc);
Pickup(cfg).scan_once() -> number of files handed over
"""

from __future__ import annotations

import os
import pwd
import stat

from pymaster.mail import cleanup_client, queue, records, traceflags
from pymaster.mail.config import Config
from pymaster.master import service
from pymaster.util import ipc, log

MAILDROP = "maildrop"
# The attributes a user's own submission may set (see postdrop/sendmail).
USER_ATTRS = ("full_name", "envid", "ret", "body", "trace_flags", "verp_delimiters")
# Bookkeeping of the maildrop file that is not passed on to cleanup.
PRIVATE_ATTRS = ("uid", "cleanup_flags")
CLEANUP_TIMEOUT = 100.0


class Pickup:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        # Not ipc_timeout (an hour): a stuck cleanup must not stall local mail.
        self.cleanup = cleanup_client.client(cfg, timeout=CLEANUP_TIMEOUT)
        self.content_filter = cfg.get("content_filter").strip()
        self.receive_overrides = cfg.list("receive_override_options")
        self.trusted_uids = {0, os.geteuid()}
        try:
            self.trusted_uids.add(pwd.getpwnam(cfg.get("mail_owner")).pw_uid)
        except KeyError:
            pass

    def scan_once(self) -> int:
        """scan_once - hand every complete maildrop file to cleanup, oldest first."""
        done = 0
        for queue_id, path in sorted(queue.scan(MAILDROP)):
            if self.pick(queue_id, path):
                done += 1
        return done

    def pick(self, queue_id: str, path: str) -> bool:
        """pick - one maildrop file to cleanup; True when it left maildrop."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            log.warning(f"{path}: not a regular file; skipped")
            return False
        if not st.st_mode & stat.S_IXUSR:
            return False                            # still being written
        try:
            msg = records.read_message(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            log.warning(f"{path}: cannot read: {e.strerror or e}; skipped")
            return False
        except records.CorruptQueueFile as e:
            queue.quarantine(queue_id, MAILDROP, e.reason)
            return True
        header = self.request(msg, st.st_uid)
        return self.send(queue_id, path, msg, header, st.st_uid)

    def request(self, msg: records.Message, uid: int) -> dict:
        """request - the cleanup `message` request for MSG (submitted by UID)."""
        trusted = uid in self.trusted_uids
        attrs = {k: v for k, v in msg.attrs.items()
                 if k not in PRIVATE_ATTRS and (trusted or k in USER_ATTRS)}
        if not trusted and "trace_flags" in attrs:
            # An address probe's flag is the verify service's alone: a user
            # must not feed its cache.
            attrs["trace_flags"] = traceflags.user_flags(attrs["trace_flags"])
        attrs["origin"] = "pickup"
        attrs["rewrite_context"] = "local"
        # This pickup's content_filter applies, not one a requeued file carries
        # (postsuper -r is how mail goes through a new filter setting).
        attrs.pop("content_filter", None)
        if self.content_filter:
            attrs["content_filter"] = self.content_filter
        flags = [f for f in msg.attrs.get("cleanup_flags", "").split(",") if f == "extract"]
        flags += self.receive_overrides
        rcpts = [cleanup_client.recipient(r.address, r.orig, r.notify, r.orcpt)
                 for r in msg.pending()]
        # uid: cleanup's `Received: by HOST (Postfix, from userid N)` names
        # the submitter, the maildrop file's owner.
        return cleanup_client.message_request(msg.sender, rcpts, attrs, flags,
                                              arrival_time=msg.arrival_time, uid=uid)

    def send(self, queue_id: str, path: str, msg: records.Message, header: dict,
             uid: int) -> bool:
        try:
            answer, _ = self.cleanup.call(header, [msg.read_content()])
        except (ipc.IpcError, records.CorruptQueueFile, OSError) as e:
            log.warning(f"{path}: cleanup service unavailable: {e}; will retry")
            return False
        reply = cleanup_client.Reply.of(answer)
        if reply.ok:
            log.info(f"{reply.queue_id or queue_id}: uid={uid} from=<{msg.sender}>")
            queue.unlink_if_present(path)
            return True
        reason = reply.text
        if reply.status == "reject":
            log.warning(f"{path}: uid={uid} from=<{msg.sender}>: message rejected: {reason}")
            queue.quarantine(queue_id, MAILDROP, f"rejected by cleanup: {reason}")
            return True
        log.warning(f"{path}: uid={uid}: cleanup deferred the message: {reason}; will retry")
        return False



def pre_jail(svc: service.Service) -> Pickup:
    """pre_jail - the scanner, its cleanup client, the trusted accounts looked up."""
    return Pickup(svc.cfg)


def run(svc: service.Service) -> None:
    """run - pick up what waits, then again at each wakeup."""
    pickup = svc.enter_jail(pre_jail)
    pickup.scan_once()

    def handle(header: dict, payload: list) -> tuple[dict, list]:
        return {"status": "ok", "picked": pickup.scan_once()}, []

    svc.serve_requests(handle, many=True)


def main() -> None:
    service.main("pickup", run)
