"""discard: the delivery agent that throws mail away, as Postfix's discard(8).

Every recipient of a request is marked done and logged as delivered:

    QUEUEID: to=<rcpt>, relay=none, delay=…, delays=…, dsn=2.0.0, status=sent (REASON)

REASON is the request's next hop (the text after `discard:` in a transport
table), or "discarded" when there is none.

Interface: main(), pre_jail(svc) -> handler, run(svc),
deliver(req, status) for the request loop.
"""

from __future__ import annotations

from pymaster.mail import delivery
from pymaster.master import service


def deliver(req: delivery.DeliveryRequest, status: delivery.Status) -> None:
    """deliver - report every recipient sent, without touching the content."""
    reason = req.nexthop or "discarded"
    for rcpt in req.recipients:
        status.sent(rcpt, "none", reason)


def pre_jail(svc: service.Service) -> service.Handler:
    """pre_jail - the request handler: discard opens nothing."""
    # deliver touches nothing, so it is also what sendmail -bv reports. The
    # done marks are not fsynced (Postfix's agents never fsync them): a
    # power loss that forgets one discards that recipient again, which
    # changes nothing but the log; a killed process forgets none. The fsync
    # was about 90 us of CPU (and 0.1-0.3 ms of waiting) per message.
    return delivery.request_handler(deliver, svc.cfg, verify=deliver, sync_done=False)


def run(svc: service.Service) -> None:
    svc.serve_requests(svc.enter_jail(pre_jail))


def main() -> None:
    service.main("discard", run)
