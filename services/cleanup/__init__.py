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

Interface: main(); run(svc); handle_message(cfg, header, payload).
"""

from __future__ import annotations

from pymaster.mail import queue
from pymaster.master import service

from .message import handle_message, make_handler

__all__ = ["main", "run", "handle_message", "make_handler"]


def run(svc: service.Service) -> None:
    """run - build the tables and the handler before the jail, then serve."""
    queue.configure(svc.cfg)
    # Opened now, before chroot: the rewriter, resolver and address tables.
    from pymaster.mail.resolve import resolver_for
    from pymaster.mail.rewrite import rewriter_for
    from .envelope import mapper_for
    rewriter_for(svc.cfg)
    resolver_for(svc.cfg).local_addresses()
    mapper_for(svc.cfg)
    from . import bcc
    from .checks import checks_for
    checks_for(svc.cfg)         # header/body check tables (pymaster.mail.mime is imported)
    bcc.open_tables(svc.cfg)
    handler = make_handler(svc.cfg)
    svc.enter_jail()
    svc.serve_requests(handler)


def main() -> None:
    service.main("cleanup", run)
