"""The smtp and lmtp clients through real pymaster instances.

Mail goes in through instance A's smtpd, qmgr hands it to A's smtp (or
lmtp) service, which finds the next hop through a loopback DNS server
(tests/support/dnsserver.py) and delivers to Postfix's smtp-sink, to a second
pymaster instance B, or to a scripted SMTP/LMTP server (tests/support/smtpscript.py)
that gives mixed answers. MX targets live on 127.0.0.2 and 127.0.0.3 so
that they are not this host's own address (which would be a mail loop)."""

from __future__ import annotations

import os
import re
import smtplib

import pytest

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port, is_root, listening, submit_to_cleanup
from tests.support.sink import smtp_sink
from tests.support.smtpscript import ScriptServer
from tests.support.wait import wait_until

NOBODY = 65534


def a_settings(dns: DnsServer, **extra) -> dict[str, str]:
    settings = {"myhostname": "a.test", "mynetworks": "127.0.0.0/8",
                "dns_nameservers": dns.nameserver, "smtp_connect_timeout": "5s",
                "inet_interfaces": "127.0.0.1"}
    settings.update(extra)
    return settings


def send(inst: Instance, rcpts: list[str], sender: str = "",
         body: bytes = b"Subject: relayed\n\nhello over there\n") -> None:
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail(sender, rcpts, body)


@pytest.fixture
def sink():
    """Postfix's smtp-sink on 127.0.0.2, accepting everything."""
    with smtp_sink("127.0.0.2") as port:
        yield port


def test_relayhost_and_transport_map_to_smtp_sink(tmp_path, sink):
    zone = {"sink.test": {"A": ["127.0.0.2"]}}
    with DnsServer(zone) as dns:
        settings = a_settings(dns, relayhost=f"[sink.test]:{sink}",
                              relay_domains="backup.example",
                              transport_maps=f"inline:{{ mapped.example=smtp:[127.0.0.2]:{sink} }}")
        with Instance(tmp_path, main_cf=settings) as a:
            send(a, ["someone@far.example"])
            send(a, ["other@mapped.example"])
            send(a, ["user@backup.example"])
            # relay_domains go through relay_transport: the `relay` service.
            a.wait_for_log(r"postfix/relay/smtp\[\d+\]: \w+: to=<user@backup\.example>, "
                           rf"relay=sink\.test\[127\.0\.0\.2\]:{sink}, .*status=sent")
            m = a.wait_for_log(r"postfix/smtp\[\d+\]: \w+: to=<someone@far\.example>, "
                               r"relay=sink\.test\[127\.0\.0\.2\]:(\d+), .*status=sent \(250 ")
            assert m.group(1) == str(sink)
            a.wait_for_log(r"to=<other@mapped\.example>, relay=127\.0\.0\.2\[127\.0\.0\.2\]:"
                           rf"{sink}, .*dsn=2\.0\.0, status=sent")


def test_mx_order_with_fallback_to_a_second_instance(tmp_path):
    port = free_port()
    zone = {"far.example": {"MX": ["20 mx2.far.example.", "10 mx1.far.example."]},
            "mx1.far.example": {"A": ["127.0.0.2"]},     # nothing listens there
            "mx2.far.example": {"A": ["127.0.0.3"]}}
    b_cf = {"myhostname": "b.test", "virtual_mailbox_domains": "far.example",
            "virtual_mailbox_maps": "static:relayed/",
            "virtual_uid_maps": f"static:{NOBODY}", "virtual_gid_maps": f"static:{NOBODY}"}
    with DnsServer(zone) as dns:
        b = Instance(tmp_path / "b", main_cf=b_cf,
                     master_cf_extra=f"127.0.0.3:{port} inet n - n - - smtpd")
        b.mailbox_dir.mkdir(parents=True, exist_ok=True)
        if is_root():
            os.chown(b.mailbox_dir, NOBODY, NOBODY)
        with b, Instance(tmp_path / "a", main_cf=a_settings(dns, smtp_tcp_port=str(port))) as a:
            wait_until(lambda: listening("127.0.0.3", port))
            send(a, ["user@far.example"], sender="sender@a.test",
                 body="Subject: über\n\nGrüße aus A\n".encode())
            a.wait_for_log(rf"connect to mx1\.far\.example\[127\.0\.0\.2\]:{port}: "
                           r"Connection refused")
            a.wait_for_log(rf"to=<user@far\.example>, relay=mx2\.far\.example\[127\.0\.0\.3\]:"
                           rf"{port}, .*status=sent \(250 ")
            [message] = b.maildir_messages(b.mailbox_dir / "relayed")
    assert "Grüße aus A".encode() in message
    assert b"by b.test" in message and b"from a.test" in message


def test_skipped_5xx_greeting_and_mixed_recipient_results(tmp_path):
    port = free_port()
    zone = {"relay.test": {"MX": ["10 bad.relay.test.", "20 good.relay.test."]},
            "bad.relay.test": {"A": ["127.0.0.2"]},
            "good.relay.test": {"A": ["127.0.0.3"]}}
    refusing = ScriptServer(host="127.0.0.2", port=port, greeting="554 5.7.1 not today")
    mixed = ScriptServer(host="127.0.0.3", port=port, rcpt={
        "nobody@far.example": "550 5.1.1 <nobody@far.example>: Recipient address rejected: "
                              "User unknown",
        "busy@far.example": "450 4.2.1 <busy@far.example>: mailbox busy"})
    with DnsServer(zone) as dns, refusing, mixed:
        settings = a_settings(dns, relayhost="relay.test", smtp_tcp_port=str(port))
        with Instance(tmp_path, main_cf=settings) as a:
            send(a, ["ok@far.example", "nobody@far.example", "busy@far.example"])
            a.wait_for_log(rf"to=<ok@far\.example>, relay=good\.relay\.test\[127\.0\.0\.3\]:"
                           rf"{port}, .*dsn=2\.0\.0, status=sent \(250 2\.0\.0 Ok")
            a.wait_for_log(
                r"to=<nobody@far\.example>, relay=good\.relay\.test\[127\.0\.0\.3\]:\d+, .*"
                r"dsn=5\.1\.1, status=bounced \(host good\.relay\.test\[127\.0\.0\.3\] said: "
                r"550 5\.1\.1 <nobody@far\.example>: Recipient address rejected: User unknown "
                r"\(in reply to RCPT TO command\)\)")
            a.wait_for_log(r"to=<busy@far\.example>, .*dsn=4\.2\.1, status=deferred "
                           r"\(host good\.relay\.test\[127\.0\.0\.3\] said: 450 4\.2\.1")
    assert len(mixed.messages) == 1
    assert mixed.messages[0]["accepted"] == ["ok@far.example"]
    assert refusing.messages == []


def test_virtual_transport_over_lmtp_with_per_recipient_replies(tmp_path):
    # A relative socket path is relative to the queue directory, as in
    # Postfix's `lmtp:unix:private/dovecot-lmtp`.
    with DnsServer({}) as dns:
        settings = a_settings(dns, virtual_mailbox_domains="lmtp.example",
                              virtual_mailbox_maps="static:x",
                              virtual_transport="lmtp:unix:private/lmtp-test")
        with Instance(tmp_path / "a", main_cf=settings) as a:
            path = str(a.queue_dir / "private" / "lmtp-test")
            server = ScriptServer(lmtp=True, unix_path=path, lmtp_replies={
                "gone@lmtp.example": "550 5.1.1 <gone@lmtp.example> User doesn't exist"})
            os.chmod(path, 0o777)
            with server:
                send(a, ["here@lmtp.example", "gone@lmtp.example"])
                a.wait_for_log(r"postfix/lmtp\[\d+\]: \w+: to=<here@lmtp\.example>, "
                               r"relay=a\.test\[private/lmtp-test\], .*status=sent \(250 2\.0\.0 "
                               r"<here@lmtp\.example> delivered\)")
                a.wait_for_log(r"to=<gone@lmtp\.example>, .*dsn=5\.1\.1, status=bounced \(host "
                               r"a\.test\[private/lmtp-test\] said: 550 5\.1\.1 "
                               r"<gone@lmtp\.example> User doesn't exist \(in reply to end of "
                               r"DATA command\)\)")
    assert server.commands[0] == "LHLO a.test"


def big_message(size: int = 5 * 1024 * 1024) -> bytes:
    """big_message - SIZE bytes of message whose lines need care on the wire:
    leading dots (stuffed), a line of exactly 998 characters (not folded) and
    a last line without a newline."""
    headers = (b"From: sender@a.test\nTo: big@big.example\nSubject: big\n"
               b"Date: Mon, 1 Dec 2025 10:00:00 +0000\nMessage-ID: <big@a.test>\n\n")
    line = b".a body line that starts with a dot, as a stuffed line does on the wire\n"
    body = line * (size // len(line)) + b"." + b"x" * 997 + b"\n..\n.\nthe end, no newline"
    return headers + body


def test_a_5mb_message_arrives_byte_identical(tmp_path):
    content = big_message()
    with ScriptServer() as server, DnsServer({}) as dns:
        settings = a_settings(dns, message_size_limit="0",
                              transport_maps=f"inline:{{ big.example=smtp:[127.0.0.1]:"
                                             f"{server.port} }}")
        with Instance(tmp_path, main_cf=settings) as a:
            queue_id = submit_to_cleanup(a, ["big@big.example"], content, "sender@a.test")
            a.wait_for_log(rf"{queue_id}: to=<big@big\.example>, .*status=sent \(250 ")
    [txn] = server.messages
    # The server un-stuffs the dots; the last line gained its line end.
    assert txn["data"] == content.replace(b"\n", b"\r\n") + b"\r\n"


def test_452_too_many_recipients_sends_the_rest_in_new_transactions(tmp_path):
    rcpts = [f"r{i}@limit.example" for i in range(1, 6)]
    with ScriptServer(max_rcpts=2) as server, DnsServer({}) as dns:
        settings = a_settings(dns, transport_maps=f"inline:{{ limit.example=smtp:"
                                                  f"[127.0.0.1]:{server.port} }}")
        with Instance(tmp_path, main_cf=settings) as a:
            send(a, rcpts, sender="sender@a.test")
            for rcpt in rcpts:
                a.wait_for_log(rf"to=<{re.escape(rcpt)}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                               rf"{server.port}, .*dsn=2\.0\.0, status=sent \(250 ")
            log = a.log_text()
    assert [len(t["accepted"]) for t in server.messages] == [2, 2, 1]
    assert sorted(sum((t["accepted"] for t in server.messages), [])) == rcpts
    assert "status=deferred" not in log
