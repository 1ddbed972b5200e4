"""smtpd: the SMTP server (Postfix's smtpd(8)), one module per concern.

    server.py      the process: accepting on the master's socket, many sessions
    session.py     one SMTP session, a method per command
    commands.py    the command table: verb, handler, pipelining and junk flags, count order
    connection.py  the client connection: bounded input, pipelining view
    command.py     parsing command lines and MAIL/RCPT parameters
    data.py        DATA and BDAT content: end-of-data, dot-unstuffing, size
    check.py       the smtpd_*_restrictions language: lists, classes, modifiers
    access.py      check_*_access and the access(5) actions
    names.py       host name and address syntax/DNS restrictions
    rbl.py         DNS block and allow lists (reject_rbl_client ...)
    policy.py      check_policy_service (the policy delegation protocol)
    xclient.py     XCLIENT and XFORWARD attributes
    limits.py      per-client limits counted by the anvil service
    netlist.py     mynetworks-style host/network lists
    peer.py        the client's verified name and address
    submit.py      the request to cleanup and the Received: header
    proxy.py       the before-queue content filter (smtpd_proxy_filter): the SMTP client
    replies.py     every reply text and log line shape
    verdict.py     what a restriction decides and the Context it looks at
    lazy.py        the heavy optional dependencies (dnspython, TLS, SASL)

Interface:
    main()             the body of libexec/smtpd
    pre_jail(svc) -> Prepared   everything opened while the whole system is visible
"""

from __future__ import annotations

# What asyncio's resolver threads and zeromq load on first use, imported now:
# after the chroot or the privilege drop the interpreter's library may be
# out of reach.
import concurrent.futures.thread  # noqa: F401  (run_in_executor)
import encodings.idna  # noqa: F401  (getnameinfo/getaddrinfo of host names)
import sys
from dataclasses import dataclass

import uvloop

from pymaster.mail import cleanup_client
from pymaster.master import service
from pymaster.util import ipc, log
from services.smtpd import lazy, replies, rewrite_context, standalone
from services.smtpd.check import Checker, ConfigurationError
from services.smtpd.server import Server
from services.smtpd.session import Settings
from services.smtpd.submit import Cleanup


@dataclass
class Prepared:
    """What the serving code needs from pre_jail."""
    settings: Settings
    checker: Checker | None     # None: a bad restriction list; every session gets checker_error
    checker_error: str
    cleanup_endpoint: str


def pre_jail(svc: service.Service) -> Prepared:
    """pre_jail - read the settings, open every table and list, and import what
    this configuration will use (dnspython, TLS, SASL) while all is visible."""
    cfg = svc.cfg
    settings = Settings.from_config(cfg)
    checker, checker_error = None, ""
    try:
        checker = Checker(cfg)
        checker.open_tables()
    except ConfigurationError as e:
        log.warning(str(e))
        checker_error = replies.ERR_CONFIGURATION
    if checker is not None and checker.uses_dns:
        lazy.dns().resolver_for(cfg)        # reads resolv.conf
    if settings.tls is not None and settings.tls.context is not None:
        lazy.tls_crypto()
    if settings.auth is not None and settings.auth.enabled:
        lazy.sasl_backends()
    rewrite_context.learn_interface_addresses(cfg)
    return Prepared(settings, checker, checker_error, cleanup_client.endpoint(cfg))


def run(svc: service.Service) -> None:
    """run - open what the sessions need, enter the jail, serve."""
    state = svc.enter_jail(pre_jail)

    async def serve() -> None:
        cleanup = Cleanup(ipc.AioClient(state.cleanup_endpoint,
                                        float(svc.cfg.time("ipc_timeout"))))
        await Server(svc, state.settings, state.checker, cleanup, state.checker_error).serve()

    # uvloop: libuv's loop does the per-connection work (accept, reads,
    # writes, timers) in C; asyncio's own loop spent about a quarter of an
    # smtpd's CPU in selector and transport code (docs/architecture.md,
    # "CPU per message").
    uvloop.run(serve())


def main() -> None:
    if "-S" in sys.argv[1:]:
        # Stand-alone mode for sendmail -bs: one session on stdin/stdout,
        # not a master child.
        sys.exit(standalone.main(sys.argv[1:]))
    service.main("smtpd", run)
