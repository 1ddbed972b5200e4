"""services.smtp.generic: smtp_generic_maps on the envelope and the headers.

Postfix's smtp client rewrites the addresses of the primary sender and
recipient headers with the same table as the envelope; only the address
changes, everything around it stays, and a header without a change is
sent exactly as it was."""

from __future__ import annotations

import pytest

from pymaster.mail import delivery, queue, records
from pymaster.util import log
from pymaster.mail.config import Config
from pymaster.util.tables import TableError
from services.smtp.deliver import Client
from services.smtp.generic import UNCHANGED, GenericMaps, HeaderBlock
from services.smtp.settings import Settings
from tests.support.smtpscript import ScriptServer

TABLE = ("inline:{ user@localdomain.local=user@example.com, "
         "@other.local=someone@example.com, "
         "long@localdomain.local=a.much.longer.address.than.before@subdomain.example.com }")


def generic(table: str = TABLE, param: str = "smtp_generic_maps", **more) -> GenericMaps:
    values = {param: table, "myhostname": "host.localdomain.local", **more}
    return GenericMaps(Config("/nonexistent", values), param)


class TestEnvelope:
    def test_mapped_address(self):
        assert generic().rewrite("user@localdomain.local") == "user@example.com"

    def test_domain_entry(self):
        assert generic().rewrite("anybody@other.local") == "someone@example.com"

    def test_unmapped_and_null_addresses_stay(self):
        g = generic()
        assert g.rewrite("bob@example.org") == "bob@example.org"
        assert g.rewrite("") == ""

    def test_no_table_no_rewriting(self):
        g = generic(table="")
        assert not g and g.rewrite("user@localdomain.local") == "user@localdomain.local"


class TestHeader:
    @pytest.mark.parametrize("before, after", [
        ("From: user@localdomain.local\n", "From: user@example.com\n"),
        ("From: Joe User <user@localdomain.local>\n", "From: Joe User <user@example.com>\n"),
        ('From: "User, Joe" (the boss) <user@localdomain.local>\n',
         'From: "User, Joe" (the boss) <user@example.com>\n'),
        ("From: user@localdomain.local (Joe User)\n", "From: user@example.com (Joe User)\n"),
        ("To: friends: user@localdomain.local, bob@example.org;\n",
         "To: friends: user@example.com, bob@example.org;\n"),
        ("Cc: bob@example.org,\n\tJoe <user@localdomain.local>\n",
         "Cc: bob@example.org,\n\tJoe <user@example.com>\n"),
        ("reply-to:user@localdomain.local\n", "reply-to:user@example.com\n"),
    ])
    def test_only_the_address_changes(self, before, after):
        assert generic().rewrite_header(before) == after

    @pytest.mark.parametrize("name", [
        "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Resent-From", "Resent-Sender",
        "Resent-To", "Resent-Cc", "Resent-Bcc", "Resent-Reply-To", "Return-Receipt-To",
        "Errors-To", "Apparently-To", "Disposition-Notification-To", "Mail-Followup-To",
        "Return-Path"])
    def test_postfix_sender_and_recipient_headers(self, name):
        assert generic().rewrite_header(f"{name}: <user@localdomain.local>\n") == \
            f"{name}: <user@example.com>\n"

    @pytest.mark.parametrize("text", [
        "Subject: mail from user@localdomain.local\n",
        "Message-Id: <user@localdomain.local>\n",
        "Received: from x by y for <user@localdomain.local>; date\n",
        "X-Original-To: user@localdomain.local\n",
    ])
    def test_other_headers_are_left_alone(self, text):
        assert generic().rewrite_header(text) is text

    def test_unchanged_header_is_the_same_text(self):
        text = "To:   bob@example.org ,\n  carol@example.net   (Carol)\n"
        assert generic().rewrite_header(text) is text

    def test_quoted_local_part_in_the_result(self):
        g = generic(table="inline:{ {user@localdomain.local=joe user@example.com} }")
        assert g.rewrite_header("From: <user@localdomain.local>\n") == \
            'From: <"joe user"@example.com>\n'

    def test_a_line_that_grows_too_long_is_folded(self):
        before = ("To: Somebody With A Rather Long Display Name <long@localdomain.local>, "
                  "bob@example.org\n")
        after = generic().rewrite_header(before)
        assert "a.much.longer.address.than.before@subdomain.example.com" in after
        lines = after.rstrip("\n").split("\n")
        assert len(lines) > 1 and all(len(line) <= 78 for line in lines)
        assert all(line[0] in " \t" for line in lines[1:])
        assert after.endswith("bob@example.org\n")

    def test_table_failure_is_raised(self):
        with pytest.raises(TableError):
            generic(table="fail:x").rewrite_header("From: user@localdomain.local\n")


class _Message:
    """What header_block reads of a records.Message: content in chunks."""

    def __init__(self, content: bytes, chunk: int = 7) -> None:
        self.content = content
        self.content_length = len(content)
        self.chunk = chunk
        self.read = 0

    def iter_content(self):
        for i in range(0, len(self.content), self.chunk):
            self.read = i + self.chunk
            yield self.content[i:i + self.chunk]


CONTENT = (b"Received: from a by b\n"
           b"From: Joe <user@localdomain.local>\n"
           b"To: bob@example.org\n"
           b"Subject: hi\n"
           b"\n"
           b"From: user@localdomain.local is quoted in the body\n"
           + b"x" * 1000 + b"\n")


class TestHeaderBlock:
    def test_rewritten_block_spliced_into_the_content(self):
        block = generic().header_block(_Message(CONTENT))
        assert block.apply(CONTENT) == CONTENT.replace(
            b"From: Joe <user@localdomain.local>", b"From: Joe <user@example.com>", 1)

    def test_the_body_is_not_read(self):
        msg = _Message(CONTENT)
        generic().header_block(msg)
        assert msg.read <= CONTENT.index(b"xxx") + msg.chunk     # not the 1000 x

    def test_the_stream_form_gives_the_same_bytes(self):
        block = generic().header_block(_Message(CONTENT))
        chunks = [CONTENT[i:i + 5] for i in range(0, len(CONTENT), 5)]
        assert b"".join(block.stream(chunks)) == block.apply(CONTENT)

    def test_nothing_to_change_is_unchanged(self):
        content = CONTENT.replace(b"user@localdomain.local", b"bob@example.org")
        block = generic().header_block(_Message(content))
        assert block is UNCHANGED and block.apply(content) is content
        assert b"".join(UNCHANGED.stream([content[:5], content[5:]])) == content

    def test_no_table_reads_nothing(self):
        msg = _Message(CONTENT)
        assert generic(table="").header_block(msg) is UNCHANGED and msg.read == 0

    def test_a_body_line_ends_the_header_block(self):
        content = b"From: user@localdomain.local\nnot a header\nTo: user@localdomain.local\n"
        block = generic().header_block(_Message(content))
        assert block.apply(content) == \
            b"From: user@example.com\nnot a header\nTo: user@localdomain.local\n"

    def test_headers_without_a_final_newline(self):
        content = b"From: user@localdomain.local"
        assert generic().header_block(_Message(content)).apply(content) == \
            b"From: user@example.com\n"

    def test_headers_of_an_attached_message_stay(self):
        # Postfix rewrites the primary headers only (smtp_header_rewrite).
        content = (b"From: user@localdomain.local\nMIME-Version: 1.0\n"
                   b"Content-Type: message/rfc822\n\nFrom: user@localdomain.local\n\nhi\n")
        out = generic().header_block(_Message(content)).apply(content)
        assert out.startswith(b"From: user@example.com\n")
        assert out.endswith(b"\n\nFrom: user@localdomain.local\n\nhi\n")

    def test_header_block_stream_skips_across_chunks(self):
        block = HeaderBlock(b"NEW\n", 6)
        assert b"".join(block.stream([b"ab", b"cd", b"efgh", b"ij"])) == b"NEW\nghij"


# -- through the client, against a scripted server ----------------------------

@pytest.fixture
def spool(tmp_path, monkeypatch):
    queue.create_layout(str(tmp_path / "spool"))
    monkeypatch.chdir(tmp_path / "spool")
    monkeypatch.setattr(log, "info", lambda line: None)
    return tmp_path / "spool"


def send(tmp_path, server, content: bytes, table: str = TABLE, client_hook=None):
    cfg = Config(str(tmp_path), {"myhostname": "client.example",
                                 "inet_interfaces": "loopback-only",
                                 "smtp_connection_cache_on_demand": "no",
                                 "smtp_generic_maps": table})
    client = Client(cfg, Settings.from_config(cfg, False))
    if client_hook:
        client_hook(client)
    w = queue.create("active")
    w.write_envelope(1000.0, "user@localdomain.local",
                     [records.Recipient("bob@example.org", orig="bob@example.org")], {})
    w.write_content([content])
    qid = w.commit()
    path = queue.path_of("active", qid)
    msg = records.read_message(path)
    req = delivery.DeliveryRequest(queue_id=qid, path=path, transport="smtp",
                                   nexthop=f"[127.0.0.1]:{server.port}", sender=msg.sender,
                                   recipients=msg.pending(), arrival_time=msg.arrival_time)
    status = delivery.Status(req)
    client.deliver(req, status)
    client.close()
    return status.results[0]


class TestDelivery:
    def test_envelope_and_headers_go_out_rewritten(self, spool, tmp_path):
        with ScriptServer() as server:
            result = send(tmp_path, server, CONTENT)
        assert result["status"] == "sent"
        txn = server.messages[0]
        assert txn["mail"].startswith("MAIL FROM:<user@example.com>")
        assert b"\r\nFrom: Joe <user@example.com>\r\n" in txn["data"]
        assert b"From: user@localdomain.local is quoted in the body" in txn["data"]

    def test_header_lookup_failure_defers_before_any_session(self, spool, tmp_path,
                                                             monkeypatch):
        def failing(client):
            lookup = client.generic.maps.lookup

            def lookup_or_fail(key, partial=False):
                if "header-only" in key:
                    raise TableError("table unavailable")
                return lookup(key, partial)
            monkeypatch.setattr(client.generic.maps, "lookup", lookup_or_fail)

        warnings = []
        monkeypatch.setattr(log, "warning", warnings.append)
        content = b"From: user@localdomain.local\nCc: header-only@localdomain.local\n\nhi\n"
        with ScriptServer() as server:
            result = send(tmp_path, server, content, client_hook=failing)
        assert result["status"] == "deferred" and result["dsn"] == "4.3.0"
        assert result["reason"] == "generic address mapping lookup failure"
        assert server.messages == [] and server.commands == []
        assert any("smtp_generic_maps lookup error" in w for w in warnings)
