"""error: the delivery agent that fails mail on purpose, as Postfix's error(8).

The request's next hop is the reason, optionally led by an enhanced status
code: `error:5.1.1 User unknown` in a transport table gives next hop
"5.1.1 User unknown". Every recipient is bounced with that code and text
(default 5.0.0); a 4.X.X code defers instead. Run under the service name
`retry` (master.cf `retry unix - - n - - error`), every recipient is
deferred (default 4.0.0), which is how Postfix holds mail for later.

Interface: main(), pre_jail(svc) -> handler, run(svc),
parse_reason(nexthop, default_dsn) -> (dsn, text),
make_deliver(service_name) -> deliver(req, status).
"""

from __future__ import annotations

import re
from typing import Callable

from pymaster.mail import delivery
from pymaster.master import service

DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")
DEFAULT_TEXT = "delivery failed"


def parse_reason(nexthop: str, default_dsn: str) -> tuple[str, str]:
    """parse_reason - (dsn, text) from "5.1.1 User unknown" or plain text."""
    m = DSN_RE.match(nexthop)
    if not m:
        return default_dsn, nexthop.strip() or DEFAULT_TEXT
    dsn = ".".join(m.groups())
    return dsn, nexthop[m.end():].strip() or DEFAULT_TEXT


def make_deliver(service_name: str) -> Callable[[delivery.DeliveryRequest, delivery.Status], None]:
    """make_deliver - the delivery function for service NAME (error or retry)."""
    retry = service_name == "retry"

    def deliver(req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        dsn, text = parse_reason(req.nexthop, "4.0.0" if retry else "5.0.0")
        for rcpt in req.recipients:
            if retry or not dsn.startswith("5"):
                status.deferred(rcpt, "none", text, delivery.soft_dsn(dsn))
            else:
                status.bounced(rcpt, "none", text, dsn)
    return deliver


def pre_jail(svc: service.Service) -> service.Handler:
    """pre_jail - the request handler: error opens nothing."""
    # deliver touches nothing, so it is also what sendmail -bv reports.
    deliver = make_deliver(svc.name)
    return delivery.request_handler(deliver, svc.cfg, verify=deliver)


def run(svc: service.Service) -> None:
    svc.serve_requests(svc.enter_jail(pre_jail))


def main() -> None:
    service.main("error", run)
