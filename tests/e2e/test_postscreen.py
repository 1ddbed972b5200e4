"""postscreen(8) in front of smtpd through the real master, with real clients.

The clients come from different loopback addresses (127.0.0.x), so one
instance holds a clean client, a DNSBL-listed one (served by the loopback
DNS server), allow- and deny-listed ones; a second postscreen listener
with `-o` overrides enforces instead of dropping and runs the deep tests.
"""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest

from tests.support.dnsserver import DnsServer
from tests.support.instance import Instance, free_port

CLEAN, LISTED, ALLOWED, DENIED, PREGREET = "127.0.0.5", "127.0.0.9", "127.0.0.8", \
    "127.0.0.7", "127.0.0.6"
ENFORCED, DEEP, PROXIED = "127.0.0.10", "127.0.0.11", "127.0.0.12"
ZONE = {"9.0.0.127.zen.example": {"A": ["127.0.0.2"]},
        "10.0.0.127.zen.example": {"A": ["127.0.0.4"]},
        "11.0.0.127.zen.example": {"A": ["127.0.0.99"]},     # outside the filter
        "2.2.0.192.zen.example": {"A": ["127.0.0.3"]}}


def master_cf(smtp_port: int, enforce_port: int, proxy_port: int, limit_port: int) -> str:
    """master_cf - the shipped services with postscreen in front of smtpd."""
    from tests.support.instance import SHIPPED_ETC
    text = (SHIPPED_ETC / "master.cf").read_text()
    text = text.replace("127.0.0.1:2525 inet n   -       n       -       -       smtpd",
                        f"127.0.0.1:{smtp_port} inet n - n - 1 postscreen")
    return text + (
        "smtpd     pass  -       -       n       -       -       smtpd\n"
        "dnsblog   unix  -       -       n       -       0       dnsblog\n"
        "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
        f"127.0.0.1:{enforce_port} inet n - n - 1 postscreen\n"
        "  -o postscreen_greet_action=enforce -o postscreen_dnsbl_action=enforce\n"
        "  -o postscreen_pipelining_enable=yes -o postscreen_non_smtp_command_enable=yes\n"
        "  -o postscreen_bare_newline_enable=yes\n"
        f"127.0.0.1:{proxy_port} inet n - n - 1 postscreen\n"
        "  -o postscreen_upstream_proxy_protocol=haproxy\n"
        f"127.0.0.1:{limit_port} inet n - n - 1 postscreen\n"
        "  -o postscreen_client_connection_count_limit=1\n")


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ps")
    smtp_port, enforce_port, proxy_port = free_port(), free_port(), free_port()
    limit_port = free_port()
    with DnsServer(ZONE) as dns:
        inst = Instance(tmp, start=False, master_cf=master_cf(smtp_port, enforce_port,
                                                              proxy_port, limit_port), main_cf={
            "myhostname": "mx.example.com",
            "dns_nameservers": dns.nameserver,
            "mynetworks": "127.0.0.1/32",
            "postscreen_access_list": "permit_mynetworks, cidr:$config_directory/ps_access",
            "postscreen_denylist_action": "drop",
            "postscreen_greet_wait": "1s",
            "postscreen_greet_action": "drop",
            "postscreen_dnsbl_sites": "zen.example=127.0.0.[2..10]*2, list.example*1",
            "postscreen_dnsbl_threshold": "2",
            "postscreen_dnsbl_action": "drop",
            "postscreen_dnsbl_reply_map": "inline:{zen.example=Zen-Block-List}",
            "tlsproxy_tls_loglevel": "1",
        })
        done = inst.postfix("tls", "enable-server")     # a certificate for tlsproxy
        assert done.returncode == 0, done.stderr
        inst.smtp_port = smtp_port
        inst.enforce_port, inst.proxy_port = enforce_port, proxy_port
        inst.limit_port = limit_port
        (inst.config_dir / "ps_access").write_text(f"{ALLOWED}/32 permit\n{DENIED}/32 reject\n")
        with inst:
            inst.start()
            for port in (enforce_port, proxy_port, limit_port):
                inst.wait_for_port(port)
            yield inst


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                    source_address=(source, 0))
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """read_to_end - everything until the server closes."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def read_reply(sock: socket.socket) -> bytes:
    """read_reply - one whole SMTP reply (its last line has a space after the code)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(x) > 3 and x[3:4] == b" " for x in lines[:-1]):
            return data


def deliver(inst, source: str, user: str, port: int | None = None) -> None:
    body = f"Subject: {user}\n\nfor {user}\n".encode()
    with smtplib.SMTP("127.0.0.1", port or inst.smtp_port, timeout=30,
                      source_address=(source, 0)) as s:
        s.sendmail("sender@client.example", [f"{user}@localhost"], body)


def test_clean_client_passes_to_smtpd_and_delivers(inst):
    deliver(inst, CLEAN, "clean")
    inst.maildir_messages(inst.mailbox_dir / "localhost" / "clean")
    inst.wait_for_log(rf"postfix/postscreen\[\d+\]: CONNECT from \[{CLEAN}\]:\d+ "
                      rf"to \[127\.0\.0\.1\]:{inst.smtp_port}$")
    inst.wait_for_log(rf"postfix/postscreen\[\d+\]: PASS NEW \[{CLEAN}\]:\d+$")
    inst.wait_for_log(rf"postfix/smtpd\[\d+\]: connect from localhost\[{CLEAN}\]|"
                      rf"postfix/smtpd\[\d+\]: connect from unknown\[{CLEAN}\]")
    inst.wait_for_log(r"postfix/virtual\[\d+\]: .*to=<clean@localhost>.*status=sent")


def test_returning_client_passes_from_the_cache(inst):
    deliver(inst, CLEAN, "again")
    inst.maildir_messages(inst.mailbox_dir / "localhost" / "again")
    inst.wait_for_log(rf"PASS OLD \[{CLEAN}\]:\d+$")


def test_pregreeting_client_is_dropped(inst):
    with connect(inst.smtp_port, PREGREET) as sock:
        sock.sendall(b"EHLO zombie.example\r\n")
        reply = read_to_end(sock)
    assert reply.endswith(b"521 5.5.1 Protocol error\r\n"), reply
    inst.wait_for_log(rf"PREGREET 21 after [0-9.]+ from \[{PREGREET}\]:\d+: "
                      r"EHLO zombie\.example\\r\\n$")
    inst.wait_for_log(rf"DISCONNECT \[{PREGREET}\]:\d+$")


def test_dnsbl_listed_client_is_dropped_with_the_reply_map_name(inst):
    with connect(inst.smtp_port, LISTED) as sock:
        reply = read_to_end(sock)
    assert reply.endswith(b"521 5.7.1 Service unavailable; client [127.0.0.9] blocked "
                          b"using Zen-Block-List\r\n"), reply
    inst.wait_for_log(rf"DNSBL rank 2 for \[{LISTED}\]:\d+$")
    inst.wait_for_log(r"postfix/dnsblog\[\d+\]: addr 127\.0\.0\.9 listed by domain "
                      r"zen\.example as 127\.0\.0\.2$")


def test_access_list_permit_skips_the_tests(inst):
    deliver(inst, ALLOWED, "allowed")
    inst.maildir_messages(inst.mailbox_dir / "localhost" / "allowed")
    inst.wait_for_log(rf"ALLOWLISTED \[{ALLOWED}\]:\d+$")


def test_access_list_reject_drops(inst):
    with connect(inst.smtp_port, DENIED) as sock:
        reply = sock.recv(4096)
    assert reply == b"521 5.3.2 Service currently unavailable\r\n"
    inst.wait_for_log(rf"DENYLISTED \[{DENIED}\]:\d+$")


def test_enforced_dnsbl_rejects_rcpt_and_logs_it(inst):
    with smtplib.SMTP("127.0.0.1", inst.enforce_port, timeout=30,
                      source_address=(ENFORCED, 0)) as s:
        s.ehlo("bad.example")
        assert s.mail("spam@bad.example")[0] == 250
        code, text = s.rcpt("victim@localhost")
    assert (code, text) == (550, b"5.7.1 Service unavailable; client [127.0.0.10] "
                                 b"blocked using Zen-Block-List")
    inst.wait_for_log(rf"NOQUEUE: reject: RCPT from \[{ENFORCED}\]:\d+: 550 5\.7\.1 Service "
                      rf"unavailable; client \[{ENFORCED}\] blocked using Zen-Block-List; "
                      r"from=<spam@bad\.example>, to=<victim@localhost>, proto=ESMTP, "
                      r"helo=<bad\.example>$")


def test_deep_tests_then_the_client_must_come_back(inst):
    with smtplib.SMTP("127.0.0.1", inst.enforce_port, timeout=30,
                      source_address=(DEEP, 0)) as s:
        s.ehlo("good.example")
        assert b"PIPELINING" not in s.ehlo_resp
        s.mail("a@good.example")
        assert s.rcpt("b@localhost") == (450, b"4.3.2 Service currently unavailable")
    inst.wait_for_log(rf"PASS NEW \[{DEEP}\]:\d+$")
    inst.wait_for_log(rf"DISCONNECT \[{DEEP}\]:\d+$")
    deliver(inst, DEEP, "deep", inst.enforce_port)
    inst.maildir_messages(inst.mailbox_dir / "localhost" / "deep")
    inst.wait_for_log(rf"PASS OLD \[{DEEP}\]:\d+$")


def test_pipelining_client_is_caught(inst):
    source = "127.0.0.13"
    with connect(inst.enforce_port, source) as sock:
        # "220-" at once, "220 " from the engine after the greet wait.
        assert read_reply(sock).startswith(b"220-mx.example.com ESMTP")
        sock.sendall(b"EHLO pipe.example\r\nMAIL FROM:<a@pipe.example>\r\n")
        read_reply(sock)
    inst.wait_for_log(rf"COMMAND PIPELINING from \[{source}\]:\d+ after EHLO: "
                      r"MAIL FROM:<a@pipe\.example>\\r\\n$")


def test_haproxy_header_names_the_client(inst):
    with connect(inst.proxy_port, "127.0.0.1") as sock:
        sock.sendall(b"PROXY TCP4 192.0.2.2 192.0.2.25 40000 25\r\n")
        reply = read_to_end(sock)
    assert reply.endswith(b"521 5.7.1 Service unavailable; client [192.0.2.2] blocked "
                          b"using Zen-Block-List\r\n"), reply
    inst.wait_for_log(r"CONNECT from \[192\.0\.2\.2\]:40000 to \[192\.0\.2\.25\]:25$")
    inst.wait_for_log(r"DNSBL rank 2 for \[192\.0\.2\.2\]:40000$")


def test_starttls_in_postscreens_engine_goes_through_tlsproxy(inst):
    source = "127.0.0.21"
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", inst.enforce_port, timeout=30,
                      source_address=(source, 0)) as s:
        s.ehlo("tls.example")
        assert s.has_extn("starttls")
        assert s.starttls(context=context)[0] == 220
        s.ehlo("tls.example")
        assert not s.has_extn("starttls")
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.mail("a@tls.example")
        assert s.rcpt("b@localhost") == (450, b"4.3.2 Service currently unavailable")
    inst.wait_for_log(rf"postfix/tlsproxy\[\d+\]: Anonymous TLS connection established from "
                      rf"\[{source}\]:\d+: TLSv1\.[23] with cipher ")
    inst.wait_for_log(rf"NOQUEUE: reject: RCPT from \[{source}\]:\d+: 450 4\.3\.2 Service "
                      r"currently unavailable; from=<a@tls\.example>, to=<b@localhost>, "
                      r"proto=ESMTP, helo=<tls\.example>$")
    inst.wait_for_log(rf"PASS NEW \[{source}\]:\d+$")
    inst.wait_for_log(rf"postfix/tlsproxy\[\d+\]: DISCONNECT \[{source}\]:\d+$")


def test_reload_keeps_postscreen_and_the_pass_service_serving(inst):
    done = inst.postfix("reload")
    assert done.returncode == 0, done.stderr
    inst.wait_for_log(r"reload -- version")
    deliver(inst, "127.0.0.22", "after-reload")
    inst.maildir_messages(inst.mailbox_dir / "localhost" / "after-reload")
    inst.wait_for_log(r"PASS NEW \[127\.0\.0\.22\]:\d+$")


def test_a_second_connection_over_the_client_limit_is_refused(inst):
    source = "127.0.0.23"
    with connect(inst.limit_port, source) as first:
        assert first.recv(4096).startswith(b"220-")   # still in the greet wait
        with connect(inst.limit_port, source) as second:
            assert second.recv(4096) == b"421 4.7.0 Error: too many connections\r\n"
    inst.wait_for_log(rf"NOQUEUE: reject: CONNECT from \[{source}\]:\d+: too many connections$")
