"""services.smtp.deliver in verify mode: address probes against scripted servers.

A verify request (sendmail -bv, the verify service's probes) takes the same
path as a delivery up to the RCPT replies and then stops: no DATA, no
content. Each test queues a real message in a temporary spool, probes a
scripted SMTP/LMTP server on loopback (tests/support/smtpscript.py), and reads the
verdicts (delivery.Status.verify_result), the log and what the server saw.
"""

from __future__ import annotations

from pymaster.mail import delivery, dsn, queue, records, traceflags
from services.smtp.deliver import Client
from tests.support.smtpscript import ScriptServer
from tests.test_smtp_deliver import (logged, make_client, queue_message,  # noqa: F401
                                     request, spool, statuses)

UNKNOWN = "550 5.1.1 <bad@example.com>: Recipient address rejected: User unknown"
LATER = "450 4.2.0 <later@example.com>: Recipient address rejected: try again"


def probe(client: Client, rcpts, nexthop: str, **kw) -> tuple[delivery.Status, dict]:
    """probe - run CLIENT's verify mode on a message for RCPTS, as sendmail -bv queues it."""
    req = request(queue_message(rcpts, **kw), nexthop)
    req.attrs["trace_flags"] = traceflags.VERIFY
    status = delivery.Status(req)
    client.verify(req, status)
    return status, {r["address"]: r for r in status.results}


def verbs(server: ScriptServer) -> list[str]:
    return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in server.commands]


class TestVerdicts:
    def test_rcpt_replies_decide_and_no_data_is_sent(self, spool, tmp_path, logged):
        server = ScriptServer(rcpt={"bad@example.com": UNKNOWN, "later@example.com": LATER})
        with server:
            _, results = probe(make_client(tmp_path),
                               ["good@example.com", "bad@example.com", "later@example.com"],
                               f"[127.0.0.1]:{server.port}")
        good, bad, later = (results[a] for a in ("good@example.com", "bad@example.com",
                                                  "later@example.com"))
        assert (good["status"], good["dsn"], good["reason"]) == \
            ("deliverable", "2.1.5", "250 2.1.5 Ok")
        assert (bad["status"], bad["dsn"]) == ("undeliverable", "5.1.1")
        assert bad["reason"] == (f"host 127.0.0.1[127.0.0.1] said: {UNKNOWN} "
                                 "(in reply to RCPT TO command)")
        # A temporary refusal is a verdict now, with its 4.x.x code: never retried.
        assert (later["status"], later["dsn"]) == ("undeliverable", "4.2.0")
        assert verbs(server) == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT", "QUIT"]
        assert server.messages == []

    def test_verdicts_are_logged_and_traced_and_the_recipients_done(self, spool, tmp_path,
                                                                     logged):
        with ScriptServer(rcpt={"bad@example.com": UNKNOWN}) as server:
            status, _ = probe(make_client(tmp_path), ["good@example.com", "bad@example.com"],
                              f"[127.0.0.1]:{server.port}")
        lines = statuses(logged)
        assert lines["good@example.com"]["status"] == "deliverable"
        assert lines["good@example.com"]["relay"] == f"127.0.0.1[127.0.0.1]:{server.port}"
        assert lines["bad@example.com"]["status"] == "undeliverable"
        trace = delivery.read_status_log(queue.trace_log_path(status.req.queue_id))
        assert {e["recipient"]: e["action"] for e in trace} == {
            "good@example.com": "deliverable", "bad@example.com": "undeliverable"}
        assert all(r.done for r in status.req.recipients)
        assert not (spool / queue.bounce_log_path(status.req.queue_id)).exists()

    def test_a_refused_mail_from_answers_for_every_recipient(self, spool, tmp_path, logged):
        with ScriptServer(mail="553 5.7.1 <alice@example.com>: Sender address rejected") \
                as server:
            _, results = probe(make_client(tmp_path), ["a@example.com", "b@example.com"],
                               f"[127.0.0.1]:{server.port}")
        assert {r["status"] for r in results.values()} == {"undeliverable"}
        assert all(r["reason"].endswith("(in reply to MAIL FROM command)")
                   for r in results.values())
        assert "DATA" not in verbs(server)

    def test_an_unreachable_host_is_undeliverable_with_the_connect_error(self, spool,
                                                                        tmp_path, logged):
        with ScriptServer() as server:
            port = server.port
        status, results = probe(make_client(tmp_path), ["a@example.com"], f"[127.0.0.1]:{port}")
        r = results["a@example.com"]
        assert (r["status"], r["dsn"]) == ("undeliverable", "4.4.1")
        assert r["reason"] == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
        assert statuses(logged)["a@example.com"]["relay"] == "none"

    def test_the_next_host_is_tried_as_for_delivery(self, spool, tmp_path, logged):
        with ScriptServer(greeting="421 4.3.2 busy") as busy, ScriptServer() as server:
            _, results = probe(make_client(tmp_path), ["a@example.com"],
                               f"[127.0.0.1]:{busy.port} [127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "deliverable"
        assert verbs(server) == ["EHLO", "MAIL", "RCPT", "QUIT"]

    def test_without_pipelining_an_accepted_rcpt_still_gets_no_data(self, spool, tmp_path,
                                                                    logged):
        with ScriptServer(extensions=["SIZE 10240000"]) as server:
            _, results = probe(make_client(tmp_path), ["a@example.com"],
                               f"[127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "deliverable"
        assert verbs(server) == ["EHLO", "MAIL", "RCPT", "QUIT"]


class TestConnectionCache:
    def test_a_cached_probe_session_is_reset_and_reused(self, spool, tmp_path, logged):
        with ScriptServer(rcpt={"bad@example.com": UNKNOWN}) as server:
            client = make_client(tmp_path, smtp_connection_cache_on_demand="yes")
            nexthop = f"[127.0.0.1]:{server.port}"
            _, first = probe(client, ["bad@example.com"], nexthop)
            _, second = probe(client, ["good@example.com"], nexthop)
            req = request(queue_message(["good@example.com"]), nexthop)
            status = delivery.Status(req)
            client.deliver(req, status)
            client.close()
        assert first["bad@example.com"]["status"] == "undeliverable"
        assert second["good@example.com"]["status"] == "deliverable"
        assert status.results[0]["status"] == "sent"
        assert server.connections == 1
        # Each probe ends with RSET; a reused session starts with one too.
        assert verbs(server) == ["EHLO", "MAIL", "RCPT", "RSET",
                                 "RSET", "MAIL", "RCPT", "RSET",
                                 "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
        assert len(server.messages) == 1


class TestLmtp:
    def test_lmtp_rcpt_replies_are_the_verdicts(self, spool, tmp_path, logged):
        path = str(tmp_path / "lmtp.sock")
        server = ScriptServer(lmtp=True, unix_path=path, rcpt={
            "gone@example.com": "550 5.1.1 <gone@example.com> User doesn't exist"})
        with server:
            _, results = probe(make_client(tmp_path, lmtp=True),
                               ["ok@example.com", "gone@example.com"], f"unix:{path}")
        assert results["ok@example.com"]["status"] == "deliverable"
        assert results["gone@example.com"]["status"] == "undeliverable"
        assert results["gone@example.com"]["reason"] == (
            f"host client.example[{path}] said: 550 5.1.1 <gone@example.com> User doesn't "
            "exist (in reply to RCPT TO command)")
        # lmtp_connection_cache_on_demand = yes: reset and kept, never DATA.
        assert verbs(server) == ["LHLO", "MAIL", "RCPT", "RCPT", "RSET"]
        assert server.messages == []


class TestReportDetails:
    def test_a_deliverable_verdict_names_the_server_and_its_reply(self, spool, tmp_path,
                                                                 logged):
        with ScriptServer(rcpt={"bad@example.com": UNKNOWN}) as server:
            status, _ = probe(make_client(tmp_path), ["good@example.com", "bad@example.com"],
                              f"[127.0.0.1]:{server.port}")
        trace = delivery.read_status_log(queue.trace_log_path(status.req.queue_id))
        good, bad = (dsn.RecipientStatus.from_entry(e) for e in trace)
        # What the trace service puts into the report's Remote-MTA and Diagnostic-Code.
        assert good.diagnostic() == ("dns; 127.0.0.1", "smtp; 250 2.1.5 Ok")
        assert bad.diagnostic() == ("dns; 127.0.0.1", f"smtp; {UNKNOWN}")

    def test_a_probe_does_not_read_the_headers_for_generic_maps(self, spool, tmp_path,
                                                               logged, monkeypatch):
        def no_reading(self, chunk=65536):
            raise AssertionError("a probe read the message content")
        monkeypatch.setattr(records.Message, "iter_content", no_reading)
        monkeypatch.setattr(records.Message, "read_content", no_reading)
        with ScriptServer() as server:
            client = make_client(tmp_path,
                                 smtp_generic_maps="inline:{ alice@example.com=al@isp.example }")
            _, results = probe(client, ["a@example.com"], f"[127.0.0.1]:{server.port}")
        assert results["a@example.com"]["status"] == "deliverable"
        # The envelope is still rewritten: the probe asks what delivery would.
        assert any(c.startswith("MAIL FROM:<al@isp.example>") for c in server.commands)

    def test_452_probes_the_rest_in_a_new_transaction(self, spool, tmp_path, logged):
        rcpts = [f"r{i}@example.com" for i in range(1, 4)]
        with ScriptServer(max_rcpts=2) as server:
            _, results = probe(make_client(tmp_path), rcpts, f"[127.0.0.1]:{server.port}")
        assert {r["status"] for r in results.values()} == {"deliverable"}
        assert verbs(server) == ["EHLO", "MAIL", "RCPT", "RCPT", "RCPT",
                                 "RSET", "MAIL", "RCPT", "QUIT"]
