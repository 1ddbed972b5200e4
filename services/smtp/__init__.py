"""smtp: the SMTP and LMTP delivery client, as Postfix's smtp(8) and lmtp(8).

One program serves the master.cf services `smtp`, `relay` and `lmtp`. It
speaks LMTP (RFC 2033) when it runs as libexec/lmtp or under the service
name `lmtp`, and then reads the lmtp_* parameters. qmgr sends it delivery
requests (pymaster/mail/delivery.py); it delivers each to the request's next
hop and reports every recipient. A verify request (sendmail -bv, address
probes) gets the same conversation up to the RCPT replies, without DATA.

Modules, one concern each:
    settings     the smtp_*/lmtp_* parameters, read once
    nexthop      next-hop syntax: domain, [host]:port, inet:, unix:
    dns          MX and address lookups, null MX, loops to ourselves
    session      one connection: I/O, time limits, greeting, EHLO/HELO/LHLO
    transaction  MAIL/RCPT/DATA with PIPELINING, SIZE, 8BITMIME, DSN, XFORWARD
    content      the content on the wire, streamed (CRLF, dot-stuffing, long lines)
    mime7bit     8bit -> quoted-printable for servers without 8BITMIME
    reply        replies and Postfix-worded reasons
    cache        connection reuse between requests
    tls          STARTTLS and the per-destination TLS policy (smtp_tls_*)
    sasl         SMTP AUTH with smtp_sasl_password_maps (smtp_sasl_*)
    generic      smtp_generic_maps
    deliver      one request: hosts in order, outcomes per recipient

Interface: main() (smtp), lmtp_main() (lmtp), pre_jail(svc) -> Client, run(svc).
"""

from __future__ import annotations

from pymaster.mail import delivery
from pymaster.mail.scache_client import ScacheClient
from pymaster.master import service
from services.smtp.deliver import Client
from services.smtp.dns import load_record_types
from services.smtp.settings import Settings


def pre_jail(svc: service.Service) -> Client:
    """pre_jail - the client with its tables, TLS contexts and resolvers;
    dnspython's record types loaded and this host's addresses found.

    LMTP when started as libexec/lmtp or under the service name lmtp."""
    lmtp = svc.program == "lmtp" or svc.name == "lmtp"
    client = Client(svc.cfg, Settings.from_config(svc.cfg, lmtp),
                    shared=ScacheClient.from_config(svc.cfg))
    load_record_types()
    client.lookup.own_addresses()
    return client


def run(svc: service.Service) -> None:
    """run - enter the jail, serve delivery requests."""
    client = svc.enter_jail(pre_jail)
    try:
        svc.serve_requests(delivery.request_handler(client.deliver, svc.cfg,
                                                    verify=client.verify))
    finally:
        client.close()


def main() -> None:
    service.main("smtp", run)


def lmtp_main() -> None:
    service.main("lmtp", run)
