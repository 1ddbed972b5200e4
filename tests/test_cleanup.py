"""services.cleanup: the message request, driven directly in a tmp queue directory."""

import os
import re

import pytest

from pymaster.mail import queue, records
from pymaster.util import log
from pymaster.mail.config import Config
from services.cleanup import handle_message


@pytest.fixture
def spool(tmp_path, monkeypatch):
    queue_dir = tmp_path / "queue"
    queue.create_layout(str(queue_dir))
    monkeypatch.chdir(queue_dir)
    return tmp_path


def make_cfg(spool, **values):
    base = {"myhostname": "mx.example.com", "mydomain": "example.com",
            "inet_interfaces": "loopback-only", "queue_directory": str(spool / "queue"),
            "maillog_file": str(spool / "maillog")}
    base.update(values)
    cfg = Config("/nonexistent", base)
    log.setup("cleanup", cfg)
    return cfg


def submit(cfg, content, sender="sender@example.org", recipients=("rcpt@example.net",),
           context="remote", origin="smtpd", flags=(), **attrs):
    header = {"op": "message", "sender": sender,
              "recipients": [r if isinstance(r, dict) else {"address": r} for r in recipients],
              "attrs": {"origin": origin, "rewrite_context": context, **attrs},
              "flags": list(flags)}
    return handle_message(cfg, header, [content.encode() if isinstance(content, str)
                                        else content])


def queued(reply):
    if isinstance(reply, tuple):
        reply = reply[0]
    assert reply["status"] == "ok", reply
    return records.read_message(queue.path_of("incoming", reply["queue_id"]))


def headers_of(msg):
    head, _, body = msg.read_content().decode().partition("\n\n")
    return head, body


def maillog(spool):
    return (spool / "maillog").read_text()


SIMPLE = ("Received: from client.example (localhost [127.0.0.1])\n\tby mx.example.com\n"
          "From: a@example.org\nTo: b@example.net\nSubject: hi\n"
          "Message-ID: <abc@example.org>\nDate: Thu, 28 Nov 2024 20:03:44 +0100\n\nbody\n")


class TestQueueFile:
    def test_queued_file_is_complete_and_reads_back(self, spool):
        cfg = make_cfg(spool)
        reply, _ = submit(cfg, SIMPLE, recipients=[{"address": "b@example.net",
                                                   "orig": "B@example.net",
                                                   "notify": "SUCCESS", "orcpt": "rfc822;B@example.net"}],
                          client_address="127.0.0.1")
        msg = queued(reply)
        assert queue.is_complete(msg.path)
        assert msg.sender == "sender@example.org"
        r = msg.recipients[0]
        assert (r.address, r.orig, r.notify, r.orcpt) == \
            ("b@example.net", "B@example.net", "SUCCESS", "rfc822;B@example.net")
        assert msg.attrs["client_address"] == "127.0.0.1"
        assert msg.read_content() == SIMPLE.encode()

    def test_message_id_is_logged(self, spool):
        reply, _ = submit(make_cfg(spool), SIMPLE)
        assert f"postfix/cleanup[" in maillog(spool)
        assert re.search(rf"{reply['queue_id']}: message-id=<abc@example.org>$",
                         maillog(spool), re.M)

    def test_resent_message_id_is_logged_too(self, spool):
        reply, _ = submit(make_cfg(spool), "Resent-Message-ID: <r@x>\n" + SIMPLE)
        assert f"{reply['queue_id']}: resent-message-id=<r@x>" in maillog(spool)

    def test_message_without_id_from_remote_logs_empty_id(self, spool):
        reply, _ = submit(make_cfg(spool), "Subject: x\n\nbody\n")
        assert f"{reply['queue_id']}: message-id=<>" in maillog(spool)

    def test_empty_sender_stays_empty(self, spool):
        msg = queued(submit(make_cfg(spool), SIMPLE, sender="")[0])
        assert msg.sender == ""

    def test_no_recipients_is_rejected(self, spool):
        reply, _ = submit(make_cfg(spool), SIMPLE, recipients=())
        assert reply == {"status": "reject", "dsn": "5.1.0", "reason": "no recipients specified"}
        assert list(queue.scan("incoming")) == []

    def test_too_big_is_rejected(self, spool):
        reply, _ = submit(make_cfg(spool, message_size_limit="100"), SIMPLE + "x" * 200)
        assert (reply["status"], reply["dsn"]) == ("reject", "5.3.4")

    def test_write_error_defers_and_leaves_nothing(self, spool, monkeypatch):
        def full_disk(*a, **k):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(queue.QueueWriter, "commit",
                            lambda self, into=None: self._guard(full_disk))
        reply, _ = submit(make_cfg(spool), SIMPLE)
        assert reply == {"status": "defer", "dsn": "4.3.0", "reason": "queue file write error"}
        assert list(queue.scan("incoming")) == []

    def test_unknown_request(self, spool):
        reply, _ = handle_message(make_cfg(spool), {"op": "nonsense"}, [])
        assert reply["status"] == "error"


class TestEnvelope:
    def test_addresses_are_canonicalised(self, spool):
        msg = queued(submit(make_cfg(spool), SIMPLE, sender="joe",
                            recipients=["jane", "site!user"]))
        assert msg.sender == "joe@mx.example.com"
        assert [r.address for r in msg.recipients] == ["jane@mx.example.com", "user@site"]
        assert [r.orig for r in msg.recipients] == ["jane", "site!user"]

    def test_envelope_uses_local_context_even_for_remote_clients(self, spool):
        msg = queued(submit(make_cfg(spool), SIMPLE, recipients=["postmaster"], context="remote"))
        assert msg.recipients[0].address == "postmaster@mx.example.com"

    def test_duplicate_recipients_are_queued_once(self, spool):
        msg = queued(submit(make_cfg(spool), SIMPLE,
                            recipients=["b@example.net", "b@example.net", "c@example.net",
                                        {"address": "b@example.net", "orig": "alias@example.net"}]))
        assert [(r.address, r.orig) for r in msg.recipients] == [
            ("b@example.net", "b@example.net"), ("c@example.net", "c@example.net"),
            ("b@example.net", "alias@example.net")]

    def test_original_recipient_can_be_disabled(self, spool):
        msg = queued(submit(make_cfg(spool, enable_original_recipient="no"), SIMPLE,
                            recipients=["jane"]))
        assert msg.recipients[0].orig == ""


class TestHeaders:
    def test_local_submission_gets_missing_headers(self, spool):
        cfg = make_cfg(spool)
        reply, _ = submit(cfg, "Subject: hi\n\nbody\n", sender="joe", context="local",
                          origin="pickup", full_name="Joe User")
        msg = queued(reply)
        head, body = headers_of(msg)
        qid = reply["queue_id"]
        assert re.search(rf"^Message-Id: <{qid}@mx\.example\.com>$", head, re.M)
        assert re.search(r"^Date: \w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}", head, re.M)
        assert "From: Joe User <joe@mx.example.com>" in head
        assert body == "body\n"
        assert re.search(rf"{qid}: message-id=<{qid}@mx\.example\.com>", maillog(spool))

    def test_added_headers_come_after_the_existing_ones_in_postfix_order(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "Subject: hi\n\nx\n",
                                           context="local")[0]))
        names = [line.split(":")[0] for line in head.splitlines()]
        assert names == ["Subject", "Message-Id", "Date", "From"]

    def test_remote_mail_gets_no_headers_added(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "Subject: hi\n\nx\n")[0]))
        assert head == "Subject: hi"

    def test_always_add_missing_headers(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool, always_add_missing_headers="yes"),
                                           "Subject: hi\n\nx\n")[0]))
        assert "Message-Id:" in head and "Date:" in head and "From: sender@example.org" in head

    def test_present_headers_are_not_added_twice(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), SIMPLE, context="local")[0]))
        assert head.count("Message-I") == 1 and head.count("Date:") == 1
        assert head.count("From:") == 1

    def test_resent_headers_get_resent_forms(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "Resent-To: x@example.net\n" + SIMPLE,
                                           context="local")[0]))
        assert "Resent-Message-Id:" in head and "Resent-Date:" in head
        assert "Resent-From: sender@example.org" in head

    def test_undisclosed_recipients_header(self, spool):
        cfg = make_cfg(spool, undisclosed_recipients_header="To: undisclosed-recipients:;")
        head, _ = headers_of(queued(submit(cfg, "Subject: hi\n\nx\n", context="local")[0]))
        assert "To: undisclosed-recipients:;" in head.splitlines()
        head, _ = headers_of(queued(submit(cfg, "Cc: a@b.example\n\nx\n", context="local")[0]))
        assert "undisclosed" not in head

    def test_null_sender_gets_mailer_daemon_from(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "Subject: x\n\ny\n", sender="",
                                           context="local")[0]))
        assert "From: MAILER-DAEMON" in head.splitlines()

    def test_return_path_is_removed(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool),
                                           "Return-Path: <forged@example.com>\n" + SIMPLE)[0]))
        assert "Return-Path" not in head
        assert "Subject: hi" in head

    def test_too_many_hops_is_rejected(self, spool):
        cfg = make_cfg(spool, hopcount_limit="5")
        reply, _ = submit(cfg, "Received: by x\n" * 5 + "Subject: loop\n\nx\n")
        assert reply == {"status": "reject", "dsn": "5.4.6", "reason": "too many hops"}
        assert "message rejected: hopcount exceeded" in maillog(spool)
        assert list(queue.scan("incoming")) == []
        reply, _ = submit(cfg, "Received: by x\n" * 4 + "Subject: ok\n\nx\n")
        assert reply["status"] == "ok"

    def test_received_in_the_body_does_not_count(self, spool):
        cfg = make_cfg(spool, hopcount_limit="2")
        reply, _ = submit(cfg, "Subject: x\n\n" + "Received: by x\n" * 5)
        assert reply["status"] == "ok"

    def test_too_long_header_is_truncated_and_logged(self, spool):
        cfg = make_cfg(spool, header_size_limit="1000")
        long_header = "X-Long: start\n" + "\tcontinued line of text\n" * 100
        msg = queued(submit(cfg, "Subject: x\n" + long_header + "To: b@example.net\n\nbody\n")[0])
        head, body = headers_of(msg)
        x_long = head[head.index("X-Long"):head.index("To:")]
        assert 0 < len(x_long) <= 1000
        assert "To: b@example.net" in head and body == "body\n"
        assert "message header length exceeds safety limit" in maillog(spool)

    def test_header_addresses_are_completed_for_local_mail(self, spool):
        head, _ = headers_of(queued(submit(
            make_cfg(spool), "From: Joe <joe>\nTo: jane, \"x y\"@example.net\nSubject: s\n\nb\n",
            context="local")[0]))
        assert "From: Joe <joe@mx.example.com>" in head
        assert 'To: jane@mx.example.com, "x y"@example.net' in head

    def test_remote_headers_are_left_alone(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "To: jane\n\nb\n")[0]))
        assert "To: jane" in head.splitlines()

    def test_remote_header_rewrite_domain(self, spool):
        cfg = make_cfg(spool, remote_header_rewrite_domain="domain.invalid")
        head, _ = headers_of(queued(submit(cfg, "To: jane\n\nb\n")[0]))
        assert "To: jane@domain.invalid" in head.splitlines()

    def test_body_without_empty_line_keeps_its_boundary(self, spool):
        msg = queued(submit(make_cfg(spool), "Subject: x\nthis is body text\n", context="local"))
        head, body = headers_of(msg)
        assert body == "this is body text\n"

    def test_eight_bit_headers_pass_unchanged(self, spool):
        content = "Subject: caf\u00e9\n\nb\n".encode("utf-8") + b"\xff\n"
        msg = queued(submit(make_cfg(spool), content)[0])
        assert msg.read_content() == content


class TestSendmailT:
    def test_recipients_extracted_and_bcc_removed(self, spool):
        content = ("To: a@example.net, Joe <joe>\nCc: c@example.net\nBcc: secret@example.net\n"
                   "Subject: s\n\nbody\n")
        reply, _ = submit(make_cfg(spool), content, recipients=(), context="local",
                          origin="pickup", flags=["extract"])
        msg = queued(reply)
        assert [r.address for r in msg.recipients] == [
            "a@example.net", "joe@mx.example.com", "c@example.net", "secret@example.net"]
        head, _ = headers_of(msg)
        assert "Bcc" not in head and "secret" not in head

    def test_resent_recipients_win(self, spool):
        content = "To: a@example.net\nResent-To: r@example.net\n\nbody\n"
        msg = queued(submit(make_cfg(spool), content, recipients=(), context="local",
                            flags=["extract"])[0])
        assert [r.address for r in msg.recipients] == ["r@example.net"]

    def test_without_extract_bcc_stays(self, spool):
        head, _ = headers_of(queued(submit(make_cfg(spool), "Bcc: x@example.net\n\nb\n")[0]))
        assert "Bcc: x@example.net" in head


class TestAddressMappings:
    @pytest.fixture(autouse=True)
    def need_maps(self):
        pytest.importorskip("pymaster.mail.maps")

    def test_virtual_alias_expansion(self, spool):
        cfg = make_cfg(spool, virtual_alias_maps="inline:{ { list@v.example=a@x.example, b@v.example }, "
                                                 "b@v.example=c@x.example }")
        msg = queued(submit(cfg, SIMPLE, recipients=["list@v.example"]))
        assert [(r.address, r.orig) for r in msg.recipients] == [
            ("a@x.example", "list@v.example"), ("c@x.example", "list@v.example")]

    def test_address_mapping_to_itself_is_kept(self, spool):
        cfg = make_cfg(spool, virtual_alias_maps="inline:{ { u@v.example=u@v.example, u@x.example } }")
        msg = queued(submit(cfg, SIMPLE, recipients=["u@v.example"]))
        assert [r.address for r in msg.recipients] == ["u@v.example", "u@x.example"]

    def test_alias_loop_defers(self, spool):
        cfg = make_cfg(spool, virtual_alias_maps="inline:{ a@v.example=b@v.example, "
                                                 "b@v.example=a@v.example }",
                       virtual_alias_recursion_limit="5")
        reply, _ = submit(cfg, SIMPLE, recipients=["a@v.example"])
        assert reply["status"] == "defer"
        assert "unreasonable virtual_alias_maps map nesting" in maillog(spool)

    def test_expansion_limit_defers(self, spool):
        cfg = make_cfg(spool, virtual_alias_maps="inline:{ { all@v.example=a@x,b@x,c@x } }",
                       virtual_alias_expansion_limit="2")
        reply, _ = submit(cfg, SIMPLE, recipients=["all@v.example"])
        assert reply["status"] == "defer"
        assert "unreasonable virtual_alias_maps map expansion size" in maillog(spool)

    def test_no_address_mappings(self, spool):
        cfg = make_cfg(spool, virtual_alias_maps="inline:{ a@v.example=b@x.example }",
                       receive_override_options="no_address_mappings")
        msg = queued(submit(cfg, SIMPLE, recipients=["a@v.example"]))
        assert msg.recipients[0].address == "a@v.example"

    def test_canonical_maps(self, spool):
        cfg = make_cfg(spool, sender_canonical_maps="inline:{ joe@mx.example.com=Joe.User@example.com }",
                       recipient_canonical_maps="inline:{ @old.example=@new.example }",
                       canonical_maps="inline:{ jane@mx.example.com=jane.doe@example.com }")
        msg = queued(submit(cfg, "From: joe\nTo: jane\n\nb\n", sender="joe",
                            recipients=["jane", "x@old.example"], context="local"))
        assert msg.sender == "Joe.User@example.com"
        assert [r.address for r in msg.recipients] == ["jane.doe@example.com", "x@new.example"]
        head, _ = headers_of(msg)
        assert "From: Joe.User@example.com" in head and "To: jane.doe@example.com" in head


def test_pickup_submission_gets_received_by_userid(spool):
    cfg = make_cfg(spool)
    header = {"op": "message", "sender": "joe", "recipients": [{"address": "jane"}],
              "attrs": {"origin": "pickup", "rewrite_context": "local"}, "flags": [],
              "uid": 1000, "arrival_time": 1764360224.0}
    reply, _ = handle_message(cfg, header, [b"Subject: x\n\nbody\n"])
    msg = queued(reply)
    head, _ = headers_of(msg)
    first = head.split("\n")[:2]
    assert first[0] == "Received: by mx.example.com (Postfix, from userid 1000)"
    assert first[1].startswith(f"\tid {reply['queue_id']}; ")
    assert msg.arrival_time == 1764360224.0


def test_bounce_notice_gets_received_by_without_userid(spool):
    cfg = make_cfg(spool)
    header = {"op": "message", "sender": "", "recipients": [{"address": "jane"}],
              "attrs": {"origin": "bounce", "rewrite_context": "local"}, "flags": []}
    reply, _ = handle_message(cfg, header, [b"Subject: Undelivered\n\nbody\n"])
    head, _ = headers_of(queued(reply))
    first = head.split("\n")[:2]
    assert first[0] == "Received: by mx.example.com (Postfix)"
    assert first[1].startswith(f"\tid {reply['queue_id']}; ")


def test_override_options_in_flags(spool):
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(spool, virtual_alias_maps="inline:{ a@v.example=b@x.example }")
    msg = queued(submit(cfg, SIMPLE, recipients=["a@v.example"], flags=["no_address_mappings"]))
    assert msg.recipients[0].address == "a@v.example"


def test_unmatched_extensions_propagate(spool):
    pytest.importorskip("pymaster.mail.maps")
    cfg = make_cfg(spool, recipient_delimiter="+",
                   virtual_alias_maps="inline:{ joe@v.example=joe.user@x.example }",
                   canonical_maps="inline:{ ann@c.example=ann.other@x.example }")
    msg = queued(submit(cfg, SIMPLE, recipients=["joe+foo@v.example", "ann+bar@c.example"]))
    assert [r.address for r in msg.recipients] == ["joe.user+foo@x.example",
                                                  "ann.other+bar@x.example"]


@pytest.mark.parametrize("content", [
    "just a body line\nand another\n",      # no headers at all
    "\nbody after an empty line\n",
    "Subject: only headers\n",
    "",
])
def test_remote_content_without_changes_is_kept_byte_for_byte(spool, content):
    msg = queued(submit(make_cfg(spool), content))
    assert msg.read_content() == content.encode()


def test_smtpd_received_header_gets_the_queue_id(spool):
    header = {"op": "message", "sender": "a@example.org", "recipients": [{"address": "b@x.example"}],
              "attrs": {"origin": "smtpd", "rewrite_context": "remote"}, "flags": [],
              "queue_id_placeholder": "@QID@"}
    content = (b"Received: from c (localhost [127.0.0.1])\n\tby mx (Postfix) with ESMTP id @QID@\n"
               b"Subject: mentions @QID@\n\nbody @QID@\n")
    reply, _ = handle_message(make_cfg(spool), header, [content])
    msg = queued(reply)
    assert msg.read_content() == content.replace(b"@QID@", reply["queue_id"].encode(), 1)


class TestActions:
    def submit_with(self, cfg, actions, recipients=("b@x.example",)):
        header = {"op": "message", "sender": "a@example.org",
                  "recipients": [{"address": r} for r in recipients],
                  "attrs": {"origin": "smtpd", "rewrite_context": "remote"}, "flags": [],
                  "actions": actions}
        return handle_message(cfg, header, [SIMPLE.encode()])[0]

    def test_hold_puts_the_file_in_hold(self, spool):
        reply = self.submit_with(make_cfg(spool), [{"action": "HOLD", "text": "look at it"}])
        assert reply["status"] == "ok"
        assert [qid for qid, _ in queue.scan("hold")] == [reply["queue_id"]]
        assert list(queue.scan("incoming")) == []

    def test_discard_accepts_and_forgets(self, spool):
        reply = self.submit_with(make_cfg(spool), [{"action": "DISCARD", "text": ""},
                                                   {"action": "HOLD", "text": ""}])
        assert reply["status"] == "ok"
        assert list(queue.scan("incoming")) == [] and list(queue.scan("hold")) == []

    @staticmethod
    def complete_files_at_each_fsync(monkeypatch) -> list[list[str]]:
        """The queues that hold a complete file whenever a queue file is fsynced."""
        seen: list[list[str]] = []
        real_fsync = queue.DEFAULT_FS.fsync

        def spying_fsync(fd):
            seen.append([name for name in ("incoming", "hold") if any(
                os.stat(path).st_mode & 0o100 for _, path in queue.scan(name))])
            return real_fsync(fd)
        monkeypatch.setattr(queue.DEFAULT_FS, "fsync", spying_fsync)
        return seen

    def test_a_held_message_is_never_complete_in_incoming(self, spool, monkeypatch):
        # qmgr takes every complete file from incoming/: a held one must
        # already be in hold/ when it gets its completion mark.
        seen = self.complete_files_at_each_fsync(monkeypatch)
        self.submit_with(make_cfg(spool), [{"action": "HOLD", "text": "look at it"}])
        assert seen == [["hold"]]

    def test_a_discarded_message_is_never_queued(self, spool, monkeypatch):
        seen = self.complete_files_at_each_fsync(monkeypatch)
        reply = self.submit_with(make_cfg(spool), [{"action": "DISCARD", "text": ""}])
        assert reply["status"] == "ok" and reply["queue_id"]
        assert seen == []

    def test_filter_redirect_and_bcc(self, spool):
        reply = self.submit_with(make_cfg(spool), [
            {"action": "FILTER", "text": "smtp:[127.0.0.1]:10025"},
            {"action": "REDIRECT", "text": "abuse"},
            {"action": "BCC", "text": "archive@x.example"}],
            recipients=("b@x.example", "c@x.example"))
        msg = queued(reply)
        assert msg.attrs["content_filter"] == "smtp:[127.0.0.1]:10025"
        assert [(r.address, r.orig) for r in msg.recipients] == [
            ("abuse@mx.example.com", "b@x.example"), ("abuse@mx.example.com", "c@x.example"),
            ("archive@x.example", "")]


class TestReservations:
    """smtpd reserves the queue file at its first accepted recipient (as Postfix's
    smtpd opens its cleanup stream then); the message request fills it."""

    @pytest.fixture
    def handler(self, spool):
        from services.cleanup import make_handler
        return make_handler(make_cfg(spool), wake=False)

    def reserve(self, handler):
        reply, _ = handler({"op": "reserve"}, [])
        assert reply["status"] == "ok", reply
        return reply["queue_id"]

    def message(self, handler, queue_id, content=SIMPLE, size_limit=None):
        header = {"op": "message", "sender": "a@example.org",
                  "recipients": [{"address": "b@x.example"}],
                  "attrs": {"origin": "smtpd", "rewrite_context": "remote"}, "flags": [],
                  "queue_id": queue_id}
        return handler(header, [content.encode()])[0]

    def test_reserved_file_is_incomplete_until_the_message_fills_it(self, handler, spool):
        queue_id = self.reserve(handler)
        path = queue.path_of("incoming", queue_id)
        assert not queue.is_complete(path)     # qmgr, mailq and postsuper -p skip it
        reply = self.message(handler, queue_id)
        assert reply == {"status": "ok", "queue_id": queue_id}
        msg = queued(reply)
        assert queue.is_complete(path) and msg.read_content() == SIMPLE.encode()
        assert re.search(rf"{queue_id}: message-id=<abc@example.org>$", maillog(spool), re.M)

    def test_abandon_removes_the_reservation_silently(self, handler, spool):
        queue_id = self.reserve(handler)
        handler({"op": "abandon", "queue_id": queue_id}, [])
        assert list(queue.scan("incoming")) == []
        assert not (spool / "maillog").exists() or queue_id not in maillog(spool)

    def test_abandon_never_removes_a_queued_message(self, handler):
        queue_id = self.reserve(handler)
        self.message(handler, queue_id)
        handler({"op": "abandon", "queue_id": queue_id}, [])
        assert queue.is_complete(queue.path_of("incoming", queue_id))

    def test_a_rejected_message_removes_its_reserved_file(self, handler):
        queue_id = self.reserve(handler)
        header_loop = "".join(f"Received: hop {i}\n" for i in range(60)) + "\nbody\n"
        assert self.message(handler, queue_id, header_loop)["status"] == "reject"
        assert list(queue.scan("incoming")) == []

    def test_a_vanished_reservation_gets_a_new_file(self, handler, spool):
        queue_id = self.reserve(handler)
        queue.release("incoming", queue_id)        # e.g. postsuper -d ALL
        reply = self.message(handler, queue_id)
        assert reply["status"] == "ok" and reply["queue_id"] != queue_id
        assert queued(reply).read_content() == SIMPLE.encode()
        assert f"{queue_id}: reserved queue file is gone; the message is queued as " \
               f"{reply['queue_id']}" in maillog(spool)

    def test_a_committed_file_is_not_written_twice(self, handler):
        queue_id = self.reserve(handler)
        self.message(handler, queue_id)
        reply = self.message(handler, queue_id, "Subject: other\n\nx\n")
        assert reply["queue_id"] != queue_id
        assert queued({"status": "ok", "queue_id": queue_id}).read_content() == SIMPLE.encode()


def test_stale_reservations_are_swept(spool, monkeypatch):
    """A reservation whose smtpd died without `abandon` goes after ipc_timeout."""
    import os
    from services.cleanup import reservation
    cfg = make_cfg(spool, ipc_timeout="60s")
    stale = queue.reserve("incoming")
    os.utime(queue.path_of("incoming", stale), (1, 1))
    fresh = queue.reserve("incoming")
    done = queue.reserve("incoming")
    queue.open_reserved("incoming", done).commit()
    os.utime(queue.path_of("incoming", done), (1, 1))
    monkeypatch.setattr(reservation, "_next_sweep", 0.0)
    reply, _ = reservation.handle_reserve(cfg, {"op": "reserve"})
    left = {queue_id for queue_id, _ in queue.scan("incoming")}
    assert left == {fresh, done, reply["queue_id"]}
    assert f"{stale}: removed stale incomplete queue file" in maillog(spool)


def test_a_sweep_never_takes_a_file_being_written(spool):
    import os
    stale = queue.reserve("incoming")
    os.utime(queue.path_of("incoming", stale), (1, 1))
    writer = queue.open_reserved("incoming", stale)      # holds the lock
    assert queue.sweep_reserved("incoming", 60) == []
    writer.write_envelope(1.0, "a@b.example", [records.Recipient("c@d.example")], {})
    writer.commit()
    assert queue.is_complete(queue.path_of("incoming", stale))
