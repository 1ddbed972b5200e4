"""local(8): the local delivery agent.

qmgr hands it the recipients of domains in mydestination (one per request
by default: local_destination_recipient_limit = 1). For each it follows
local(8): loop check, alias_maps, the user's .forward, the user's mailbox
(mailbox_transport, mailbox_command, home_mailbox, mail_spool_directory),
fallback_transport, luser_relay, and otherwise bounces `unknown user:
"NAME"`. It runs as root (master.cf `local unix - n n - - local`) and
switches to the recipient's account before it writes or runs anything; run
as another user (the in-tree instance) it delivers wherever that user may
write.

One module per kind of delivery, as Postfix's local/ directory has:

    context.py   the state carried down the expansion, and outcomes
    recipient.py the order: loop, alias, .forward, mailbox, unknown user
    alias.py     alias_maps, owner- aliases, alias privileges
    items.py     a destination list and where each destination goes
    include.py   :include: files
    forward.py   .forward files, and forwarding through cleanup
    command.py   |command and mailbox_command
    file.py      /file destinations
    mailbox.py   the user's mailbox: Maildir or mbox
    transport.py mailbox_transport, fallback_transport: another agent delivers
    expand.py    $name expansion with the recipient's attributes

One recipient may have several outcomes (an alias with a command, a file
and two addresses). Postfix logs each; the recipient is marked done only
when none was deferred. Here every outcome is logged with the recipient's
status line; the queue file and qmgr see one outcome per recipient: the
first deferral, else the first bounce, else success.

Interface:
    main()                                  the libexec/local program
    pre_jail(svc) -> LocalAgent, run(svc)
    LocalAgent(cfg).deliver(req, status)    one delivery request
"""

from __future__ import annotations

from pymaster.mail import cleanup_client, delivery
from pymaster.mail.config import Config
from pymaster.master import service
from pymaster.util import log
from pymaster.util.tables import TableError
from services.local.context import BOUNCED, DEFERRED, Delivery, Message, Outcome, Target, deferred
from services.local.forward import submit_forwards
from services.local.recipient import deliver_recipient

RELAY = "local"


class LocalAgent:
    """Delivers the recipients of delivery requests, one at a time."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.cleanup = cleanup_client.client(cfg)

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """deliver - deliver every recipient of REQ and report each through STATUS."""
        message = Message.from_queue(delivery.open_content(req), req)
        for rcpt in req.recipients:
            outcomes = self.deliver_one(message, rcpt)
            report(status, rcpt, outcomes)

    def deliver_one(self, message: Message, rcpt) -> list[Outcome]:
        """deliver_one - the outcomes of delivering MESSAGE to queue recipient RCPT."""
        work = Delivery(self.cfg, message, rcpt)
        try:
            deliver_recipient(work, Target.for_recipient(rcpt, self.cfg))
        except TableError as e:
            work.add(deferred(f"table lookup failed: {e}", "4.3.0"))
        if work.forwards and not work.has_deferral:
            work.outcomes.extend(submit_forwards(work, self.cleanup))
        if not work.outcomes:
            work.add(deferred("no delivery outcome", "4.3.0"))
        return work.outcomes


def final_outcome(outcomes: list[Outcome]) -> Outcome:
    """final_outcome - what qmgr is told: the first deferral, else the first
    bounce, else success."""
    for kind in (DEFERRED, BOUNCED):
        for o in outcomes:
            if o.kind == kind:
                return o
    return outcomes[-1]


def report(status: delivery.Status, rcpt, outcomes: list[Outcome]) -> None:
    """report - log every outcome; record the final one in the queue file.

    An outcome passed back by another agent (mailbox_transport) was logged
    and written to the status logs by that agent: it is only recorded."""
    final = final_outcome(outcomes)
    for o in outcomes:
        if o is not final and not o.passed:
            log.info(status.status_line(rcpt, o.kind, o.relay or RELAY, o.reason, o.dsn))
    relay = final.relay or RELAY
    if final.passed:
        status.passed_on(rcpt, final.kind, final.reason, final.dsn)
    else:
        status.report(rcpt, final.kind, relay, final.reason, final.dsn)


def pre_jail(svc: service.Service) -> LocalAgent:
    """pre_jail - the agent and its cleanup client (alias_maps: every table is opened)."""
    return LocalAgent(svc.cfg)


def run(svc: service.Service) -> None:
    agent = svc.enter_jail(pre_jail)
    # sendmail -bv runs the same expansion; each mailbox, file, command and
    # forward only reports what it would do (context.Delivery.verify).
    svc.serve_requests(delivery.request_handler(agent.deliver, svc.cfg, verify=agent.deliver))


def main() -> None:
    service.main("local", run)
