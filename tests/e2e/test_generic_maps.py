"""smtp_generic_maps through a real instance: envelope and headers rewritten.

Mail from a host without a domain of its own goes in through smtpd and out
through the smtp client to a scripted server on loopback; the server must
see the outside address in MAIL FROM and in the From: header, with the
display name kept, and the body untouched."""

from __future__ import annotations

import smtplib

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port
from tests.support.smtpscript import ScriptServer

MESSAGE = (b"From: Joe User <user@localdomain.local>\r\n"
           b"To: friend@far.example\r\n"
           b"Subject: generic\r\n"
           b"\r\n"
           b"sent by user@localdomain.local\r\n")


def test_sender_and_from_header_rewritten_on_the_way_out(tmp_path):
    port = free_port()
    with DnsServer({}) as dns, ScriptServer(host="127.0.0.2", port=port) as server:
        settings = {"myhostname": "a.test", "mynetworks": "127.0.0.0/8",
                    "inet_interfaces": "127.0.0.1", "dns_nameservers": dns.nameserver,
                    "relayhost": f"[127.0.0.2]:{port}", "smtp_connect_timeout": "5s",
                    "smtp_generic_maps":
                        "inline:{ user@localdomain.local=user@example.com }"}
        with Instance(tmp_path, main_cf=settings) as a:
            with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as s:
                s.sendmail("user@localdomain.local", ["friend@far.example"], MESSAGE)
            a.wait_for_log(r"to=<friend@far\.example>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:"
                           r"\d+, .*status=sent")
    assert len(server.messages) == 1
    txn = server.messages[0]
    assert txn["mail"].split()[0] == "MAIL" and "FROM:<user@example.com>" in txn["mail"]
    assert b"\r\nFrom: Joe User <user@example.com>\r\n" in txn["data"]
    assert b"\r\nTo: friend@far.example\r\n" in txn["data"]
    assert b"\r\nsent by user@localdomain.local\r\n" in txn["data"]
