"""local(8) handing recipients to another agent: mailbox_transport, fallback_transport.

The local agent is driven with real queue files. The other agent is a real
service at private/NAME in a tmp spool (an ipc.Server taking leases there),
answering through pymaster.mail.delivery's request handler, whose delivery
step the test scripts
(sent, deferred or bounced): what crosses the socket, what lands in the
queue file and the status logs, and what is logged, are the real thing.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.util import ipc
from services.local import LocalAgent
from services.local.transport import split_service
from tests.support.local_helpers import spool, users  # noqa: F401  (fixtures)
from tests.support.local_helpers import RecordingCleanup, make_cfg, queue_request
from tests.support.served import listen

RCPT = "alice@mx.example.com"



class Agent:
    """A delivery agent at private/NAME: every recipient gets OUTCOME from it.

    OUTCOME is ("sent"|"deferred"|"bounced", dsn, reason), or None: never answer."""

    def __init__(self, name: str, outcome: tuple[str, str, str] | None,
                 raw_reply: dict | None = None) -> None:
        self.name = name
        self.outcome = outcome
        self.raw_reply = raw_reply
        self.requests: list[dict] = []
        self.handler = delivery.request_handler(self.deliver)
        self.bound = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        kind, dsn, reason = self.outcome
        for rcpt in req.recipients:
            getattr(status, kind)(rcpt, "lmtp.test[127.0.0.1]:24", reason, dsn)

    def serve(self) -> None:
        """serve - as a one-at-a-time delivery agent: leases on private/NAME."""
        path = ipc.endpoint("private", self.name)
        listener = listen(path)
        server = ipc.Server(listener, many=False)
        poller = ipc.Poller()
        poller.register(server)
        self.bound.set()
        try:
            while not self.stopping:
                server.retire_idle(time.monotonic())
                if not poller.poll(20):
                    continue
                for token, header, payload in server.events():
                    if token is None:
                        continue
                    self.requests.append(header)
                    if self.outcome is None and self.raw_reply is None:
                        continue
                    reply = (self.raw_reply, []) if self.raw_reply \
                        else self.handler(header, payload)
                    server.reply(token, *reply)
        finally:
            server.close()
            listener.close()
            os.unlink(path)

    def __enter__(self) -> "Agent":
        self.thread.start()
        self.bound.wait(5)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping = True
        self.thread.join(5)


def deliver(cfg, rcpts=((RCPT, ""),)):
    """deliver - one request through the local agent; (status, request)."""
    req = queue_request("a@example.com", list(rcpts))
    agent = LocalAgent(cfg)
    agent.cleanup = RecordingCleanup()
    status = delivery.Status(req, cfg)
    agent.deliver(req, status)
    return status, req


def status_lines(text: str) -> list[str]:
    return re.findall(r".*status=\w+ \(.*", text)


def is_done(req) -> bool:
    return records.read_message(req.path).recipients[0].done


class TestMailboxTransport:
    def test_sent_by_the_other_agent_is_the_recipients_outcome(self, tmp_path, spool, users,
                                                               capfd):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp:inet:127.0.0.1:24",
                       home_mailbox="Maildir/")
        with Agent("lmtp", ("sent", "2.0.0", "250 2.0.0 Ok")) as lmtp:
            status, req = deliver(cfg, [(RCPT, "Alice@mx.example.com")])
        # The request names the same queue file, the next hop from the value,
        # and the one address, with offset -1: local marks it done itself.
        [sent] = lmtp.requests
        assert (sent["op"], sent["queue_id"], sent["path"]) == ("deliver", req.queue_id, req.path)
        assert (sent["transport"], sent["nexthop"]) == ("lmtp", "inet:127.0.0.1:24")
        assert sent["sender"] == "a@example.com"
        assert [(r["address"], r["orig"], r["offset"]) for r in sent["recipients"]] == \
            [(RCPT, "Alice@mx.example.com", -1)]
        assert status.results == [{"offset": req.recipients[0].offset, "address": RCPT,
                                   "status": "sent", "dsn": "2.0.0", "reason": "250 2.0.0 Ok"}]
        assert is_done(req)
        assert not (tmp_path / "home" / "alice" / "Maildir").exists()
        err = capfd.readouterr().err
        assert f"{req.queue_id}: passing <{RCPT}> to transport=lmtp" in err
        # Only the other agent's status line: local logs nothing of its own.
        [line] = status_lines(err)
        assert "relay=lmtp.test[127.0.0.1]:24" in line and "status=sent (250 2.0.0 Ok)" in line

    def test_deferral_by_the_other_agent_is_logged_once_and_not_done(self, tmp_path, spool,
                                                                      users, capfd):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp:inet:127.0.0.1:24")
        with Agent("lmtp", ("deferred", "4.2.1", "452 4.2.1 mailbox full")):
            status, req = deliver(cfg)
        r = status.results[0]
        assert (r["status"], r["dsn"], r["reason"]) == ("deferred", "4.2.1", "452 4.2.1 mailbox full")
        assert not is_done(req)
        [entry] = delivery.read_status_log(queue.defer_log_path(req.queue_id))
        assert (entry["recipient"], entry["status"]) == (RCPT, "4.2.1")
        assert len(status_lines(capfd.readouterr().err)) == 1

    def test_bounce_by_the_other_agent_is_logged_once_and_done(self, tmp_path, spool, users,
                                                               capfd):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp:inet:127.0.0.1:24")
        with Agent("lmtp", ("bounced", "5.1.1", "550 5.1.1 no such mailbox")):
            status, req = deliver(cfg)
        r = status.results[0]
        assert (r["status"], r["dsn"]) == ("bounced", "5.1.1")
        assert is_done(req)
        [entry] = delivery.read_status_log(queue.bounce_log_path(req.queue_id))
        assert entry["reason"] == "550 5.1.1 no such mailbox"
        assert len(status_lines(capfd.readouterr().err)) == 1

    def test_mailbox_transport_comes_before_mailbox_command(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp", mailbox_command="/bin/false")
        with Agent("lmtp", ("sent", "2.0.0", "250 Ok")) as lmtp:
            status, _ = deliver(cfg)
        assert status.results[0]["status"] == "sent"
        # No next hop in the value: the request's own (the recipient domain).
        assert lmtp.requests[0]["nexthop"] == "mx.example.com"

    def test_maps_are_searched_by_user_without_extension_before_the_parameter(
            self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, recipient_delimiter="+",
                       mailbox_transport_maps="inline:{alice=cyrus:unix:/run/cyrus}",
                       mailbox_transport="lmtp")
        with Agent("cyrus", ("sent", "2.0.0", "250 Ok")) as cyrus, \
                Agent("lmtp", ("sent", "2.0.0", "250 Ok")) as lmtp:
            deliver(cfg, [("alice+box@mx.example.com", ""), ("bob@mx.example.com", "")])
        assert [r["recipients"][0]["address"] for r in cyrus.requests] == \
            ["alice+box@mx.example.com"]
        assert cyrus.requests[0]["nexthop"] == "unix:/run/cyrus"
        assert [r["recipients"][0]["address"] for r in lmtp.requests] == ["bob@mx.example.com"]

    def test_applies_to_recipients_without_an_account(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp")
        with Agent("lmtp", ("sent", "2.0.0", "250 Ok")) as lmtp:
            status, _ = deliver(cfg, [("nosuch@mx.example.com", "")])
        assert status.results[0]["status"] == "sent"
        assert len(lmtp.requests) == 1

    def test_failing_table_defers(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport_maps="fail:transports")
        status, req = deliver(cfg)
        assert (status.results[0]["status"], status.results[0]["dsn"]) == ("deferred", "4.3.0")
        assert not is_done(req)


class TestHandOffFailures:
    def test_missing_service_defers_with_relay_none(self, tmp_path, spool, users, capfd):
        cfg = make_cfg(tmp_path, mailbox_transport="nosuch:example")
        status, req = deliver(cfg)
        r = status.results[0]
        assert (r["status"], r["dsn"], r["reason"]) == \
            ("deferred", "4.3.0", "mail transport unavailable")
        assert not is_done(req)
        err = capfd.readouterr().err
        assert "warning: connect to transport private/nosuch: No such file or directory" in err
        assert "relay=none," in status_lines(err)[0]

    def test_no_answer_within_ipc_timeout_defers(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp", ipc_timeout="1s")
        with Agent("lmtp", None) as lmtp:
            status, req = deliver(cfg)
        assert len(lmtp.requests) == 1
        assert (status.results[0]["status"], status.results[0]["dsn"]) == ("deferred", "4.3.0")
        assert not is_done(req)

    def test_an_answer_without_status_defers(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, mailbox_transport="lmtp")
        with Agent("lmtp", None, raw_reply={"status": "defer", "reason": "service is stopping"}):
            status, req = deliver(cfg)
        r = status.results[0]
        assert (r["status"], r["reason"]) == ("deferred", "unknown mail transport error")
        assert delivery.read_status_log(queue.defer_log_path(req.queue_id))


class TestFallbackTransport:
    def test_unknown_user_goes_to_the_fallback_transport_before_luser_relay(
            self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, fallback_transport="lmtp:unix:/run/lmtp",
                       luser_relay="catchall@example.org", home_mailbox="Maildir/")
        with Agent("lmtp", ("sent", "2.0.0", "250 Ok")) as lmtp:
            status, req = deliver(cfg, [("nosuch@mx.example.com", ""), (RCPT, "")])
        # Only the unknown user is passed on; alice gets her own mailbox.
        assert [r["recipients"][0]["address"] for r in lmtp.requests] == ["nosuch@mx.example.com"]
        assert [r["status"] for r in status.results] == ["sent", "sent"]
        assert (tmp_path / "home" / "alice" / "Maildir" / "new").exists()
        assert records.read_message(req.path).recipients[0].done

    def test_fallback_transport_maps_win_over_the_parameter(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, fallback_transport_maps="inline:{nosuch=other}",
                       fallback_transport="lmtp")
        with Agent("other", ("bounced", "5.1.1", "550 unknown")) as other:
            status, _ = deliver(cfg, [("nosuch@mx.example.com", "")])
        assert len(other.requests) == 1
        assert status.results[0]["status"] == "bounced"

    def test_without_fallback_unknown_users_still_bounce(self, tmp_path, spool, users):
        status, _ = deliver(make_cfg(tmp_path), [("nosuch@mx.example.com", "")])
        assert status.results[0]["reason"] == 'unknown user: "nosuch"'


class TestSeveralHandOffsForOneRecipient:
    def aliases(self, tmp_path, text):
        path = tmp_path / "aliases"
        path.write_text(text)
        return f"texthash:{path}"

    def test_done_only_when_every_copy_is_delivered(self, tmp_path, spool, users, capfd):
        cfg = make_cfg(tmp_path, alias_maps=self.aliases(tmp_path, "team \\alice, \\bob\n"),
                       mailbox_transport="lmtp")
        with Agent("lmtp", ("sent", "2.0.0", "250 Ok")) as lmtp:
            status, req = deliver(cfg, [("team@mx.example.com", "")])
        assert len(lmtp.requests) == 2
        assert status.results[0]["status"] == "sent"
        assert is_done(req)
        assert len(status_lines(capfd.readouterr().err)) == 2

    def test_one_deferred_copy_keeps_the_recipient(self, tmp_path, spool, users):
        cfg = make_cfg(tmp_path, alias_maps=self.aliases(tmp_path, "team \\alice, \\bob\n"),
                       mailbox_transport_maps="inline:{bob=busy}", mailbox_transport="lmtp")
        with Agent("lmtp", ("sent", "2.0.0", "250 Ok")), \
                Agent("busy", ("deferred", "4.2.1", "452 try later")):
            status, req = deliver(cfg, [("team@mx.example.com", "")])
        assert (status.results[0]["status"], status.results[0]["dsn"]) == ("deferred", "4.2.1")
        assert not is_done(req)


@pytest.mark.parametrize("value,expected", [
    ("lmtp", ("lmtp", "default.example")),
    ("lmtp:", ("lmtp", "default.example")),
    ("lmtp:unix:/run/lmtp", ("lmtp", "unix:/run/lmtp")),
    ("lmtp:inet:127.0.0.1:24", ("lmtp", "inet:127.0.0.1:24")),
    ("smtp:[relay.example]:587", ("smtp", "[relay.example]:587")),
    (":host", ("", "host")),
])
def test_split_service(value, expected):
    assert split_service(value, "default.example") == expected
