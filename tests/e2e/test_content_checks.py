"""header_checks, mime_header_checks, nested_header_checks and body_checks end to end:
every action through the real smtpd and cleanup, the replies, the log lines and
what the recipient finally sees. One instance serves the module."""

from __future__ import annotations

import os
import re
import smtplib

import pytest

from tests.support.instance import ROOT, Instance

pytestmark = pytest.mark.skipif(not (ROOT / "libexec" / "smtpd").exists(),
                                reason="needs the smtpd service")

HEADER_CHECKS = r"""
/^Subject: e2e-reject/      REJECT no thanks
/^Subject: e2e-warn/        WARN looks odd
/^Subject: e2e-info/        INFO noted
/^Subject: e2e-hold/        HOLD wait for review
/^Subject: e2e-discard/     DISCARD thrown away
/^X-Internal:/              IGNORE
/^Subject: e2e-prepend/     PREPEND X-Tagged: yes
/^Subject: e2e-replace/     REPLACE Subject: [replaced]
/^Subject: e2e-redirect/    REDIRECT boss@v.example
/^Subject: e2e-bcc/         BCC audit@v.example
/^Subject: e2e-filter/      FILTER discard:filtered by header_checks
/^Subject: e2e-dunno/       DUNNO
"""

BODY_CHECKS = r"""
/^e2e body reject/          REJECT body refused
/^e2e body replace/         REPLACE the line was replaced
/^e2e body ignore/          IGNORE
/^e2e body warn/            WARN body warning
"""

MIME_CHECKS = r"""
/^Content-(Type|Disposition):.*name="?.*\.(exe|scr)"?/   REJECT attachment type refused
"""

NESTED_CHECKS = r"""
/^Subject: e2e-nested/      REJECT forwarded message refused
"""


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("checks")
    inst = Instance(tmp, start=False, main_cf={
        "myhostname": "mx.example.com", "mydomain": "example.com",
        "virtual_mailbox_domains": "v.example",
        "virtual_mailbox_base": str(tmp / "spool" / "mailboxes"),
        "virtual_mailbox_maps": "regexp:$config_directory/vmailbox.v",
        "virtual_uid_maps": f"static:{os.getuid() or 5000}",
        "virtual_gid_maps": f"static:{os.getgid() or 5000}",
        "virtual_minimum_uid": "0",
        "header_checks": "regexp:$config_directory/header_checks",
        "mime_header_checks": "pcre:$config_directory/mime_header_checks",
        "nested_header_checks": "regexp:$config_directory/nested_header_checks",
        "body_checks": "regexp:$config_directory/body_checks",
    })
    files = {"vmailbox.v": "/^(.+)@v\\.example$/ v.example/$1/\n",
             "header_checks": HEADER_CHECKS, "body_checks": BODY_CHECKS,
             "mime_header_checks": MIME_CHECKS, "nested_header_checks": NESTED_CHECKS}
    for name, text in files.items():
        (inst.config_dir / name).write_text(text)
    with inst:
        inst.start()
        yield inst


def send(inst, subject: str, body: str = "hello\n", extra: str = "",
         rcpts: tuple[str, ...] = ("user@v.example",), raw: str | None = None) -> None:
    msg = raw or (f"From: a@example.org\nTo: {', '.join(rcpts)}\nSubject: {subject}\n{extra}\n{body}")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("a@example.org", list(rcpts), msg.replace("\n", "\r\n"))


def delivered(inst, user: str, token: str, timeout: float = 20) -> str:
    """delivered - the message holding TOKEN in user@v.example's Maildir."""
    return inst.maildir_message_with(inst.mailbox_dir / "v.example" / user, token, timeout)


def head(text: str) -> str:
    return text.partition("\n\n")[0]


LOG_TAIL = r"from localhost\[127\.0\.0\.1\]; from=<a@example\.org> to=<user@v\.example> " \
           r"proto=ESMTP helo=<[^>]+>"


def test_reject_answers_550_at_end_of_data_and_logs(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "e2e-reject now")
    assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 no thanks")
    inst.wait_for_log(r"postfix/cleanup\[\d+\]: \w+: reject: header Subject: e2e-reject now "
                      + LOG_TAIL + r": 5\.7\.1 no thanks$")


@pytest.mark.parametrize("subject,action,text", [
    ("e2e-warn", "warning", "looks odd"), ("e2e-info", "info", "noted")])
def test_warn_and_info_log_and_deliver(inst, subject, action, text):
    send(inst, subject)
    m = inst.wait_for_log(rf"(\w+): {action}: header Subject: {subject} {LOG_TAIL}: {text}$")
    assert delivered(inst, "user", f"Subject: {subject}")
    assert m.group(1)


def test_hold_keeps_the_message_in_the_hold_queue(inst):
    send(inst, "e2e-hold")
    m = inst.wait_for_log(rf"(\w+): hold: header Subject: e2e-hold {LOG_TAIL}: wait for review$")
    out = inst.command("postcat", "-q", m.group(1))
    assert out.returncode == 0 and b"Subject: e2e-hold" in out.stdout
    assert list((inst.queue_dir / "hold").rglob(m.group(1)))


def test_discard_accepts_and_throws_away(inst):
    send(inst, "e2e-discard")
    inst.wait_for_log(rf"\w+: discard: header Subject: e2e-discard {LOG_TAIL}: thrown away$")


def test_ignore_prepend_and_replace_edit_the_headers(inst):
    send(inst, "e2e-prepend", extra="X-Internal: secret\n")
    text = head(delivered(inst, "user", "e2e-prepend"))
    assert "X-Tagged: yes\nSubject: e2e-prepend" in text and "X-Internal" not in text
    send(inst, "e2e-replace", body="token-replace\n")
    text = delivered(inst, "user", "token-replace")
    assert "Subject: [replaced]" in head(text) and "e2e-replace" not in text
    inst.wait_for_log(rf"replace: header Subject: e2e-replace {LOG_TAIL}: Subject: \[replaced\]$")


def test_redirect_and_bcc_change_the_recipients(inst):
    send(inst, "e2e-redirect")
    assert delivered(inst, "boss", "e2e-redirect")
    inst.wait_for_log(rf"redirect: header Subject: e2e-redirect {LOG_TAIL}: boss@v\.example$")
    send(inst, "e2e-bcc")
    assert delivered(inst, "user", "e2e-bcc") and delivered(inst, "audit", "e2e-bcc")


def test_filter_sends_the_message_to_the_named_transport(inst):
    send(inst, "e2e-filter")
    m = inst.wait_for_log(rf"(\w+): filter: header Subject: e2e-filter {LOG_TAIL}: "
                          r"discard:filtered by header_checks$")
    inst.wait_for_log(rf"{m.group(1)}: to=<user@v\.example>, relay=none, .*status=sent "
                      r"\(filtered by header_checks\)")


def test_dunno_delivers_untouched(inst):
    send(inst, "e2e-dunno")
    assert "Subject: e2e-dunno" in delivered(inst, "user", "e2e-dunno")


def test_body_checks_reject_replace_ignore_and_warn(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "body-1", body="fine\ne2e body reject\n")
    assert (e.value.smtp_code, e.value.smtp_error) == (550, b"5.7.1 body refused")
    inst.wait_for_log(rf"reject: body e2e body reject {LOG_TAIL}: 5\.7\.1 body refused$")
    send(inst, "body-2", body="a\ne2e body replace\ne2e body ignore\ne2e body warn\nz\n")
    text = delivered(inst, "user", "body-2")
    assert text.endswith("\n\na\nthe line was replaced\ne2e body warn\nz\n")
    inst.wait_for_log(rf"warning: body e2e body warn {LOG_TAIL}: body warning$")


MULTIPART = """From: a@example.org
To: user@v.example
Subject: {subject}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=-part-="

--=-part-=
Content-Type: text/plain

see attached
--=-part-=
Content-Type: {att_type}

{att_body}
--=-part-=--
"""


def test_mime_header_checks_refuse_an_attachment(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "", raw=MULTIPART.format(subject="mime-1", att_body="TVqQAAMAAAAEAAAA",
                                            att_type='application/octet-stream; name="a.exe"'))
    assert e.value.smtp_error == b"5.7.1 attachment type refused"


def test_nested_header_checks_see_a_forwarded_message(inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(inst, "", raw=MULTIPART.format(subject="mime-2", att_type="message/rfc822",
                                            att_body="Subject: e2e-nested\nFrom: x@y\n\nhi"))
    assert e.value.smtp_error == b"5.7.1 forwarded message refused"
    inst.wait_for_log(r"reject: header Subject: e2e-nested from")


# -- strict MIME options (services/cleanup/strict.py) ---------------------------

EIGHT_BIT_HEADER = "Subject: caf\xe9 e2e-8bit-header\n\ntoken-8bit-header\n"
EIGHT_BIT_BODY = "Subject: e2e-8bit-body\n\nna\xefve token-8bit-body\n"


def send_bytes(inst, text: str) -> None:
    msg = f"From: a@example.org\nTo: user@v.example\n{text}".replace("\n", "\r\n")
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
        s.sendmail("a@example.org", ["user@v.example"], msg.encode())


@pytest.fixture(scope="module")
def strict_inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strict")
    inst = Instance(tmp, start=False, main_cf={
        "myhostname": "mx.example.com", "mydomain": "example.com",
        "virtual_mailbox_domains": "v.example",
        "virtual_mailbox_base": str(tmp / "spool" / "mailboxes"),
        "virtual_mailbox_maps": "static:v.example/user/",
        "virtual_uid_maps": f"static:{os.getuid() or 5000}",
        "virtual_gid_maps": f"static:{os.getgid() or 5000}",
        "virtual_minimum_uid": "0",
        "strict_7bit_headers": "yes",
        "strict_mime_encoding_domain": "yes",
    })
    with inst:
        inst.start()
        yield inst


def test_8bit_headers_and_bodies_are_accepted_by_default(inst):
    send_bytes(inst, EIGHT_BIT_HEADER)
    assert "caf\xe9" in delivered(inst, "user", "token-8bit-header")


def test_strict_7bit_headers_refuses_an_8bit_header(strict_inst):
    with pytest.raises(smtplib.SMTPDataError) as e:
        send_bytes(strict_inst, EIGHT_BIT_HEADER)
    assert (e.value.smtp_code, e.value.smtp_error) == (
        550, b"5.6.0 improper use of 8-bit data in message header")
    strict_inst.wait_for_log(
        r"postfix/cleanup\[\d+\]: \w+: reject: mime-error improper use of 8-bit data in "
        r"message header: Subject: caf\xe9 e2e-8bit-header from localhost\[127\.0\.0\.1\]; "
        r"from=<a@example\.org> to=<user@v\.example>$")


def test_strict_7bit_headers_alone_lets_an_8bit_body_through(strict_inst):
    send_bytes(strict_inst, EIGHT_BIT_BODY)
    assert "na\xefve" in delivered(strict_inst, "user", "token-8bit-body")


def test_strict_mime_encoding_domain_refuses_an_encoded_multipart(strict_inst):
    text = ("Subject: e2e-domain\nMIME-Version: 1.0\nContent-Transfer-Encoding: base64\n"
            'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b--\n')
    with pytest.raises(smtplib.SMTPDataError) as e:
        send_bytes(strict_inst, text)
    assert e.value.smtp_error == b"5.6.0 invalid message/* or multipart/* encoding domain"
    strict_inst.wait_for_log(r"reject: mime-error invalid message/\* or multipart/\* encoding "
                             r"domain: base64 from localhost\[127\.0\.0\.1\]")
