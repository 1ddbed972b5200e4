"""cleanup: the service that turns a submission into a complete queue file.

smtpd, pickup and bounce hand cleanup a message (the `message` request of
docs/architecture.md); cleanup canonicalises and expands the envelope, runs
the header pipeline (missing headers added, Return-Path: removed, hop
limit, header size limit, Bcc: for sendmail -t), writes the queue file into
incoming/, fsyncs it, marks it complete, answers, and wakes qmgr.

Modules: state (per-message state, reply texts), headers (the header
pipeline), envelope (sender and recipients), message (the request handler),
reservation (the queue file smtpd reserves at its first accepted recipient),
masquerade (masquerade_domains), bcc (automatic copies), checks
(header_checks, body_checks, with pymaster.mail.mime's MIME walk), strict
(the strict_* MIME options, on the same walk), actions
(HOLD, DISCARD, REDIRECT, BCC, FILTER).

Interface: main(); pre_jail(svc) -> handler; run(svc);
handle_message(cfg, header, payload).
"""

from __future__ import annotations

from pymaster.mail.resolve import resolver_for
from pymaster.mail.rewrite import rewriter_for
from pymaster.master import service

from .bcc import open_bcc_maps
from .checks import checks_for
from .envelope import mapper_for
from .message import handle_message, make_handler

__all__ = ["main", "pre_jail", "run", "handle_message", "make_handler"]


def pre_jail(svc: service.Service) -> service.Handler:
    """pre_jail - the rewriter, the resolver with the local addresses, the
    address, bcc and content check tables opened; the request handler."""
    rewriter_for(svc.cfg)
    resolver_for(svc.cfg).local_addresses()
    mapper_for(svc.cfg)
    checks_for(svc.cfg)
    open_bcc_maps(svc.cfg)
    return make_handler(svc.cfg, later=svc.after_reply)


def run(svc: service.Service) -> None:
    """run - enter the jail, then serve."""
    svc.serve_requests(svc.enter_jail(pre_jail))


def main() -> None:
    service.main("cleanup", run)
