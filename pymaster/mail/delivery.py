"""What every delivery agent shares: the request, per-recipient status, log lines.

qmgr sends a delivery agent (local, virtual, smtp, pipe, error, discard …) a
request that names a queue file and some of its recipients; the agent reads
the message from the queue file itself, and for every recipient reports one
outcome through a Status:

    sent      log `status=sent`, mark the recipient done in the queue file
              (NOTIFY=SUCCESS: first append to the trace log, trace/ID;
              sendmail -v, attribute trace_flags=record: every outcome)
    bounced   append to the bounce log (bounce/ID), then mark it done
    deferred  append to the defer log (defer/ID); the recipient stays
              not-done and qmgr tries it again later

sendmail -bv (attribute trace_flags=verify) delivers nothing: an agent only
decides what it would do, and every outcome becomes a verdict (verify_result):
`deliverable` (sent) or `undeliverable` (bounced or deferred) in the trace
log, the recipient marked done, `status=deliverable (REASON)` in the log; the
trace service mails the report. An address probe of the verify service
(trace_flags `verify,probe`) is decided the same way, but each verdict is
sent to that service (pymaster.mail.verify_client) instead of the trace log, so
nothing is mailed and qmgr just removes the probe. request_handler calls
the agent's VERIFY function for such a request (it must not deliver); an
agent without one reports every recipient deliverable via its transport.

Every outcome logs Postfix's status line, which pflogsumm and friends parse:

    QUEUEID: to=<rcpt>, orig_to=<orig>, relay=RELAY, delay=1.2,
        delays=0.01/0/0.02/1.1, dsn=2.0.0, status=sent (REASON)

`soft_bounce = yes` turns every bounce into a defer (dsn 5.x.x -> 4.x.x).

Interface:
    DeliveryRequest.from_header(header) / req.to_header()
    open_content(req) -> records.Message   the queue file, for reading content
    status = Status(req, cfg=None, sync_done=True)
    status.connected()                  end of connection setup (delays "c")
    status.sent / deferred / bounced(rcpt, relay, reason, dsn=...)
    status.report(rcpt, kind, relay, reason, dsn)   one of those three by KIND
    status.expired(rcpt, reason, dsn)   qmgr: bounce a recipient past its lifetime
    status.passed_on(rcpt, outcome, reason, dsn)  another agent's outcome (local's hand-off)
    status.verify_result(rcpt, deliverable, relay, reason, dsn)   sendmail -bv verdict
        (remote_mta=HOST, diag_type="smtp": the report's Remote-MTA, Diagnostic-Code)
    is_verify(req) -> bool              a sendmail -bv request: decide, never deliver
    is_probe(req) -> bool               an address probe: verdicts go to the verify service
    status.hop_failed(reason, dsn)      the next hop is down (qmgr feedback)
    status.reply() -> (header, payload) the answer to qmgr
    done_offsets(path, offsets, fd=-1) -> set   recipients already marked done
    request_handler(deliver, cfg, verify=None, sync_done=True) -> handler for
        Service.serve_requests (sync_done False: done marks not fsynced)
    format_delay(seconds, resolution) -> "0.12"
    append_status_log(path, entry) / read_status_log(path) -> list[dict]

Caveats: a bounced recipient is written to the bounce log (and fsynced)
before it is marked done, so a crash between the two repeats the bounce
entry rather than losing it. Defer log entries are not fsynced: the
recipient is still not-done in the queue file, which is what matters.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from pymaster.mail import queue, records, traceflags, verify_client
from pymaster.mail.config import Config
from pymaster.util import log

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"
# sendmail -bv verdicts: the outcome, the status= word and the DSN action at once.
DELIVERABLE, UNDELIVERABLE = "deliverable", "undeliverable"
VERDICTS = (DELIVERABLE, UNDELIVERABLE)
# What each outcome means in a status log entry (RFC 3464 action field).
ACTIONS = {SENT: "delivered", DEFERRED: "delayed", BOUNCED: "failed"}


@dataclass
class DeliveryRequest:
    """One qmgr -> agent request: a queue file and some of its recipients."""
    queue_id: str
    path: str
    transport: str
    nexthop: str
    sender: str
    recipients: list
    queue_name: str = "active"
    arrival_time: float = 0.0
    active_time: float = 0.0
    attrs: dict = field(default_factory=dict)
    # qmgr: more mail waits for this destination (smtp_connection_cache_on_demand);
    # None when the sender did not say.
    backlog: bool | None = None
    # qmgr: an earlier request to this destination, since it was last idle, was
    # told of a backlog, so a connection may wait in the cache (Postfix's
    # DEL_REQ_FLAG_CONN_LOAD); None when the sender did not say.
    cache_lookup: bool | None = None
    received_time: float = field(default_factory=time.time)
    _message: records.Message | None = field(default=None, repr=False)

    @classmethod
    def from_header(cls, header: dict) -> "DeliveryRequest":
        """from_header - the request as qmgr sent it (docs/architecture.md)."""
        rcpts = [records.Recipient(r["address"], orig=r.get("orig", ""),
                                   notify=r.get("notify", ""), orcpt=r.get("orcpt", ""),
                                   offset=int(r.get("offset", -1)))
                 for r in header.get("recipients", [])]
        return cls(queue_id=header["queue_id"], path=header["path"],
                   transport=header.get("transport", ""),
                   nexthop=header.get("nexthop", ""),
                   sender=header.get("sender", ""), recipients=rcpts,
                   queue_name=header.get("queue_name", "active"),
                   arrival_time=float(header.get("arrival_time", 0.0)),
                   active_time=float(header.get("active_time", 0.0)),
                   attrs=dict(header.get("attrs", {})),
                   backlog=header.get("backlog"),
                   cache_lookup=header.get("cache_lookup"))

    def to_header(self) -> dict:
        """to_header - the request as qmgr sends it."""
        return {"op": "deliver", "queue_id": self.queue_id,
                "queue_name": self.queue_name, "path": self.path,
                "transport": self.transport, "nexthop": self.nexthop,
                "sender": self.sender, "arrival_time": self.arrival_time,
                "active_time": self.active_time, "attrs": self.attrs,
                "recipients": [{"address": r.address, "orig": r.orig,
                                "offset": r.offset, "notify": r.notify,
                                "orcpt": r.orcpt} for r in self.recipients],
                **({} if self.backlog is None else {"backlog": self.backlog}),
                **({} if self.cache_lookup is None else {"cache_lookup": self.cache_lookup})}


def open_content(req: DeliveryRequest) -> "records.Message":
    """open_content - the request's queue file (read once per request).

    Use msg.iter_content() / msg.read_content() for headers and body."""
    if req._message is None:
        req._message = records.read_message(req.path)
    return req._message


# -- delay figures -----------------------------------------------------------

# By resolution: the smallest delay whose two significant digits need no
# more decimals than the resolution allows (1 - floor(log10(x)) <= resolution).
_SMALLEST_FULL = [10.0 ** (1 - r) for r in range(7)]


def format_delay(seconds: float, resolution: int = 2) -> str:
    """format_delay - a delay the way Postfix logs it.

    Ten seconds and more: whole seconds. Below that: two significant
    digits, but never more decimals than delay_logging_resolution_limit;
    what is smaller than the resolution shows as 0."""
    if seconds <= 0:
        return "0"
    if seconds >= 10:
        return str(int(seconds + 0.5))
    resolution = max(0, min(6, resolution))
    if seconds >= 1:
        decimals = 1
    elif seconds >= _SMALLEST_FULL[resolution]:
        # Leading zeros after the point, plus two significant digits.
        decimals = 1 - math.floor(math.log10(seconds))
    else:
        # Below 10 ** (1 - RESOLUTION) the resolution decides, and most
        # figures of a status line (a few milliseconds) show as 0: no log10.
        decimals = resolution
        if int(seconds * 10 ** decimals + 1e-9) == 0:
            return "0"
    decimals = min(decimals, resolution)
    factor = 10 ** decimals
    value = int(seconds * factor + 1e-9) / factor
    if value == 0:
        return "0"
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def delay_fields(req: DeliveryRequest, conn_time: float | None, now: float,
                 resolution: int) -> tuple[str, str]:
    """delay_fields - (delay, "a/b/c/d") for a status line.

    a: arrival to qmgr (before the queue manager), b: in the queue manager,
    c: connection setup, d: transmission."""
    arrival = req.arrival_time or now
    active = req.active_time or arrival
    start = max(req.received_time, active)
    conn = conn_time if conn_time is not None else start
    parts = (active - arrival, start - active, conn - start, now - conn)
    delays = "/".join(format_delay(p, resolution) for p in parts)
    return format_delay(now - arrival, resolution), delays


# -- the defer and bounce logs -----------------------------------------------

def append_status_log(path: str, entry: dict, sync: bool = False) -> None:
    """append_status_log - add one `name=value` block to a defer/bounce log.

    One write() on an O_APPEND descriptor, so agents delivering other
    recipients of the same message at the same time never interleave."""
    lines = []
    for name, value in entry.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{name}={text}\n")
    data = ("".join(lines) + "\n").encode("utf-8", "surrogateescape")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except FileNotFoundError:
        _make_log_dirs(os.path.dirname(path) or ".")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.geteuid() == 0:
            _give_to_spool_owner(fd, path)
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def _spool_owner(path: str) -> tuple[int, int]:
    """_spool_owner - (uid, gid) of the log directory PATH lies in (defer/ …)."""
    st = os.stat(path.split(os.sep, 1)[0] if not os.path.isabs(path)
                 else os.path.dirname(path))
    return st.st_uid, st.st_gid


def _give_to_spool_owner(fd: int, path: str) -> None:
    """_give_to_spool_owner - a log written by a root agent (local, virtual)
    belongs to mail_owner, who owns the log directory, so the bounce service
    and qmgr (running as mail_owner) can read, append to and remove it."""
    st = os.fstat(fd)
    owner = _spool_owner(path)
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(fd, *owner)


def _make_log_dirs(directory: str) -> None:
    """_make_log_dirs - hashed subdirectories (defer/X/), mail_owner's too."""
    os.makedirs(directory, exist_ok=True)
    if os.geteuid() != 0 or os.path.isabs(directory):
        return
    owner = _spool_owner(directory)
    parts = directory.split(os.sep)
    for i in range(2, len(parts) + 1):
        os.chown(os.sep.join(parts[:i]), *owner)


def read_status_log(path: str) -> list[dict]:
    """read_status_log - the entries of a defer/bounce log, oldest first.

    A missing file has no entries; a torn last entry (crash mid-write) is
    kept as far as it goes."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    entries: list[dict] = []
    for block in text.split("\n\n"):
        entry = {}
        for line in block.splitlines():
            name, eq, value = line.partition("=")
            if eq:
                entry[name] = value
        if entry:
            entries.append(entry)
    return entries


# -- per-recipient status ----------------------------------------------------

class Status:
    """The outcomes of one delivery request, recorded and logged as they come."""

    def __init__(self, req: DeliveryRequest, cfg: Config | None = None,
                 sync_done: bool = True) -> None:
        self.req = req
        # Whether each done mark is fsynced (records.mark_done): an agent
        # whose delivery repeats harmlessly after a power loss says no.
        self.sync_done = sync_done
        self.cfg = cfg              # for the verify service's name (address probes)
        self.soft_bounce = cfg.bool("soft_bounce") if cfg is not None else False
        self.resolution = cfg.int("delay_logging_resolution_limit") if cfg is not None else 2
        self.conn_time: float | None = None
        self.results: list[dict] = []
        self.hop_status: dict | None = None
        self._reported: set[int] = set()
        self.record_all = records_every_outcome(req)
        self.verify = is_verify(req)
        # The queue file, open for writing while request_handler serves the
        # request: the done check and every done mark use it (-1: by path).
        self.fd = -1

    def connected(self) -> None:
        """connected - connection setup is over; transmission starts (delays c/d)."""
        self.conn_time = time.time()

    def sent(self, rcpt, relay: str, reason: str, dsn: str = "2.0.0") -> None:
        """sent - RCPT was delivered: log it and mark it done."""
        if self.verify:
            self.verify_result(rcpt, True, relay, reason, dsn)
            return
        self._record(rcpt, SENT, relay, reason, dsn)

    def deferred(self, rcpt, relay: str, reason: str, dsn: str = "4.0.0") -> None:
        """deferred - RCPT failed for now: log it and note why in the defer log."""
        if self.verify:
            # As Postfix: a verification is never retried; a temporary
            # failure is reported as undeliverable now.
            self.verify_result(rcpt, False, relay, reason, dsn)
            return
        self._record(rcpt, DEFERRED, relay, reason, dsn)

    def bounced(self, rcpt, relay: str, reason: str, dsn: str = "5.0.0") -> None:
        """bounced - RCPT failed for good (unless soft_bounce): bounce log, done."""
        if self.verify:
            self.verify_result(rcpt, False, relay, reason, dsn)
        elif self.soft_bounce:
            self._record(rcpt, DEFERRED, relay, reason, soft_dsn(dsn))
        else:
            self._record(rcpt, BOUNCED, relay, reason, dsn)

    def report(self, rcpt, kind: str, relay: str, reason: str, dsn: str) -> None:
        """report - RCPT's outcome KIND (SENT, DEFERRED or BOUNCED), as one of the three."""
        {SENT: self.sent, BOUNCED: self.bounced}.get(kind, self.deferred)(rcpt, relay, reason, dsn)

    def expired(self, rcpt, reason: str, dsn: str = "4.4.7") -> None:
        """expired - qmgr gives up on RCPT: bounce log entry and done, no log line.

        qmgr logs one `from=<…>, status=expired, returned to sender` line per
        message instead of one per recipient."""
        self._record(rcpt, BOUNCED, "none", reason, dsn, quiet=True)

    def verify_result(self, rcpt, deliverable: bool, relay: str, reason: str,
                      dsn: str = "", remote_mta: str = "", diag_type: str = "") -> None:
        """verify_result - sendmail -bv: what delivery to RCPT would do.

        The verdict goes to the trace log (the report's Action: deliverable
        or undeliverable) and the log; the recipient is done either way,
        so nothing is delivered, bounced or retried. REMOTE_MTA (a host
        name) and DIAG_TYPE ("smtp") make the report's Remote-MTA and
        Diagnostic-Code say who gave REASON, as an SMTP client's do."""
        verdict = DELIVERABLE if deliverable else UNDELIVERABLE
        dsn = dsn or ("2.0.0" if deliverable else "5.0.0")
        logged: str | None = verdict
        if is_probe(self.req):
            logged = self._tell_verify_service(rcpt, deliverable, relay, reason, dsn)
            if logged is None:
                return
        else:
            entry = {
                "recipient": rcpt.address, "orig_rcpt": rcpt.orig,
                "offset": rcpt.offset, "dsn_orcpt": rcpt.orcpt,
                "notify_flags": rcpt.notify, "status": dsn, "action": verdict,
                "reason": reason, "relay": relay, "time": f"{time.time():.0f}",
            }
            if diag_type:
                entry.update(diag_type=diag_type, diag_text=reason)
            if remote_mta:
                entry.update(mta_type="dns", mta_name=remote_mta)
            append_status_log(queue.trace_log_path(self.req.queue_id), entry, sync=True)
        self._reported.add(id(rcpt))
        self._mark_done(rcpt)
        assert logged is not None  # a probe the verify service did not take returned
        log.info(self.status_line(rcpt, logged, relay, reason, dsn))
        self.results.append({"offset": rcpt.offset, "address": rcpt.address,
                             "status": verdict, "dsn": dsn, "reason": reason})

    def _tell_verify_service(self, rcpt, deliverable: bool, relay: str, reason: str,
                             dsn: str) -> str | None:
        """_tell_verify_service - an address probe's verdict goes to the verify
        service (UPDATE), not to a trace log: nothing is mailed. The word to
        log, or None when the service cannot be told: then the probe is
        deferred, to be tried again, as Postfix does."""
        status = verify_client.status_of(deliverable, dsn)
        try:
            cached = verify_client.report_probe(self.cfg, rcpt.address, rcpt.orig,
                                                status, reason)
        except verify_client.VerifyError as e:
            log.warning(f"{self.req.queue_id}: verify service failure: {e}")
            self._record(rcpt, DEFERRED, relay, "address verification service failure",
                         "4.3.0")
            return None
        if deliverable:
            return DELIVERABLE
        return UNDELIVERABLE if cached else "undeliverable-but-not-cached"

    def already_done(self, rcpt) -> None:
        """already_done - RCPT is done in the queue file: report it, do nothing."""
        self._reported.add(id(rcpt))
        rcpt.done = True
        self.results.append({"offset": rcpt.offset, "address": rcpt.address,
                             "status": SENT, "dsn": "2.0.0", "reason": "already done"})

    def passed_on(self, rcpt, outcome: str, reason: str, dsn: str) -> None:
        """passed_on - RCPT's OUTCOME came from another agent it was handed to
        (local's mailbox_transport, with offset -1): that agent logged it and
        wrote the status log; here it is only marked done and reported."""
        self._reported.add(id(rcpt))
        if outcome != DEFERRED:
            self._mark_done(rcpt)
        self.results.append({"offset": rcpt.offset, "address": rcpt.address,
                             "status": outcome, "dsn": dsn, "reason": reason})

    def pending(self) -> list:
        """pending - the request's recipients that have no outcome yet."""
        return [r for r in self.req.recipients if id(r) not in self._reported]

    def _record(self, rcpt, outcome: str, relay: str, reason: str, dsn: str,
                quiet: bool = False) -> None:
        self._reported.add(id(rcpt))
        if outcome == SENT:
            # RFC 3461 NOTIFY=SUCCESS: the trace log feeds the success notice.
            if self.record_all or wants_success_notice(rcpt):
                self._log_entry(rcpt, outcome, relay, reason, dsn)
            self._mark_done(rcpt)
        else:
            self._log_entry(rcpt, outcome, relay, reason, dsn)
            if self.record_all:
                self._log_entry(rcpt, outcome, relay, reason, dsn, trace=True)
            if outcome == BOUNCED:
                self._mark_done(rcpt)
        if not quiet:
            log.info(self.status_line(rcpt, outcome, relay, reason, dsn))
        self.results.append({"offset": rcpt.offset, "address": rcpt.address,
                             "status": outcome, "dsn": dsn, "reason": reason})

    def status_line(self, rcpt, outcome: str, relay: str, reason: str, dsn: str,
                    now: float | None = None) -> str:
        """status_line - `QUEUEID: to=<…>, …, status=OUTCOME (REASON)`."""
        delay, delays = delay_fields(self.req, self.conn_time,
                                     time.time() if now is None else now, self.resolution)
        parts = [f"{self.req.queue_id}: to=<{rcpt.address}>"]
        if rcpt.orig and rcpt.orig.lower() != rcpt.address.lower():
            parts.append(f"orig_to=<{rcpt.orig}>")
        parts += [f"relay={relay}", f"delay={delay}", f"delays={delays}",
                  f"dsn={dsn}", f"status={outcome} ({reason})"]
        return ", ".join(parts)

    def _mark_done(self, rcpt) -> None:
        if rcpt.offset >= 0:
            records.mark_done(self.req.path, rcpt.offset, self.fd, self.sync_done)
        rcpt.done = True

    def _log_entry(self, rcpt, outcome: str, relay: str, reason: str, dsn: str,
                   trace: bool = False) -> None:
        if trace:
            path = queue.trace_log_path(self.req.queue_id)
        elif outcome == BOUNCED:
            path = queue.bounce_log_path(self.req.queue_id)
        elif outcome == SENT:
            path = queue.trace_log_path(self.req.queue_id)
        else:
            path = queue.defer_log_path(self.req.queue_id)
        append_status_log(path, {
            "recipient": rcpt.address, "orig_rcpt": rcpt.orig,
            "offset": rcpt.offset, "dsn_orcpt": rcpt.orcpt,
            "notify_flags": rcpt.notify, "status": dsn,
            "action": ACTIONS[outcome], "reason": reason, "relay": relay,
            "time": f"{time.time():.0f}",
        }, sync=outcome == BOUNCED)

    def hop_failed(self, reason: str, dsn: str = "4.4.1") -> None:
        """hop_failed - the next hop itself failed (no server reachable).

        qmgr counts this against the destination's concurrency and may
        declare it dead; the recipients still need their own outcomes."""
        self.hop_status = {"dsn": dsn, "reason": reason}

    def reply(self) -> tuple[dict, list]:
        """reply - the answer to qmgr: every recipient's outcome by offset."""
        header: dict[str, object] = {"status": "ok", "queue_id": self.req.queue_id,
                  "results": list(self.results)}
        if self.hop_status is not None:
            header["hop_status"] = self.hop_status
        return header, []


def done_offsets(path: str, offsets: list[int], fd: int = -1) -> set[int]:
    """done_offsets - which of the recipient records at OFFSETS are marked done
    (FD: PATH already open)."""
    own = fd < 0
    if own:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return set()
    try:
        return {o for o in offsets if o >= 0 and os.pread(fd, 1, o) == records.REC_DONE}
    finally:
        if own:
            os.close(fd)


def _open_for_marks(path: str) -> int:
    """_open_for_marks - PATH open for reading and writing, -1 when it cannot be:
    then the done check finds nothing and each mark opens PATH itself, and
    fails there as it would have."""
    try:
        return os.open(path, os.O_RDWR)
    except OSError:
        return -1


def is_verify(req: DeliveryRequest) -> bool:
    """is_verify - REQ is a sendmail -bv request or an address probe of the
    verify service: report verdicts, deliver nothing."""
    return traceflags.is_verify(req.attrs)


def is_probe(req: DeliveryRequest) -> bool:
    """is_probe - REQ is an address probe (trace_flags verify,probe): its
    verdicts go to the verify service instead of a report to the sender."""
    return traceflags.is_probe(req.attrs)


def default_verify(req: DeliveryRequest, status: "Status") -> None:
    """default_verify - the verdict of an agent that cannot tell more without
    delivering (no verify function): deliverable through its transport."""
    where = f" to {req.nexthop}" if req.nexthop else ""
    for rcpt in req.recipients:
        status.verify_result(rcpt, True, req.transport or "none",
                             f"delivers via {req.transport or 'none'}{where}")


def records_every_outcome(req: DeliveryRequest) -> bool:
    """records_every_outcome - sendmail -v (trace_flags=record): every outcome
    goes to the trace log too, until the bounce service has sent the report
    (it notes `trace_report=sent` in the defer log: first attempt only)."""
    if not traceflags.is_record(req.attrs):
        return False
    return not any(e.get("trace_report") for e in
                   read_status_log(queue.defer_log_path(req.queue_id)))


def wants_success_notice(rcpt) -> bool:
    """wants_success_notice - RCPT asked for a delivery notice (NOTIFY=SUCCESS)."""
    return "SUCCESS" in (rcpt.notify or "").upper().split(",")


def soft_dsn(dsn: str) -> str:
    """soft_dsn - a permanent DSN code made temporary (soft_bounce)."""
    return "4" + dsn[1:] if dsn.startswith("5") else dsn


def request_handler(deliver: Callable[[DeliveryRequest, Status], None],
                    cfg: Config | None = None,
                    verify: Callable[[DeliveryRequest, Status], None] | None = None,
                    sync_done: bool = True):
    """request_handler - wrap DELIVER(req, status) as a serve_requests handler.

    SYNC_DONE False: done marks are not fsynced (records.mark_done), for an
    agent that delivers nothing a power loss could make it repeat (discard).

    A sendmail -bv request (is_verify) goes to VERIFY instead, which must
    not deliver (an agent whose DELIVER has no side effects, such as error
    and discard, passes it as VERIFY too); without one, default_verify.
    A recipient DELIVER leaves without an outcome, or an exception inside
    it, defers the rest: a recipient is never dropped silently. The
    request's "id", if any, is echoed in the reply."""
    def handle(header: dict, payload: list) -> tuple[dict, list]:
        reply, reply_payload = _handle(header)
        if "id" in header:
            reply["id"] = header["id"]
        return reply, reply_payload

    def _handle(header: dict) -> tuple[dict, list]:
        if header.get("op") != "deliver":
            return {"status": "error", "reason": f"unknown request: {header.get('op')}"}, []
        try:
            req = DeliveryRequest.from_header(header)
        except (KeyError, TypeError, ValueError) as e:
            return {"status": "error", "reason": f"malformed delivery request: {e}"}, []
        status = Status(req, cfg, sync_done)
        # One descriptor for the done check and every mark: two opens and
        # closes per request fewer.
        status.fd = _open_for_marks(req.path)
        try:
            return _serve(req, status)
        finally:
            fd, status.fd = status.fd, -1     # a late mark goes by path
            if fd >= 0:
                os.close(fd)

    def _serve(req: DeliveryRequest, status: Status) -> tuple[dict, list]:
        # A recipient already marked done was delivered by an earlier request
        # (qmgr restarted while that one was still queued): never again.
        done = done_offsets(req.path, [r.offset for r in req.recipients], status.fd)
        if done:
            for rcpt in [r for r in req.recipients if r.offset in done]:
                status.already_done(rcpt)
            req.recipients = [r for r in req.recipients if r.offset not in done]
        work = (verify or default_verify) if status.verify else deliver
        try:
            work(req, status)
        except Exception as e:
            log.warning(f"{req.queue_id}: delivery failed: {type(e).__name__}: {e}")
            for rcpt in status.pending():
                status.deferred(rcpt, "none", "delivery failed: internal error", "4.3.0")
        for rcpt in status.pending():
            status.deferred(rcpt, "none", "delivery agent reported no status", "4.3.0")
        return status.reply()
    return handle
