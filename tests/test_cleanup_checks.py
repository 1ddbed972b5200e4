"""cleanup's header_checks, mime_header_checks, nested_header_checks and body_checks
(header_checks(5)), driven through the message request in a tmp queue directory."""

import re

import pytest

from pymaster.mail import queue
from tests.test_cleanup import make_cfg, maillog, queued, spool, submit  # noqa: F401

HEADER_RULES = r"""
/^Subject: reject me/          REJECT no spam here
/^Subject: reject dsn/         REJECT 5.7.9 custom status
/^Subject: reject plain/       REJECT
/^Subject: warn me/            WARN watch this
/^Subject: info me/            INFO noted
/^Subject: hold me/            HOLD held for review
/^Subject: discard me/         DISCARD dropped
/^X-Secret:/                   IGNORE
/^Subject: prepend me/         PREPEND X-Flag: yes
/^Subject: replace me/         REPLACE Subject: replaced
/^Subject: redirect me/        REDIRECT boss@example.com
/^Subject: bcc me/             BCC audit@example.com
/^Subject: filter me/          FILTER scan:[127.0.0.1]:10025
/^Subject: dunno me/           DUNNO
/^Subject: ok me/              OK
/^Subject: nonsense me/        FROBNICATE
/^Subject: replace bad/        REPLACE not a header
"""

BODY_RULES = r"""
/^reject this line/            REJECT body says no
/^replace this line/           REPLACE replaced line
/^drop this line/              IGNORE
/^prepend here/                PREPEND inserted line
/^late marker/                 REJECT too late to see
"""

MIME_RULES = r"""
/^Content-Type:.*name=.*\.exe/  REJECT executables not allowed
"""

NESTED_RULES = r"""
/^Subject: nested bad/         REJECT nested message refused
"""


@pytest.fixture
def cfg(spool, tmp_path):  # noqa: F811
    files = {"header_checks": HEADER_RULES, "body_checks": BODY_RULES,
             "mime_header_checks": MIME_RULES, "nested_header_checks": NESTED_RULES}
    values = {}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        values[name] = f"regexp:{path}"
    return make_cfg(spool, **values)


def message(subject, body="hello\n", extra=""):
    return f"From: a@example.org\nTo: b@example.net\nSubject: {subject}\n{extra}\nbody:\n{body}"


def send(cfg, content, **kw):
    kw.setdefault("client_name", "client.example")
    kw.setdefault("client_address", "192.0.2.1")
    kw.setdefault("helo_name", "helo.example")
    kw.setdefault("protocol", "ESMTP")
    reply, _ = submit(cfg, content, **kw)
    return reply


def log_line(spool, action):  # noqa: F811
    lines = [ln for ln in maillog(spool).splitlines() if f": {action}: " in ln]
    assert lines, maillog(spool)
    return lines[-1]


class TestHeaderActions:
    def test_reject_refuses_with_5_7_1_and_logs_the_postfix_line(self, cfg, spool):  # noqa: F811
        reply = send(cfg, message("reject me now"))
        assert reply == {"status": "reject", "dsn": "5.7.1", "reason": "no spam here"}
        line = log_line(spool, "reject")
        assert re.search(r"postfix/cleanup\[\d+\]: \w+: reject: header Subject: reject me now "
                         r"from client\.example\[192\.0\.2\.1\]; from=<sender@example\.org> "
                         r"to=<rcpt@example\.net> proto=ESMTP helo=<helo\.example>: "
                         r"5\.7\.1 no spam here$", line), line
        assert list(queue.scan("incoming")) == []

    def test_reject_text_may_carry_its_own_status(self, cfg):
        assert send(cfg, message("reject dsn"))["dsn"] == "5.7.9"
        assert send(cfg, message("reject dsn"))["reason"] == "custom status"

    def test_reject_without_text_says_message_content_rejected(self, cfg):
        reply = send(cfg, message("reject plain"))
        assert (reply["dsn"], reply["reason"]) == ("5.7.1", "Message content rejected")

    @pytest.mark.parametrize("subject,action,text", [
        ("warn me", "warning", "watch this"), ("info me", "info", "noted")])
    def test_warn_and_info_log_and_deliver(self, cfg, spool, subject, action, text):  # noqa: F811
        msg = queued(send(cfg, message(subject)))
        assert msg.queue_id in log_line(spool, action)
        assert log_line(spool, action).endswith(f"helo=<helo.example>: {text}")

    def test_hold_puts_the_message_on_hold(self, cfg, spool):  # noqa: F811
        reply = send(cfg, message("hold me"))
        assert reply["status"] == "ok"
        assert [qid for qid, _ in queue.scan("hold")] == [reply["queue_id"]]
        assert log_line(spool, "hold").endswith(": held for review")

    def test_discard_accepts_and_drops(self, cfg, spool):  # noqa: F811
        reply = send(cfg, message("discard me"))
        assert reply["status"] == "ok"
        assert list(queue.scan("incoming")) == [] and list(queue.scan("hold")) == []
        assert log_line(spool, "discard").endswith(": dropped")

    def test_ignore_deletes_the_header(self, cfg):
        msg = queued(send(cfg, message("plain", extra="X-Secret: 42\n")))
        assert b"X-Secret" not in msg.read_content()

    def test_prepend_adds_a_header_before_the_match(self, cfg):
        content = queued(send(cfg, message("prepend me"))).read_content().decode()
        assert "X-Flag: yes\nSubject: prepend me\n" in content

    def test_replace_swaps_the_header(self, cfg, spool):  # noqa: F811
        content = queued(send(cfg, message("replace me"))).read_content().decode()
        assert "Subject: replaced\n" in content and "replace me" not in content
        assert log_line(spool, "replace").endswith(": Subject: replaced")

    def test_replace_with_a_non_header_is_warned_about_and_ignored(self, cfg, spool):  # noqa: F811
        content = queued(send(cfg, message("replace bad"))).read_content().decode()
        assert "Subject: replace bad\n" in content
        assert 'bad REPLACE header text "not a header"' in maillog(spool)

    def test_redirect_replaces_every_recipient(self, cfg, spool):  # noqa: F811
        msg = queued(send(cfg, message("redirect me"), recipients=["x@example.net", "y@example.net"]))
        assert [(r.address, r.orig) for r in msg.recipients] == \
            [("boss@example.com", "x@example.net"), ("boss@example.com", "y@example.net")]
        assert log_line(spool, "redirect").endswith(": boss@example.com")

    def test_bcc_adds_a_recipient(self, cfg):
        msg = queued(send(cfg, message("bcc me")))
        assert [r.address for r in msg.recipients] == ["rcpt@example.net", "audit@example.com"]

    def test_filter_sets_the_content_filter(self, cfg, spool):  # noqa: F811
        msg = queued(send(cfg, message("filter me")))
        assert msg.attrs["content_filter"] == "scan:[127.0.0.1]:10025"
        assert log_line(spool, "filter").endswith(": scan:[127.0.0.1]:10025")

    @pytest.mark.parametrize("subject", ["dunno me", "ok me"])
    def test_dunno_and_ok_change_nothing(self, cfg, spool, subject):  # noqa: F811
        msg = queued(send(cfg, message(subject)))
        assert f"Subject: {subject}\n" in msg.read_content().decode()
        assert msg.queue_id + ": warning:" not in maillog(spool)

    def test_an_unknown_action_is_warned_about(self, cfg, spool):  # noqa: F811
        queued(send(cfg, message("nonsense me")))
        assert "unknown command in header_checks map: FROBNICATE" in maillog(spool)

    def test_local_submissions_log_from_local(self, cfg, spool):  # noqa: F811
        reply, _ = submit(cfg, message("warn me"), origin="pickup", context="local")
        assert " from local; from=<sender@example.org>" in log_line(spool, "warning")

    def test_no_header_body_checks_turns_them_off(self, cfg):
        reply = send(cfg, message("reject me"), flags=["no_header_body_checks"])
        assert reply["status"] == "ok"


class TestBodyChecks:
    def test_reject_on_a_body_line(self, cfg, spool):  # noqa: F811
        reply = send(cfg, message("plain", body="ok\nreject this line\n"))
        assert (reply["status"], reply["dsn"], reply["reason"]) == ("reject", "5.7.1", "body says no")
        assert ": reject: body reject this line from client.example[192.0.2.1];" in \
            log_line(spool, "reject")

    def test_replace_ignore_and_prepend_edit_the_body(self, cfg):
        body = "a\nreplace this line\ndrop this line\nprepend here\nz\n"
        content = queued(send(cfg, message("plain", body=body))).read_content().decode()
        assert content.endswith("body:\na\nreplaced line\ninserted line\nprepend here\nz\n")

    def test_an_unmatched_body_is_written_byte_for_byte(self, cfg):
        raw = message("plain", body="caf\xe9 line\r\nnext\n").encode("latin-1")
        assert queued(send(cfg, raw)).read_content().endswith(b"caf\xe9 line\r\nnext\n")

    def test_lines_past_body_checks_size_limit_are_not_inspected(self, spool, tmp_path):  # noqa: F811
        rules = tmp_path / "body"
        rules.write_text(BODY_RULES)
        cfg = make_cfg(spool, body_checks=f"regexp:{rules}", body_checks_size_limit="100")
        body = "x" * 150 + "\nlate marker\n"
        assert send(cfg, message("plain", body=body))["status"] == "ok"


MULTIPART = """From: a@example.org
To: b@example.net
Subject: with attachment
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain

see attached
--XX
Content-Type: {att_type}

{att_body}
--XX--
"""


class TestMime:
    def test_mime_header_checks_see_the_headers_of_parts(self, cfg, spool):  # noqa: F811
        content = MULTIPART.format(att_type='application/octet-stream; name="x.exe"',
                                   att_body="TVqQ")
        reply = send(cfg, content)
        assert (reply["status"], reply["reason"]) == ("reject", "executables not allowed")
        assert ": reject: header Content-Type: application/octet-stream; name=\"x.exe\" from" \
            in log_line(spool, "reject")

    def test_nested_header_checks_see_attached_message_headers(self, cfg):
        content = MULTIPART.format(att_type="message/rfc822",
                                   att_body="Subject: nested bad\nFrom: x@y\n\ninner")
        assert send(cfg, content)["reason"] == "nested message refused"

    def test_header_checks_do_not_see_attached_message_headers(self, cfg):
        content = MULTIPART.format(att_type="message/rfc822",
                                   att_body="Subject: reject me\nFrom: x@y\n\ninner")
        assert send(cfg, content)["status"] == "ok"

    def test_body_checks_see_the_lines_of_every_part(self, cfg):
        content = MULTIPART.format(att_type="text/plain", att_body="reject this line")
        assert send(cfg, content)["reason"] == "body says no"

    def test_disable_mime_input_processing_makes_it_one_text(self, spool, tmp_path):  # noqa: F811
        mime, body = tmp_path / "mime", tmp_path / "body"
        mime.write_text(MIME_RULES)
        body.write_text("/^Content-Type: application/  REJECT seen as body\n")
        cfg = make_cfg(spool, mime_header_checks=f"regexp:{mime}", body_checks=f"regexp:{body}",
                       disable_mime_input_processing="yes")
        content = MULTIPART.format(att_type='application/octet-stream; name="x.exe"', att_body="x")
        assert send(cfg, content)["reason"] == "seen as body"

    def test_too_deep_nesting_is_refused_when_header_checks_are_on(self, spool, tmp_path):  # noqa: F811
        rules = tmp_path / "h"
        rules.write_text("/^X-Never:/ REJECT\n")
        cfg = make_cfg(spool, header_checks=f"regexp:{rules}", mime_nesting_limit="1")
        content = MULTIPART.format(att_type='multipart/mixed; boundary="YY"',
                                   att_body="--YY\n\nx\n--YY--")
        reply = send(cfg, content)
        assert (reply["dsn"], reply["reason"]) == ("5.6.0", "MIME nesting exceeds safety limit")
