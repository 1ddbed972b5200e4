"""services.smtp.deliver: one delivery request against scripted servers.

Each test queues a real message in a temporary spool, runs the client
against a scripted SMTP/LMTP server on loopback (tests/support/smtpscript.py) and
a loopback DNS server (tests/support/dnsserver.py), and reads the status lines the
client logged and the transaction the server saw."""

from __future__ import annotations

import re

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.util import log
from pymaster.mail.config import Config
from services.smtp.deliver import Client
from services.smtp.settings import Settings
from tests.support.dnsserver import DnsServer
from tests.support.smtpscript import ScriptServer

STATUS_RE = re.compile(r"^(?P<id>\w+): to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?"
                       r"relay=(?P<relay>[^,]+), delay=[\d.]+, delays=[\d./]+, "
                       r"dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$")


@pytest.fixture
def spool(tmp_path, monkeypatch):
    queue.create_layout(str(tmp_path / "spool"))
    monkeypatch.chdir(tmp_path / "spool")
    return tmp_path / "spool"


@pytest.fixture
def logged(monkeypatch):
    lines: list[str] = []
    monkeypatch.setattr(log, "info", lines.append)
    return lines


def make_client(tmp_path, lmtp=False, **values) -> Client:
    settings = {"myhostname": "client.example", "inet_interfaces": "loopback-only",
                "smtp_connect_timeout": "5s", "smtp_connection_cache_on_demand": "no"}
    settings.update({k: str(v) for k, v in values.items()})
    cfg = Config(str(tmp_path), settings)
    return Client(cfg, Settings.from_config(cfg, lmtp))


def queue_message(rcpts, sender="alice@example.com", content=b"Subject: t\n\nbody\n",
                  attrs=None) -> str:
    w = queue.create("active")
    w.write_envelope(1000.0, sender, [records.Recipient(r, orig=r) for r in rcpts], attrs or {})
    w.write_content([content])
    return w.commit()


def request(queue_id: str, nexthop: str, transport="smtp") -> delivery.DeliveryRequest:
    path = queue.path_of("active", queue_id)
    msg = records.read_message(path)
    return delivery.DeliveryRequest(queue_id=queue_id, path=path, transport=transport,
                                    nexthop=nexthop, sender=msg.sender,
                                    recipients=msg.pending(), arrival_time=msg.arrival_time)


def deliver(client: Client, rcpts, nexthop: str, **kw) -> tuple[delivery.Status, dict]:
    req = request(queue_message(rcpts, **kw), nexthop)
    status = delivery.Status(req)
    client.deliver(req, status)
    return status, {r["address"]: r for r in status.results}


def statuses(lines: list[str]) -> dict[str, re.Match]:
    return {m["to"]: m for m in map(STATUS_RE.match, lines) if m}


class TestOutcomes:
    def test_every_recipient_gets_the_servers_answer(self, spool, tmp_path, logged):
        server = ScriptServer(rcpt={"bad@example.com": "550 5.1.1 <bad@example.com>: unknown user",
                                    "later@example.com": "450 4.2.0 <later@example.com>: try later"})
        with server:
            client = make_client(tmp_path)
            _, results = deliver(client, ["good@example.com", "bad@example.com",
                                          "later@example.com"], f"[127.0.0.1]:{server.port}")
        assert results["good@example.com"]["status"] == "sent"
        assert results["bad@example.com"]["status"] == "bounced"
        assert results["later@example.com"]["status"] == "deferred"
        lines = statuses(logged)
        relay = f"127.0.0.1[127.0.0.1]:{server.port}"
        assert lines["good@example.com"]["relay"] == relay
        assert lines["good@example.com"]["reason"] == "250 2.0.0 Ok: queued as TEST1"
        assert lines["bad@example.com"]["dsn"] == "5.1.1"
        assert lines["bad@example.com"]["reason"] == (
            "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@example.com>: unknown user "
            "(in reply to RCPT TO command)")
        assert lines["later@example.com"]["dsn"] == "4.2.0"
        assert len(server.messages) == 1
        assert len(server.messages[0]["accepted"]) == 1

    def test_a_refused_mail_from_answers_for_all(self, spool, tmp_path, logged):
        with ScriptServer(mail="553 5.7.1 <alice@example.com>: Sender address rejected") as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com", "b@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        assert {r["status"] for r in results.values()} == {"bounced"}
        assert all(r["reason"].endswith("(in reply to MAIL FROM command)")
                   for r in results.values())

    def test_a_refused_data_answers_for_the_accepted(self, spool, tmp_path, logged):
        with ScriptServer(data_reply="451 4.3.0 Error: queue file write error") as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "deferred"
        assert results["a@example.com"]["reason"].endswith("(in reply to DATA command)")

    def test_a_5xx_after_the_content_bounces(self, spool, tmp_path, logged):
        with ScriptServer(end_reply="554 5.7.1 Message rejected: spam") as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "bounced"
        assert results["a@example.com"]["reason"] == (
            "host 127.0.0.1[127.0.0.1] said: 554 5.7.1 Message rejected: spam "
            "(in reply to end of DATA command)")

    def test_the_message_comes_from_the_queue_file(self, spool, tmp_path, logged):
        content = b"Subject: t\n\n.leading dot\nbody\n"
        with ScriptServer() as server:
            deliver(make_client(tmp_path), ["a@example.com"], f"[127.0.0.1]:{server.port}",
                    content=content)
        assert server.messages[0]["data"] == content.replace(b"\n", b"\r\n")


class TestConnections:
    def test_connection_refused_defers_with_postfix_wording(self, spool, tmp_path, logged):
        with ScriptServer() as server:
            port = server.port
        status, results = deliver(make_client(tmp_path), ["a@example.com"], f"[127.0.0.1]:{port}")
        r = results["a@example.com"]
        assert r["status"] == "deferred" and r["dsn"] == "4.4.1"
        assert r["reason"] == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
        assert statuses(logged)["a@example.com"]["relay"] == "none"
        assert status.hop_status is not None

    def test_a_list_of_hosts_is_tried_in_order(self, spool, tmp_path, logged):
        with ScriptServer() as dead:
            dead_port = dead.port
        with ScriptServer() as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{dead_port}, [127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "sent"
        assert f"connect to 127.0.0.1[127.0.0.1]:{dead_port}: Connection refused" in logged

    def test_smtp_fallback_relay_after_the_destination_fails(self, spool, tmp_path, logged):
        with ScriptServer() as dead:
            dead_port = dead.port
        with ScriptServer() as fallback:
            client = make_client(tmp_path, smtp_fallback_relay=f"[127.0.0.1]:{fallback.port}")
            _, results = deliver(client, ["a@example.com"], f"[127.0.0.1]:{dead_port}")
        assert results["a@example.com"]["status"] == "sent"
        assert len(fallback.messages) == 1

    def test_the_address_limit_stops_the_search(self, spool, tmp_path, logged):
        with ScriptServer() as dead:
            dead_port = dead.port
        with ScriptServer() as server:
            client = make_client(tmp_path, smtp_mx_address_limit="1")
            _, results = deliver(client, ["a@example.com"],
                                 f"[127.0.0.1]:{dead_port} [127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "deferred"
        assert server.connections == 0

    @pytest.mark.parametrize("skip, outcome", [("yes", "deferred"), ("no", "bounced")])
    def test_a_5xx_greeting(self, spool, tmp_path, logged, skip, outcome):
        with ScriptServer(greeting="554 5.7.1 go away") as server:
            _, results = deliver(make_client(tmp_path, smtp_skip_5xx_greeting=skip),
                                 ["a@example.com"], f"[127.0.0.1]:{server.port}")
        r = results["a@example.com"]
        assert r["status"] == outcome
        assert r["reason"] == "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away"

    def test_a_skipped_greeting_moves_on_to_the_next_host(self, spool, tmp_path, logged):
        with ScriptServer(greeting="421 4.3.2 busy") as busy, ScriptServer() as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{busy.port} [127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "sent"

    def test_helo_when_ehlo_is_refused(self, spool, tmp_path, logged):
        with ScriptServer(ehlo_reply="502 5.5.2 no ESMTP here") as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "sent"
        assert any(c.startswith("HELO client.example") for c in server.commands)
        assert not any("SIZE=" in c for c in server.commands)

    def test_a_cached_session_is_reused_with_rset(self, spool, tmp_path, logged):
        with ScriptServer() as server:
            client = make_client(tmp_path, smtp_connection_cache_on_demand="yes")
            for _ in range(3):
                _, results = deliver(client, ["a@example.com"], f"[127.0.0.1]:{server.port}")
                assert results["a@example.com"]["status"] == "sent"
            client.close()
        assert server.connections == 1
        assert server.commands.count("RSET") == 2
        assert len(server.messages) == 3

    def test_a_dead_cached_session_is_replaced(self, spool, tmp_path, logged):
        client = make_client(tmp_path, smtp_connection_cache_on_demand="yes")
        with ScriptServer() as server:
            port = server.port
            deliver(client, ["a@example.com"], f"[127.0.0.1]:{port}")
        with ScriptServer(port=port) as again:
            _, results = deliver(client, ["a@example.com"], f"[127.0.0.1]:{port}")
        client.close()
        assert results["a@example.com"]["status"] == "sent"
        assert len(again.messages) == 1


class TestExtensions:
    def test_size_dsn_and_8bitmime_parameters(self, spool, tmp_path, logged):
        with ScriptServer() as server:
            deliver(make_client(tmp_path), ["a@example.com"], f"[127.0.0.1]:{server.port}",
                    attrs={"ret": "HDRS", "envid": "ID+2B1", "body": "8BITMIME"},
                    content="Subject: t\n\nbödy\n".encode())
        mail = server.messages[0]["mail"]
        assert mail.startswith("MAIL FROM:<alice@example.com> SIZE=")
        assert "BODY=8BITMIME" in mail and "RET=HDRS" in mail and "ENVID=ID+2B1" in mail
        assert server.messages[0]["rcpts"] == ["RCPT TO:<a@example.com> ORCPT=rfc822;a@example.com"]

    def test_8bit_content_becomes_quoted_printable_without_8bitmime(self, spool, tmp_path,
                                                                     logged):
        with ScriptServer(extensions=["PIPELINING"]) as server:
            deliver(make_client(tmp_path), ["a@example.com"], f"[127.0.0.1]:{server.port}",
                    content="Subject: t\n\nbödy\n".encode())
        data = server.messages[0]["data"]
        assert b"Content-Transfer-Encoding: quoted-printable" in data
        assert b"b=C3=B6dy" in data

    def test_a_message_over_the_servers_size_limit_bounces(self, spool, tmp_path, logged):
        with ScriptServer(extensions=["SIZE 10"]) as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        r = results["a@example.com"]
        assert r["status"] == "bounced" and r["dsn"] == "5.3.4"
        assert r["reason"].startswith("message size ")
        assert r["reason"].endswith("exceeds size limit 10 of server 127.0.0.1[127.0.0.1]")

    def test_xforward_when_enabled_and_offered(self, spool, tmp_path, logged):
        with ScriptServer(extensions=["PIPELINING", "XFORWARD NAME ADDR PROTO HELO"]) as server:
            deliver(make_client(tmp_path, smtp_send_xforward_command="yes"), ["a@example.com"],
                    f"[127.0.0.1]:{server.port}",
                    attrs={"client_name": "c.example", "client_address": "192.0.2.7",
                           "protocol": "ESMTP", "helo_name": "c.example"})
        assert "XFORWARD NAME=c.example ADDR=192.0.2.7 PROTO=ESMTP HELO=c.example" \
            in server.commands

    def test_generic_maps_rewrite_the_envelope(self, spool, tmp_path, logged):
        with ScriptServer() as server:
            client = make_client(tmp_path,
                                 smtp_generic_maps="inline:{ alice@example.com=al@isp.example }")
            deliver(client, ["a@example.com"], f"[127.0.0.1]:{server.port}")
        assert server.messages[0]["mail"].startswith("MAIL FROM:<al@isp.example>")

    def test_tls_required_but_unavailable_defers(self, spool, tmp_path, logged):
        with ScriptServer() as server:
            _, results = deliver(make_client(tmp_path, smtp_tls_security_level="encrypt"),
                                 ["a@example.com"], f"[127.0.0.1]:{server.port}")
        r = results["a@example.com"]
        assert r["status"] == "deferred"
        assert r["reason"] == "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
        assert server.messages == []


class TestLmtp:
    def test_per_recipient_replies_after_the_content(self, spool, tmp_path, logged):
        path = str(tmp_path / "lmtp.sock")
        server = ScriptServer(lmtp=True, unix_path=path, lmtp_replies={
            "full@example.com": "452 4.2.2 <full@example.com> Mailbox full",
            "gone@example.com": "550 5.1.1 <gone@example.com> User doesn't exist"})
        with server:
            _, results = deliver(make_client(tmp_path, lmtp=True),
                                 ["ok@example.com", "full@example.com", "gone@example.com"],
                                 f"unix:{path}")
        assert [results[a]["status"] for a in ("ok@example.com", "full@example.com",
                                               "gone@example.com")] == \
            ["sent", "deferred", "bounced"]
        assert results["gone@example.com"]["reason"] == (
            f"host client.example[{path}] said: 550 5.1.1 <gone@example.com> User doesn't "
            f"exist (in reply to end of DATA command)")
        assert statuses(logged)["ok@example.com"]["relay"] == f"client.example[{path}]"
        assert server.commands[0] == "LHLO client.example"

    def test_lmtp_over_tcp(self, spool, tmp_path, logged):
        with ScriptServer(lmtp=True) as server:
            _, results = deliver(make_client(tmp_path, lmtp=True), ["a@example.com"],
                                 f"inet:127.0.0.1:{server.port}")
        assert results["a@example.com"]["status"] == "sent"


class TestDns:
    ZONE = {
        "example.com": {"MX": ["20 mx2.example.com.", "10 mx1.example.com."]},
        "mx1.example.com": {"A": ["127.0.0.2"]},
        "mx2.example.com": {"A": ["127.0.0.3"]},
        "null.example": {"MX": ["0 ."]},
    }

    def test_mx_preference_order_and_fallback(self, spool, tmp_path, logged):
        with DnsServer(self.ZONE) as dns, ScriptServer(host="127.0.0.3") as mx2:
            client = make_client(tmp_path, dns_nameservers=dns.nameserver,
                                 smtp_tcp_port=mx2.port)
            _, results = deliver(client, ["a@example.com"], "example.com")
        assert results["a@example.com"]["status"] == "sent"
        assert logged[0] == f"connect to mx1.example.com[127.0.0.2]:{mx2.port}: Connection refused"
        assert statuses(logged)["a@example.com"]["relay"] == f"mx2.example.com[127.0.0.3]:{mx2.port}"

    def test_null_mx_bounces(self, spool, tmp_path, logged):
        with DnsServer(self.ZONE) as dns:
            _, results = deliver(make_client(tmp_path, dns_nameservers=dns.nameserver),
                                 ["a@null.example"], "null.example")
        r = results["a@null.example"]
        assert (r["status"], r["dsn"]) == ("bounced", "5.1.10")
        assert r["reason"] == "Domain null.example does not accept mail (nullMX)"

    def test_an_unknown_domain_bounces(self, spool, tmp_path, logged):
        with DnsServer(self.ZONE) as dns:
            _, results = deliver(make_client(tmp_path, dns_nameservers=dns.nameserver),
                                 ["a@nowhere.example"], "nowhere.example")
        r = results["a@nowhere.example"]
        assert (r["status"], r["dsn"]) == ("bounced", "5.4.4")
        assert r["reason"] == ("Host or domain name not found. Name service error for "
                               "name=nowhere.example type=MX: Host not found")


def big_content(lines: int = 6000) -> bytes:
    """big_content - a message of several 64 KB chunks with the lines that
    need care on the wire: leading dots, one of exactly 998 characters, a
    last line without its newline."""
    body = b"".join(b"%s line %d of the body\n" % (b"." if i % 7 == 0 else b"", i)
                    for i in range(lines))
    return (b"Subject: big\n\n" + body + b"." + b"x" * 997 + b"\n"
            + b"...\n.\nno final newline")


def received(content: bytes) -> bytes:
    """received - CONTENT as a server has it after un-stuffing: CRLF line ends."""
    return content.replace(b"\n", b"\r\n") + b"\r\n"


class TestStreaming:
    def test_the_content_streams_and_is_never_read_whole(self, spool, tmp_path, logged,
                                                          monkeypatch):
        def whole(self):
            raise AssertionError("the whole message was read into memory")
        monkeypatch.setattr(records.Message, "read_content", whole)
        content = big_content()
        with ScriptServer() as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}", content=content)
        assert results["a@example.com"]["status"] == "sent"
        assert server.messages[0]["data"] == received(content)

    def test_a_failed_host_and_the_next_get_the_whole_content(self, spool, tmp_path, logged):
        content = big_content()
        zone = {"example.com": {"MX": ["10 mx1.example.com.", "20 mx2.example.com."]},
                "mx1.example.com": {"A": ["127.0.0.2"]},
                "mx2.example.com": {"A": ["127.0.0.3"]}}
        first = ScriptServer(host="127.0.0.2", end_reply="451 4.3.0 Error: try again")
        with first, DnsServer(zone) as dns, ScriptServer(host="127.0.0.3",
                                                         port=first.port) as second:
            client = make_client(tmp_path, dns_nameservers=dns.nameserver,
                                 smtp_tcp_port=first.port)
            _, results = deliver(client, ["a@example.com"], "example.com", content=content)
        assert results["a@example.com"]["status"] == "sent"
        assert statuses(logged)["a@example.com"]["relay"] == \
            f"mx2.example.com[127.0.0.3]:{first.port}"
        assert first.messages[0]["data"] == received(content)
        assert second.messages[0]["data"] == received(content)

    def test_headers_rewritten_by_generic_maps_lead_the_streamed_body(self, spool, tmp_path,
                                                                      logged):
        content = b"From: alice@example.com\n" + big_content()
        with ScriptServer() as server:
            client = make_client(tmp_path,
                                 smtp_generic_maps="inline:{ alice@example.com=al@isp.example }")
            deliver(client, ["a@example.com"], f"[127.0.0.1]:{server.port}", content=content)
        expected = content.replace(b"From: alice@example.com", b"From: al@isp.example", 1)
        assert server.messages[0]["data"] == received(expected)

    def test_8bit_content_for_a_7bit_server_is_converted_whole(self, spool, tmp_path, logged):
        content = "Subject: t\n\n".encode() + "grüße\n".encode() * 20000
        with ScriptServer(extensions=["PIPELINING"]) as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}", content=content)
        assert results["a@example.com"]["status"] == "sent"
        data = server.messages[0]["data"]
        assert b"Content-Transfer-Encoding: quoted-printable\r\n" in data
        assert data.count(b"gr=C3=BC=C3=9Fe\r\n") == 20000

    def test_a_queue_file_that_fails_under_data_defers_without_the_final_dot(
            self, spool, tmp_path, logged, monkeypatch):
        def broken(self, chunk=65536):
            yield b"Subject: t\n\nthe first part\n"
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(records.Message, "iter_content", broken)
        warnings: list[str] = []
        monkeypatch.setattr(log, "warning", warnings.append)
        with ScriptServer() as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        r = results["a@example.com"]
        assert (r["status"], r["dsn"], r["reason"]) == \
            ("deferred", "4.3.0", "unreadable mail queue entry")
        assert "Input/output error" in warnings[0]
        # The server saw the connection end inside the data, never the final dot.
        assert [m["ended"] for m in server.messages] == [False]
        assert server.messages[0]["data"] == b"Subject: t\r\n\r\nthe first part\r\n"


class TestTooManyRecipients:
    RCPTS = [f"r{i}@example.com" for i in range(1, 6)]

    @pytest.mark.parametrize("extensions", [["PIPELINING", "8BITMIME"], ["8BITMIME"]])
    def test_452_sends_the_rest_in_new_transactions(self, spool, tmp_path, logged,
                                                    extensions):
        with ScriptServer(max_rcpts=2, extensions=extensions) as server:
            _, results = deliver(make_client(tmp_path), self.RCPTS,
                                 f"[127.0.0.1]:{server.port}")
        assert {a: r["status"] for a, r in results.items()} == \
            {a: "sent" for a in self.RCPTS}
        assert [t["accepted"] for t in server.messages] == \
            [["r1@example.com", "r2@example.com"], ["r3@example.com", "r4@example.com"],
             ["r5@example.com"]]
        assert server.connections == 1
        assert len({t["data"] for t in server.messages}) == 1
        assert not any("status=deferred" in line for line in logged)

    def test_452_with_nothing_accepted_is_a_temporary_failure(self, spool, tmp_path, logged):
        with ScriptServer(max_rcpts=0) as server:
            _, results = deliver(make_client(tmp_path), ["a@example.com", "b@example.com"],
                                 f"[127.0.0.1]:{server.port}")
        assert {r["status"] for r in results.values()} == {"deferred"}
        assert results["a@example.com"]["reason"] == (
            "host 127.0.0.1[127.0.0.1] said: 452 4.5.3 Error: too many recipients "
            "(in reply to RCPT TO command)")
        assert server.messages == []
