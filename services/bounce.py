"""bounce: the bounce, defer and trace services, as Postfix's bounce(8).

master.cf runs this one program under three names (`bounce`, `defer`,
`trace`, all with command `bounce`). Delivery agents append the
per-recipient entries to `bounce/ID`, `defer/ID` and `trace/ID` themselves
(pymaster.mail.delivery); this service turns a message's log into a delivery
status notification (pymaster.mail.dsn) and submits it to cleanup as a new
message from the null sender. Requests, from qmgr on private/NAME:

    {"op": "bounce", "queue_id", "queue_name", "path"}   the bounce log
    {"op": "delay",  ...}                                 the defer log
    {"op": "trace" | "success", ...}                      the trace log
                                (NOTIFY=SUCCESS; all of it for sendmail -v/-bv)

and the answer is {"status": "ok"} once every notice that matters is
queued (qmgr may then delete the message), else {"status": "defer",
"reason"} and qmgr keeps the message for another try.

Who gets what (postconf(5) notify_classes, RFC 3461 NOTIFY):
  - a failure goes to the sender, for the recipients whose NOTIFY allows
    it, with the original message (RET=HDRS: its headers); a VERP message
    (pymaster.mail.verp) gets one notice per recipient, each to the sender
    made for that recipient, unless disable_verp_bounces; with
    notify_classes `bounce`, a headers-only copy goes to
    bounce_notice_recipient from double_bounce_sender;
  - a failed bounce (sender <>) goes to 2bounce_notice_recipient with
    notify_classes `bounce` or `2bounce`, else it is dropped;
  - a failed postmaster notice (sender double-bounce@$myhostname) is
    discarded with `undeliverable postmaster notification discarded`;
  - delay warnings follow the same pattern (notify_classes `delay`,
    delay_notice_recipient), success reports go to the sender only.

Log lines: `ID: sender non-delivery notification: NEWID`, `ID: postmaster
non-delivery notification: NEWID`, `ID: sender delay notification: NEWID`,
`ID: postmaster delay notification: NEWID`, `ID: sender delivery status
notification: NEWID`.

Interface: main(); pre_jail(svc) -> BounceServer; run(svc);
BounceServer(cfg, submit=None).handle(header, payload)
(SUBMIT(sender, recipient, content) -> new queue id is the cleanup seam
the unit tests replace).
"""

from __future__ import annotations

from typing import Callable

from pymaster.mail import cleanup_client, dsn, queue, records, traceflags, verp
from pymaster.mail.bounce_template import Template, TemplateError, load_templates
from pymaster.mail.config import Config
from pymaster.master import service
from pymaster.util import ipc, log

Submit = Callable[[str, str, bytes], str]
SUBMIT_TIMEOUT = 60.0


class SubmitError(Exception):
    """cleanup did not take a notice."""


class BounceServer:
    """The request handler of the bounce, defer and trace services."""

    def __init__(self, cfg: Config, submit: Submit | None = None) -> None:
        self.cfg = cfg
        self.templates = load_templates(cfg)
        self.submit = submit or CleanupSubmitter(cfg).submit
        self.notify_classes = set(cfg.list("notify_classes"))
        self.host = cfg.get("myhostname")
        self.double_bounce = f"{cfg.get('double_bounce_sender')}@{self.host}"

    # -- requests ----------------------------------------------------------
    def handle(self, header: dict, payload: list) -> tuple[dict, list]:
        """handle - one request from qmgr; the answer."""
        op = header.get("op")
        flush = {"bounce": self.flush_bounce, "delay": self.delay_warning,
                 "trace": self.flush_trace, "success": self.flush_trace}.get(op or "")
        if flush is None:
            return {"status": "error", "reason": f"unknown request: {op}"}, []
        queue_id = str(header.get("queue_id", ""))
        if not queue.is_queue_id(queue_id):
            return {"status": "error", "reason": f"bad queue id: {queue_id!r}"}, []
        path = header.get("path") or queue.path_of(header.get("queue_name", "active"), queue_id)
        try:
            flush(queue_id, path, header)
        except SubmitError as e:
            return {"status": "defer", "reason": str(e)}, []
        return {"status": "ok"}, []

    def flush_bounce(self, queue_id: str, path: str, header: dict) -> None:
        """flush_bounce - the non-delivery notices for the bounce log; then it goes."""
        log_path = queue.bounce_log_path(queue_id)
        with queue.flushing_log(log_path) as present:
            rcpts = dsn.read_log(log_path) if present else []
            if rcpts:
                msg, content = self._original(path, header)
                self._failure_notices(queue_id, msg, content, rcpts)
            queue.unlink_if_present(log_path)

    def _failure_notices(self, queue_id: str, msg: records.Message, content: bytes | None,
                         rcpts: list[dsn.RecipientStatus]) -> None:
        sender = msg.sender
        if self._is_double_bounce(sender):
            log.warning(f"{queue_id}: undeliverable postmaster notification discarded")
            return
        if not sender:
            if self.notify_classes & {"bounce", "2bounce"}:
                notice = self._notice("failure", msg, rcpts, self._recipient("2bounce"),
                                      postmaster=True)
                new_id = self._send(notice, content, self.double_bounce)
                log.info(f"{queue_id}: postmaster non-delivery notification: {new_id}")
            return
        wanted = [r for r in rcpts if r.wants(dsn.FAILURE)]
        delims = msg.attrs.get(verp.ATTR, "")
        if delims and not self.cfg.bool("disable_verp_bounces"):
            # VERP: one notice per recipient, to the sender made for it.
            for r in wanted:
                to = verp.sender_for(sender, delims, r.orig or r.address)
                new_id = self._send(self._notice("failure", msg, [r], to), content, "")
                log.info(f"{queue_id}: sender non-delivery notification: {new_id}")
        elif wanted:
            notice = self._notice("failure", msg, wanted, sender)
            new_id = self._send(notice, content, "")
            log.info(f"{queue_id}: sender non-delivery notification: {new_id}")
        if "bounce" in self.notify_classes:
            notice = self._notice("failure", msg, rcpts, self._recipient("bounce"),
                                  postmaster=True)
            self._postmaster_copy(queue_id, notice, content, "non-delivery", sender)

    def delay_warning(self, queue_id: str, path: str, header: dict) -> None:
        """delay_warning - tell the sender (and postmaster) the mail is late."""
        msg, content = self._original(path, header)
        done = {r.offset for r in msg.recipients if r.done}
        rcpts = [r for r in dsn.read_log(queue.defer_log_path(queue_id))
                 if r.offset not in done]
        if rcpts and not self._is_double_bounce(msg.sender):
            self._delay_notices(queue_id, msg, content, rcpts)
        dsn.note_delay_warning(queue_id)

    def _delay_notices(self, queue_id: str, msg: records.Message, content: bytes | None,
                       rcpts: list[dsn.RecipientStatus]) -> None:
        for r in rcpts:
            r.action = "delayed"
        wanted = [r for r in rcpts if r.wants(dsn.DELAY)]
        if msg.sender and wanted:
            notice = self._notice("delay", msg, wanted, msg.sender)
            new_id = self._send(notice, content, "")
            log.info(f"{queue_id}: sender delay notification: {new_id}")
        if "delay" in self.notify_classes:
            notice = self._notice("delay", msg, rcpts, self._recipient("delay"),
                                  postmaster=True)
            self._postmaster_copy(queue_id, notice, content, "delay", msg.sender)

    def flush_trace(self, queue_id: str, path: str, header: dict) -> None:
        """flush_trace - the success report for recipients that asked (NOTIFY=SUCCESS).

        A message whose `trace_flags` attribute says `record` (sendmail -v)
        or `verify` (sendmail -bv) gets a report on every recipient instead,
        from verify_template: the delivery report the user asked for."""
        log_path = queue.trace_log_path(queue_id)
        with queue.flushing_log(log_path) as present:
            self._trace_notice(queue_id, path, header, dsn.read_log(log_path) if present else [])
            queue.unlink_if_present(log_path)

    def _trace_notice(self, queue_id: str, path: str, header: dict,
                      rcpts: list[dsn.RecipientStatus]) -> None:
        """_trace_notice - the report on RCPTS (the trace log's entries)."""
        if rcpts:
            msg, content = self._original(path, header)
            flags = traceflags.of(msg.attrs)
            kind = "trace" if flags & {traceflags.RECORD, traceflags.VERIFY} else "success"
            if kind == "success":
                rcpts = [r for r in rcpts if r.wants(dsn.SUCCESS)]
            if rcpts and msg.sender and not self._is_double_bounce(msg.sender):
                notice = self._notice(kind, msg, rcpts, msg.sender)
                new_id = self._send(notice, content, "")
                log.info(f"{queue_id}: sender delivery status notification: {new_id}")
            if kind == "trace":
                dsn.note_trace_report(queue_id)

    # -- helpers -----------------------------------------------------------
    def _original(self, path: str, header: dict) -> tuple[records.Message, bytes | None]:
        """_original - the queue file's envelope and content.

        A notice goes out even when the queue file cannot be read (bounce(8)
        does its best): the envelope then comes from the request."""
        try:
            msg = records.read_message(path)
            return msg, msg.read_content()
        except (OSError, records.CorruptQueueFile) as e:
            queue_id = str(header.get("queue_id", ""))
            log.warning(f"{queue_id}: cannot read the original message: {e}")
            msg = records.Message(queue_id=queue_id, path=path,
                                  sender=str(header.get("sender", "")),
                                  arrival_time=float(header.get("arrival_time", 0) or 0))
            return msg, None

    def _notice(self, kind: str, msg: records.Message, rcpts: list[dsn.RecipientStatus],
                to: str, postmaster: bool = False) -> dsn.Notice:
        lifetime = self.cfg.time("maximal_queue_lifetime" if msg.sender
                                 else "bounce_queue_lifetime")
        return dsn.Notice(kind=kind, queue_id=msg.queue_id, sender=msg.sender,
                          arrival_time=msg.arrival_time, recipients=rcpts, to=to,
                          postmaster=postmaster, ret=msg.attrs.get("ret", "") or "FULL",
                          envid=msg.attrs.get("envid", ""),
                          retry_until=msg.arrival_time + lifetime if msg.arrival_time else 0)

    def _template(self, kind: str) -> Template:
        return self.templates[{"failure": "failure_template", "delay": "delay_template",
                               "success": "success_template",
                               "trace": "verify_template"}[kind]]

    def _send(self, notice: dsn.Notice, content: bytes | None, sender: str) -> str:
        data = dsn.build(self.cfg, self._template(notice.kind), notice, content)
        return self.submit(sender, notice.to, data)

    def _postmaster_copy(self, queue_id: str, notice: dsn.Notice, content: bytes | None,
                         what: str, sender: str) -> None:
        """_postmaster_copy - not critical: a failure is a warning, not a retry."""
        try:
            new_id = self._send(notice, content, self.double_bounce)
        except SubmitError:
            log.warning(f"{queue_id}: postmaster notice failed while "
                        f"{'bouncing' if what == 'non-delivery' else 'warning'} "
                        f"to {sender or '<>'}")
            return
        log.info(f"{queue_id}: postmaster {what} notification: {new_id}")

    def _recipient(self, notice_class: str) -> str:
        name = {"bounce": "bounce_notice_recipient", "2bounce": "2bounce_notice_recipient",
                "delay": "delay_notice_recipient"}[notice_class]
        return self.cfg.get(name)

    def _is_double_bounce(self, sender: str) -> bool:
        """_is_double_bounce - SENDER is our own postmaster notices' sender."""
        if not sender:
            return False
        local, _, domain = sender.rpartition("@")
        if not local:
            local, domain = sender, ""
        return local.lower() == self.cfg.get("double_bounce_sender").lower() \
            and domain.lower() in ("", self.host.lower(), self.cfg.get("myorigin").lower())


class CleanupSubmitter:
    """Submits notices to the cleanup service, as any local submission."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.timeout = max(SUBMIT_TIMEOUT, float(cfg.time("ipc_timeout")))
        self.client: ipc.Client | None = None

    def submit(self, sender: str, recipient: str, content: bytes) -> str:
        """submit - queue CONTENT from SENDER to RECIPIENT; the new queue id."""
        header = cleanup_client.message_request(
            sender, [cleanup_client.recipient(recipient, recipient)],
            {"origin": "bounce", "rewrite_context": "local"})
        if self.client is None:
            self.client = cleanup_client.client(self.cfg, self.timeout)
        try:
            answer, _ = self.client.call(header, [content])
        except ipc.IpcError as e:
            self.client.close()
            self.client = None
            raise SubmitError(f"cannot queue a notification: {e}") from None
        reply = cleanup_client.Reply.of(answer)
        if not reply.ok:
            raise SubmitError(f"cleanup refused a notification: {reply.text}".strip())
        return reply.queue_id



def pre_jail(svc: service.Service) -> BounceServer:
    """pre_jail - the server with bounce_template_file read; a bad template is fatal."""
    try:
        return BounceServer(svc.cfg)
    except TemplateError as e:
        log.fatal(str(e))


def run(svc: service.Service) -> None:
    svc.serve_requests(svc.enter_jail(pre_jail).handle)


def main() -> None:
    service.main("bounce", run)
