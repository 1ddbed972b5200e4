"""The queue manager's event loop: triggers in, delivery requests out.

One QueueManager runs in the single qmgr process. Each turn of its loop:

  1. timers: a deferred-queue scan every queue_run_delay
  2. feed: move a batch of due files from incoming/deferred to active
     (up to qmgr_message_active_limit messages and qmgr_message_recipient_limit
     recipients in memory), read each envelope once, resolve its recipients
     (a slice at a time for a big message) and queue them per transport and
     destination
  3. schedule: send every request the process and concurrency limits allow
  4. wait for triggers, agents' answers, the master's end, or a timeout

Triggers arrive as one-way requests on leases of qmgr's own socket
(pymaster.util.ipc; qmgr takes many at once, as Postfix's does): `{"op":
"wakeup"}` (cleanup, the master's timer) starts an incoming scan, `{"op":
"flush"}` (postqueue -f, sendmail -q) makes every deferred message due now,
revives dead destinations, and lets the messages that scan finds past
defer_transports; with "site" or "queue_id" (postqueue -s / -i from a user
who cannot write the spool) only the matching deferred messages are moved
to incoming. A request that waits for an answer gets one at once; a
burst of triggers costs one directory walk. The hold queue is never looked at.

A message is finished when no recipient is queued or in flight: deferred
recipients left move it to deferred/ with its next retry time as mtime (or,
past its lifetime, bounce them: `status=expired, returned to sender`,
unless soft_bounce keeps them);
a bounce log means the bounce service is asked for a non-delivery notice
first; a deferred message may then get a delay warning (delay_warning_time,
defer service; the queue file then gets `warning_time=0`, as in Postfix,
so the warning goes once), a finished one its success notices (trace log,
trace service), before the file and its logs are removed (`removed`).

Interface: QueueManager(svc).run()
"""

from __future__ import annotations

import os
import time

from pymaster.mail import delivery, dsn, flush_client, queue, queuelist, records, traceflags, verp
from pymaster.mail.config import ConfigError
from pymaster.mail.resolve import ERROR, FAIL, Resolver
from pymaster.master import service
from pymaster.master.mastercf import load_master_cf
from pymaster.util import ipc, log
from services.qmgr.active import ActiveMessage, filter_resolution, last_defer_reasons
from services.qmgr.backoff import Backoff
from services.qmgr.dispatch import Dispatcher
from services.qmgr.scan import Scan, requeue_active
from services.qmgr.schedule import Destination, Job, Transport, chunks, destination_key, limits_for

FEED_BATCH = 100            # messages read per loop turn, so answers are not starved
MAX_SLEEP = 1.0             # wake at least this often to notice SIGTERM
UNAVAILABLE = "mail transport unavailable"
# The service (main.cf name of its name) that sends each kind of notice.
NOTICE_SERVICES = {"bounce": "bounce_service_name", "delay": "defer_service_name",
                   "trace": "trace_service_name"}
NOTICE_NAMES = {"bounce": "non-delivery", "delay": "delay", "trace": "delivery status"}


class QueueManager:
    """The state of the queue manager: active messages and transports."""

    def __init__(self, svc: service.Service) -> None:
        self.svc = svc
        self.cfg = cfg = svc.cfg
        queue.configure(cfg)
        self.resolver = Resolver(cfg)
        # Address probes take the address_verify_* routes (postconf(5)).
        self.probe_resolver = Resolver(cfg, probe=True)
        self.backoff = Backoff.from_config(cfg)
        self.queue_run_delay = max(1, cfg.time("queue_run_delay"))
        self.active_limit = max(1, cfg.int("qmgr_message_active_limit"))
        self.rcpt_limit = max(1, cfg.int("qmgr_message_recipient_limit"))
        self.rcpt_minimum = max(1, cfg.int("qmgr_message_recipient_minimum"))
        self.in_core = 0            # recipients of active messages held in memory
        self.soft_bounce = cfg.bool("soft_bounce")
        self.defer_transports = set(cfg.list("defer_transports"))
        # Deferred mail is logged per destination for ETRN and postqueue -s.
        self.fast_flush = flush_client.FlushClient(cfg) if cfg.list("fast_flush_domains") else None
        self.process_limits = self._process_limits()
        self.poller = ipc.Poller()
        self.dispatcher = Dispatcher(self.poller, max(1, cfg.time("ipc_timeout")))
        self.transports: dict[str, Transport] = {}
        self.active: dict[str, ActiveMessage] = {}
        self.incoming, self.deferred = Scan("incoming"), Scan("deferred")
        self.next_deferred_scan = 0.0
        self.prefer_deferred = False
        self.server: ipc.Server | None = None
        self.alive_fd: int | None = None
        self.running = True

    def _process_limits(self) -> dict[str, int]:
        """_process_limits - maxproc of each unix service in master.cf."""
        try:
            entries = load_master_cf(self.cfg.config_dir, self.cfg)
        except (ConfigError, OSError) as e:
            log.warning(f"cannot read master.cf process limits: {e}")
            return {}
        return {e.service: e.maxproc for e in entries if e.type == "unix"}

    # -- start and stop ----------------------------------------------------
    def open(self) -> None:
        """open - the trigger socket and the master-alive pipe."""
        self.server = ipc.Server(self.svc.listen_socket(), many=True)
        self.poller.register(self.server)
        # Started and serving: a later death is a crash, not a bad start-up.
        self.svc.report_used()
        try:
            os.fstat(service.ALIVE_FD)
            self.alive_fd = service.ALIVE_FD
            self.poller.register(self.alive_fd)
        except OSError:
            self.alive_fd = None

    def start(self) -> None:
        """start - requeue what a previous run left in active; scan everything."""
        moved = requeue_active()
        if moved:
            log.info(f"requeued {moved} message(s) from the active queue")
        self.incoming.request()
        self.next_deferred_scan = 0.0

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.fast_flush is not None:
            self.fast_flush.close()
        self.dispatcher.close()

    def run(self) -> None:
        """run - the event loop, until the master goes or SIGTERM."""
        # qmgr is always "busy": SIGTERM only sets svc.stopping, checked here,
        # so a file move or a queue-file update is never cut in half.
        self.svc.busy = True
        self.open()
        self.start()
        try:
            while self.running and not self.svc.stopping:
                self.turn()
        finally:
            self.close()

    def turn(self) -> None:
        """turn - one pass of the loop."""
        now = time.time()
        if now >= self.next_deferred_scan:
            self.deferred.request()
            self.next_deferred_scan = now + self.queue_run_delay
        fed = self.feed(now)
        self.schedule(now)
        for item in self.poller.poll(self.poll_timeout(fed)):
            self.event(item)
        self.dispatcher.expire()

    def has_room(self) -> bool:
        """has_room - whether another message may enter the active queue."""
        return len(self.active) < self.active_limit and self.in_core < self.rcpt_limit

    def poll_timeout(self, fed: bool) -> int:
        """poll_timeout - milliseconds to wait: 0 while a backlog is being fed."""
        if fed and self.has_room():
            return 0
        wait = min(MAX_SLEEP, max(0.0, self.next_deferred_scan - time.time()))
        deadline = self.dispatcher.next_deadline()
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        return int(wait * 1000) + 1

    def event(self, item) -> None:
        if item is self.server:
            self.triggers()
        elif item == self.alive_fd:
            if self.svc.master_gone():
                self.running = False
        elif self.dispatcher.owns(item):
            self.dispatcher.receive(item)

    # -- triggers ------------------------------------------------------------
    def triggers(self) -> None:
        """triggers - answer every waiting trigger, then act on them once."""
        assert self.server is not None  # event() checked
        wakeup = flush = revive = False
        selected: list[dict] = []
        for token, header, _ in self.server.events():
            if token is not None:
                self.server.reply(token, {"status": "ok"})
            if header.get("op") == "flush" and ("site" in header or "queue_id" in header):
                selected.append(header)
            elif header.get("op") == "flush":
                flush = True
            else:
                wakeup = True
                revive = revive or bool(header.get("revive"))    # the flush service
        for header in selected:
            self.flush_selected(header)
            wakeup = True
        if flush:
            self.flush()
        elif wakeup:
            if revive:
                self.revive()
            self.incoming.request()

    def flush(self) -> None:
        """flush - every deferred message is due now; dead destinations live;
        what these scans find may use defer_transports."""
        self.revive()
        self.incoming.request(ignore_time=True)
        self.deferred.request(ignore_time=True)

    def revive(self) -> None:
        """revive - every dead destination is alive again."""
        for transport in self.transports.values():
            for dest in transport.destinations.values():
                dest.revive()

    def flush_selected(self, header: dict) -> None:
        """flush_selected - move deferred mail for a site, or one message, to incoming."""
        if "queue_id" in header:
            ids = [str(header["queue_id"])] if queue.is_queue_id(str(header["queue_id"])) else []
        else:
            ids = queuelist.deferred_for_site(str(header["site"]))
        queuelist.flush_ids(ids)

    # -- feeding the active queue ----------------------------------------------
    def feed(self, now: float) -> bool:
        """feed - move a batch of due files into active; whether any came."""
        fed = 0
        while fed < FEED_BATCH and self.has_room():
            item, scan = self._next_file(now)
            if item is None:
                break
            # A flush scan (ignore_time) overrides defer_transports.
            self.activate(item[0], scan.queue_name, flush=scan.ignore_time)
            fed += 1
        return fed > 0

    def _next_file(self, now: float):
        # Alternate between the queues so neither starves the other.
        order = [self.deferred, self.incoming] if self.prefer_deferred \
            else [self.incoming, self.deferred]
        self.prefer_deferred = not self.prefer_deferred
        for scan in order:
            item = scan.next(now)
            if item is not None:
                return item, scan
            if scan.walks_done:
                self._scan_done(scan)
        return None, None

    @staticmethod
    def _scan_done(scan: Scan) -> None:
        # For the administrator and the benchmark: when a full walk is over.
        for count in scan.take_walks_done():
            log.debug(f"{scan.queue_name} queue scan done: {count} file(s)")

    def slice_size(self) -> int:
        """slice_size - how many recipients the next read may bring into memory."""
        return max(self.rcpt_minimum, self.rcpt_limit - self.in_core)

    def activate(self, queue_id: str, source: str, flush: bool = False) -> None:
        """activate - move QUEUE_ID to active, read it, queue its recipients."""
        if queue_id in self.active:
            return
        try:
            path = queue.move(queue_id, source, "active")
        except FileNotFoundError:
            return                      # removed or moved by someone else meanwhile
        except OSError as e:
            log.warning(f"{queue_id}: cannot move to the active queue: {e}")
            return
        try:
            msg = ActiveMessage.load(queue_id, path, self.slice_size())
        except records.CorruptQueueFile as e:
            self.quarantine(queue_id, e.reason)
            return
        except OSError as e:
            log.warning(f"{queue_id}: cannot read queue file: {e}")
            self.requeue(queue_id, source)
            return
        msg.flush = flush
        self.active[queue_id] = msg
        self.in_core += len(msg.message.recipients)
        log.info(msg.entered_line())
        self.assign(msg, time.time())
        self.advance(msg)

    def quarantine(self, queue_id: str, reason: str) -> None:
        """quarantine - a corrupt active file goes to corrupt/, never retried."""
        try:
            queue.quarantine(queue_id, "active", reason)
        except OSError as e:
            # Left in active, it is tried again after a qmgr restart only.
            log.warning(f"{queue_id}: cannot move corrupt file to the corrupt queue: {e}")

    def requeue(self, queue_id: str, source: str) -> None:
        try:
            path = queue.move(queue_id, "active", source)
            if source == "deferred":
                queue.set_retry_time(path, time.time() + self.backoff.minimal)
        except OSError as e:
            log.warning(f"{queue_id}: cannot move back to the {source} queue: {e}")

    def advance(self, msg: ActiveMessage) -> None:
        """advance - MSG has nothing queued or in flight: its next slice of
        recipients, or, when none is left, finish it."""
        while msg.outstanding <= 0:
            if not msg.has_more:
                self.finish(msg)
                return
            self.in_core -= len(msg.message.recipients)
            try:
                msg.read_more(self.slice_size())
            except records.CorruptQueueFile as e:
                msg.message.recipients = []
                self.drop(msg)
                self.quarantine(msg.queue_id, e.reason)
                return
            except OSError as e:
                log.warning(f"{msg.queue_id}: cannot read queue file: {e}")
                msg.message.recipients, msg.more_at = [], -1
                msg.deferred = True
                continue
            self.in_core += len(msg.message.recipients)
            self.assign(msg, time.time())

    def transport(self, name: str) -> Transport:
        transport = self.transports.get(name)
        if transport is None:
            limit = self.process_limits.get(name, self.cfg.int("default_process_limit"))
            transport = self.transports[name] = Transport(name, limits_for(self.cfg, name, limit))
        return transport

    def assign(self, msg: ActiveMessage, now: float) -> None:
        """assign - resolve each recipient still to do and queue it, or decide now."""
        groups: dict[tuple[str, str], tuple[str, list]] = {}
        content_filter = msg.content_filter()
        resolver = self.probe_resolver if traceflags.is_probe(msg.message.attrs) else self.resolver
        for rcpt in msg.pending():
            # A content filter (content_filter, FILTER action) overrides the resolver.
            res = filter_resolution(content_filter, rcpt.address, self.cfg) if content_filter \
                else resolver.resolve(rcpt.address, msg.sender)
            if FAIL in res.flags:
                self.own_outcome(msg, [rcpt], delivery.DEFERRED,
                                 "address resolver failure", "4.3.0")
            elif ERROR in res.flags:
                self.own_outcome(msg, [rcpt], delivery.BOUNCED, "bad address syntax", "5.1.3")
            elif res.transport in self.defer_transports and not msg.flush:
                self.own_outcome(msg, [rcpt], delivery.DEFERRED, "deferred transport", "4.3.2")
            else:
                transport = self.transport(res.transport)
                key = destination_key(transport.limits, res.nexthop, rcpt.address)
                groups.setdefault((res.transport, key), (res.nexthop, []))[1].append(rcpt)
        for (name, key), (nexthop, rcpts) in groups.items():
            self.enqueue(msg, self.transport(name), key, nexthop, rcpts, now)

    def enqueue(self, msg: ActiveMessage, transport: Transport, key: str,
                nexthop: str, rcpts: list, now: float) -> None:
        dest = transport.destinations.get(key)
        if dest is not None and dest.is_dead(now):
            self.own_outcome(msg, rcpts, delivery.DEFERRED,
                             f"delivery temporarily suspended: {dest.dead_reason}", dest.dead_dsn)
            return
        # VERP: one recipient per request, so that each gets its own sender.
        limit = 1 if msg.message.attrs.get(verp.ATTR) and msg.sender \
            else transport.limits.recipients
        for chunk in chunks(rcpts, limit):
            transport.enqueue(key, Job(msg, nexthop, chunk))
            msg.outstanding += len(chunk)

    def own_outcome(self, msg: ActiveMessage, rcpts: list, outcome: str,
                    reason: str, dsn: str) -> None:
        """own_outcome - an outcome qmgr decides and logs itself (relay=none)."""
        status = msg.status(self.cfg, rcpts)
        for rcpt in rcpts:
            if outcome == delivery.BOUNCED:
                status.bounced(rcpt, "none", reason, dsn)
            else:
                status.deferred(rcpt, "none", reason, dsn)
            if not rcpt.done:
                msg.deferred = True

    # -- sending requests --------------------------------------------------------
    def schedule(self, now: float) -> None:
        """schedule - send every request the limits allow right now."""
        for transport in list(self.transports.values()):
            while True:
                picked = transport.next_job(now)
                if picked is None:
                    break
                self.dispatch(transport, *picked)

    def dispatch(self, transport: Transport, dest: Destination, job: Job) -> None:
        if not self.dispatcher.available(transport.name):
            log.warning(f"connect to transport private/{transport.name}: "
                        f"No such file or directory")
            self.complete(transport, dest, job, None, UNAVAILABLE)
            return
        req = job.message.request(transport.name, job.nexthop, job.recipients)
        # More jobs wait for this destination: smtp may keep its connection;
        # and it looks in the cache only when an earlier request may have kept
        # one (a round trip to scache per delivery otherwise).
        req.backlog = bool(dest.jobs)
        req.cache_lookup = dest.stored
        dest.stored = dest.stored or req.backlog
        self.dispatcher.send(
            transport.name, req.to_header(),
            lambda header, reason: self.complete(transport, dest, job, header, reason))

    def complete(self, transport: Transport, dest: Destination, job: Job,
                 header: dict | None, reason: str) -> None:
        """complete - an agent answered JOB (HEADER), or it failed (REASON)."""
        msg: ActiveMessage = job.message
        missing = msg.apply_results(job.recipients, header)
        if missing:
            why = reason or (header or {}).get("reason") or "unknown mail transport error"
            self.own_outcome(msg, missing, delivery.DEFERRED, why, "4.3.0")
        self.feedback(transport, dest, header, reason)
        transport.finished(dest)
        msg.outstanding -= len(job.recipients)
        self.advance(msg)

    def feedback(self, transport: Transport, dest: Destination,
                 header: dict | None, reason: str) -> None:
        """feedback - adjust DEST's concurrency from the outcome of a request."""
        if reason == UNAVAILABLE:
            return
        hop = (header or {}).get("hop_status")
        if header is not None and header.get("status") == "ok" and not hop:
            dest.success()
            return
        hop = hop or {"dsn": "4.3.0", "reason": reason or "unknown mail transport error"}
        if dest.failure(time.time(), self.backoff.minimal, hop.get("reason", ""),
                        hop.get("dsn", "4.0.0")):
            self.suspend(transport, dest)

    def suspend(self, transport: Transport, dest: Destination) -> None:
        """suspend - DEST is dead: defer everything waiting for it."""
        reason = f"delivery temporarily suspended: {dest.dead_reason}"
        for job in transport.take_all(dest):
            msg: ActiveMessage = job.message
            self.own_outcome(msg, job.recipients, delivery.DEFERRED, reason, dest.dead_dsn)
            msg.outstanding -= len(job.recipients)
            self.advance(msg)

    # -- finishing a message -------------------------------------------------------
    def finish(self, msg: ActiveMessage) -> None:
        """finish - every recipient has an outcome: notices, then defer or remove.

        As Postfix's qmgr: the bounce log is flushed first (bounced
        recipients are reported now, even while others stay deferred)."""
        now = time.time()
        # soft_bounce: no locally generated bounce, so nothing expires either.
        if msg.deferred and not self.soft_bounce \
                and self.backoff.expired(msg.arrival_time, msg.sender, now):
            self.expire(msg)
        if os.path.exists(queue.bounce_log_path(msg.queue_id)):
            self.notify(msg, "bounce", self.finish_after_bounce)
        else:
            self.finish_after_bounce(msg)

    def finish_after_bounce(self, msg: ActiveMessage) -> None:
        """finish_after_bounce - success notices and sendmail -v reports (trace
        log), then the rest."""
        if os.path.exists(queue.trace_log_path(msg.queue_id)):
            self.notify(msg, "trace", self.finish_after_trace, required=False)
        else:
            self.finish_after_trace(msg)

    def finish_after_trace(self, msg: ActiveMessage) -> None:
        """finish_after_trace - defer (with a delay warning when due) or remove."""
        now = time.time()
        if not msg.deferred:
            self.remove(msg)
        elif not msg.warning_sent and dsn.delay_warning_due(
                self.cfg, msg.queue_id, msg.sender, msg.arrival_time, now):
            self.notify(msg, "delay", self.defer_after_warning, required=False)
        else:
            self.defer(msg, now)

    def defer_after_warning(self, msg: ActiveMessage) -> None:
        """defer_after_warning - note the warning in the queue file, then defer."""
        try:
            msg.note_warning_sent()
        except (OSError, records.CorruptQueueFile) as e:
            log.warning(f"{msg.queue_id}: cannot record the delay warning: {e}")
        self.defer(msg, time.time())

    def expire(self, msg: ActiveMessage) -> None:
        """expire - past its lifetime: bounce what is left, with the last reasons."""
        reasons = last_defer_reasons(msg.queue_id)
        try:
            for rcpts in msg.all_pending(self.rcpt_limit):
                status = msg.status(self.cfg, rcpts)
                for rcpt in rcpts:
                    dsn, reason = reasons.get(rcpt.address, ("4.4.7", "message expired"))
                    status.expired(rcpt, reason, dsn)
        except (OSError, records.CorruptQueueFile) as e:
            log.warning(f"{msg.queue_id}: cannot read recipients to expire: {e}")
            return
        log.info(f"{msg.queue_id}: from=<{msg.sender}>, status=expired, returned to sender")
        msg.deferred = False

    def defer(self, msg: ActiveMessage, now: float) -> None:
        """defer - to deferred/, due again after the backoff time."""
        try:
            path = queue.move(msg.queue_id, "active", "deferred")
            queue.set_retry_time(path, now + self.backoff.retry_delay(msg.arrival_time, now))
        except OSError as e:
            log.warning(f"{msg.queue_id}: cannot move to the deferred queue: {e}")
        else:
            self.log_for_flush(msg)
        self.drop(msg)

    def log_for_flush(self, msg: ActiveMessage) -> None:
        """log_for_flush - tell the flush service MSG waits for its recipients' domains."""
        if self.fast_flush is None or not flush_client.available(self.cfg):
            return
        sites = {r.address.rpartition("@")[2].lower() for r in msg.message.pending()
                 if "@" in r.address}
        for site in sorted(sites - {""}):
            self.fast_flush.add(site, msg.queue_id)

    def drop(self, msg: ActiveMessage) -> None:
        """drop - MSG leaves the active queue: its recipients leave memory."""
        if self.active.pop(msg.queue_id, None) is not None:
            self.in_core -= len(msg.message.recipients)

    def notify(self, msg: ActiveMessage, op: str, then, required: bool = True) -> None:
        """notify - ask the bounce service for OP's notice (bounce, delay, trace),
        then THEN(msg).

        A failed non-delivery notice keeps the message (deferred, tried
        again later); a failed delay or success notice is only a warning."""
        msg.notice_logs = True
        name = self.cfg.get(NOTICE_SERVICES[op])
        if not self.dispatcher.available(name):
            log.warning(f"{msg.queue_id}: no {name} service: "
                        f"sender {NOTICE_NAMES[op]} notification not sent")
            then(msg)
            return
        header = {"op": op, "queue_id": msg.queue_id, "queue_name": "active",
                  "path": msg.path, "sender": msg.sender}

        def answered(reply: dict | None, reason: str) -> None:
            if reply is not None and reply.get("status") == "ok":
                then(msg)
                return
            why = reason or (reply or {}).get("reason", f"{name} service failure")
            log.warning(f"{msg.queue_id}: {name} service failure: {why}")
            if required:
                self.defer(msg, time.time())
            else:
                then(msg)
        self.dispatcher.send(name, header, answered)

    def remove(self, msg: ActiveMessage) -> None:
        """remove - delivery is complete: the file and its logs go."""
        # Without a notice, finish just saw no bounce and no trace log.
        queue.remove(msg.queue_id, "active", notice_logs=msg.notice_logs)
        log.info(f"{msg.queue_id}: removed")
        self.drop(msg)
