"""smtpd: the SMTP server (Postfix's smtpd(8)), one module per concern.

    server.py      the process: accepting on the master's socket, many sessions
    session.py     one SMTP session, a method per command
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
    replies.py     every reply text and log line shape

Interface:
    main()         the body of libexec/smtpd
"""

from __future__ import annotations

import asyncio
import sys

from pymaster.mail import cleanup_client
from pymaster.master import service
from pymaster.util import log


def run(svc: service.Service) -> None:
    """run - open what the sessions need, enter the jail, serve."""
    from services.smtpd.check import Checker, ConfigurationError
    from services.smtpd.server import Server
    from services.smtpd.session import Settings
    from services.smtpd.submit import CleanupClient
    cfg = svc.cfg
    settings = Settings.from_config(cfg)
    checker, checker_error = None, ""
    try:
        checker = Checker(cfg)
        checker.prepare()       # tables and lists are opened before the jail
    except ConfigurationError as e:
        log.warning(str(e))
        checker_error = "451 4.3.5 Server configuration error"
    from services.smtpd import rewrite_context
    rewrite_context.prepare(cfg)     # interface addresses, before the jail
    _import_before_jail(settings)
    endpoint = cleanup_client.endpoint(cfg)
    svc.enter_jail()

    async def serve() -> None:
        cleanup = CleanupClient(endpoint, float(cfg.time("ipc_timeout")))
        await Server(svc, settings, checker, cleanup, checker_error).serve()

    asyncio.run(serve())


def _import_before_jail(settings) -> None:
    """_import_before_jail - modules Python would import lazily later.

    After the chroot or the privilege drop the interpreter's own library may
    be out of reach, so what asyncio, the resolver threads and zeromq load on
    first use is loaded now. TLS and SASL modules (cryptography alone costs
    tens of milliseconds per start) only when this smtpd offers them;
    Checker.prepare() did the same for dnspython."""
    import concurrent.futures.thread  # noqa: F401  (run_in_executor)
    import encodings.idna  # noqa: F401  (getnameinfo/getaddrinfo of host names)
    import zmq.asyncio  # noqa: F401
    from services.smtpd import tls
    tls.import_before_jail(tls=settings.tls is not None and settings.tls.context is not None,
                           sasl=settings.auth is not None and settings.auth.enabled)


def main() -> None:
    if "-S" in sys.argv[1:]:
        # Stand-alone mode for sendmail -bs: one session on stdin/stdout,
        # not a master child.
        from services.smtpd import standalone
        sys.exit(standalone.main(sys.argv[1:]))
    service.main("smtpd", run)
