"""services.cleanup.milters: cleanup runs the milters and applies what they say,
driven through handle_message with a scripted milter (tests/milterpeer.py)."""

import os

import pytest

from pymaster import queue
from tests import milterpeer as peer
from tests.milterpeer import ScriptedMilter
from tests.test_cleanup import SIMPLE, headers_of, maillog, make_cfg, queued, spool, submit  # noqa: F401

SMTP_ATTRS = dict(client_name="client.example", client_address="192.0.2.1",
                  client_port="4000", helo_name="helo.example", protocol="ESMTP")


def incoming_files():
    return [f for _, _, files in os.walk("incoming") for f in files]


class TestRefusals:
    def test_reject_refuses_and_queues_nothing(self, spool):
        with ScriptedMilter(script={b"E": [peer.replycode("554 5.7.1 Go away")]}) as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        assert (reply["status"], reply["code"], reply["dsn"], reply["reason"]) == \
            ("reject", 554, "5.7.1", "Go away")
        assert incoming_files() == []
        assert ": milter-reject: END-OF-MESSAGE from client.example[192.0.2.1]: 5.7.1 Go away; " \
               "from=<sender@example.org> to=<rcpt@example.net> proto=ESMTP helo=<helo.example>" \
               in maillog(spool)

    def test_unreachable_milter_defers(self, spool):
        cfg = make_cfg(spool, smtpd_milters="inet:127.0.0.1:1", milter_connect_timeout="1s")
        reply, _ = submit(cfg, SIMPLE, **SMTP_ATTRS)
        assert (reply["status"], reply["dsn"], reply["reason"]) == \
            ("defer", "4.7.1", "Service unavailable - try again later")
        assert incoming_files() == []

    def test_bad_milter_list_defers_with_a_warning(self, spool):
        cfg = make_cfg(spool, smtpd_milters="{ inet:127.0.0.1:1, colour=red }")
        reply, _ = submit(cfg, SIMPLE, **SMTP_ATTRS)
        assert reply["status"] == "defer"
        assert "milter configuration: unknown milter setting: colour" in maillog(spool)


class TestDisposition:
    def test_discard(self, spool):
        with ScriptedMilter(script={b"E": [peer.reply(b"d")]}) as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        assert reply["status"] == "ok"
        assert incoming_files() == []
        assert f"{reply['queue_id']}: milter-discard: END-OF-MESSAGE from " in maillog(spool)

    def test_quarantine_goes_to_hold(self, spool):
        with ScriptedMilter(script={b"E": [peer.quarantine("look at me"), peer.reply(b"a")]}) as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        assert os.path.exists(queue.path_of("hold", reply["queue_id"]))
        assert f"{reply['queue_id']}: milter-hold: END-OF-MESSAGE from client.example" \
               "[192.0.2.1]: look at me;" in maillog(spool)


class TestEdits:
    def test_edits_reach_the_queue_file(self, spool):
        edits = [peer.insert_header(0, "DKIM-Signature", "v=1; d=example.com"),
                 peer.change_header(1, "Subject", "[tagged] hi"),
                 peer.add_rcpt("extra@example.net"), peer.del_rcpt("rcpt@example.net"),
                 peer.change_from("bounces@example.org"), peer.replace_body(b"replaced\r\n"),
                 peer.reply(b"c")]
        with ScriptedMilter(script={b"E": edits}) as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        msg = queued(reply)
        head, body = headers_of(msg)
        assert head.startswith("DKIM-Signature: v=1; d=example.com\nReceived: ")
        assert "\nSubject: [tagged] hi\n" in head
        assert body == "replaced\n"
        assert [r.address for r in msg.recipients] == ["extra@example.net"]
        assert msg.sender == "bounces@example.org"

    def test_milter_sees_cleanups_headers_and_the_queue_id(self, spool):
        with ScriptedMilter() as m:
            reply, _ = submit(make_cfg(spool, smtpd_milters=m.name), SIMPLE, **SMTP_ATTRS)
        assert b"i\0" + reply["queue_id"].encode() + b"\0" in b"".join(m.data(b"D"))
        assert m.data(b"H") == [b"helo.example\0"]


class TestWhichMilters:
    def test_local_submission_gets_non_smtpd_milters_as_localhost(self, spool):
        with ScriptedMilter() as m, ScriptedMilter() as other:
            cfg = make_cfg(spool, smtpd_milters=other.name, non_smtpd_milters=m.name)
            submit(cfg, SIMPLE, origin="pickup", context="local")
        assert m.data(b"C")[0].startswith(b"localhost\x004")
        assert other.commands() == []

    @pytest.mark.parametrize("origin,values", [
        ("bounce", {}), ("local", {}),
        ("smtpd", {"receive_override_options": "no_milters"})])
    def test_no_milters(self, spool, origin, values):
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as m:
            cfg = make_cfg(spool, smtpd_milters=m.name, non_smtpd_milters=m.name, **values)
            reply, _ = submit(cfg, SIMPLE, origin=origin)
        assert reply["status"] == "ok" and m.commands() == []

    def test_bounces_when_internal_mail_filter_classes_says_so(self, spool):
        with ScriptedMilter(script={b"C": [peer.reply(b"r")]}) as m:
            cfg = make_cfg(spool, non_smtpd_milters=m.name, internal_mail_filter_classes="bounce")
            reply, _ = submit(cfg, SIMPLE, origin="bounce")
        assert reply["status"] == "reject"
