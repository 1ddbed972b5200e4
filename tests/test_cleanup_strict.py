"""cleanup's strict MIME options (services/cleanup/strict.py): strict_7bit_headers,
strict_8bitmime_body, strict_8bitmime, strict_mime_encoding_domain, through the
message request in a tmp queue directory."""

import pytest

from tests.test_cleanup import make_cfg, maillog, queued, spool, submit  # noqa: F401

HEADER_8BIT = "improper use of 8-bit data in message header"
BODY_8BIT = "improper use of 8-bit data in message body"
DOMAIN = "invalid message/* or multipart/* encoding domain"

EIGHT_BIT_SUBJECT = "From: a@example.org\nSubject: caf\xe9\n\nplain body\n".encode()
EIGHT_BIT_BODY = "From: a@example.org\nSubject: hi\n\nna\xefve body\n".encode()
DECLARED_8BIT = ("From: a@example.org\nMIME-Version: 1.0\nContent-Type: text/plain\n"
                 "Content-Transfer-Encoding: 8bit\n\nna\xefve body\n").encode()

MULTIPART = """From: a@example.org
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="BB"
{top_cte}
preamble
--BB
Content-Type: text/plain
{part_cte}
{part_body}
--BB
Content-Type: message/rfc822
{nested_cte}
Subject: {nested_subject}

inner body
--BB--
"""


def multipart(top_cte="", part_cte="", part_body="text", nested_cte="",
              nested_subject="inner"):
    def header(value):
        return f"Content-Transfer-Encoding: {value}\n" if value else ""
    return MULTIPART.format(top_cte=header(top_cte), part_cte=header(part_cte),
                            part_body=part_body, nested_cte=header(nested_cte),
                            nested_subject=nested_subject).encode()


def send(cfg, content, **kw):
    kw.setdefault("client_name", "client.example")
    kw.setdefault("client_address", "192.0.2.1")
    reply, _ = submit(cfg, content, **kw)
    return reply


def refused_with(reply, text):
    return (reply["status"], reply["dsn"], reply["reason"]) == ("reject", "5.6.0", text)


class TestOffByDefault:
    @pytest.mark.parametrize("content", [EIGHT_BIT_SUBJECT, EIGHT_BIT_BODY,
                                         multipart(top_cte="base64")])
    def test_8bit_and_bad_domains_are_accepted_unchanged(self, spool, content):  # noqa: F811
        reply = send(make_cfg(spool), content)
        assert content in queued(reply).read_content()


class TestStrict7bitHeaders:
    def test_8bit_subject_is_refused_and_logged_as_postfix_does(self, spool):  # noqa: F811
        reply = send(make_cfg(spool, strict_7bit_headers="yes"), EIGHT_BIT_SUBJECT)
        assert refused_with(reply, HEADER_8BIT)
        line = [ln for ln in maillog(spool).splitlines() if "mime-error" in ln][0]
        assert line.endswith(f": reject: mime-error {HEADER_8BIT}: Subject: caf\xe9 from "
                             "client.example[192.0.2.1]; from=<sender@example.org> "
                             "to=<rcpt@example.net>")

    def test_8bit_in_a_part_header_or_attached_message_header(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_7bit_headers="yes")
        assert refused_with(send(cfg, multipart(nested_subject="s\xfc\xdf")), HEADER_8BIT)

    def test_8bit_body_is_not_its_business(self, spool):  # noqa: F811
        assert send(make_cfg(spool, strict_7bit_headers="yes"), EIGHT_BIT_BODY)["status"] == "ok"

    def test_invalid_utf8_bytes_count_too(self, spool):  # noqa: F811
        content = b"From: a@example.org\nSubject: \xff\xfe\n\nbody\n"
        assert refused_with(send(make_cfg(spool, strict_7bit_headers="yes"), content),
                            HEADER_8BIT)


class TestStrict8bitmimeBody:
    def test_8bit_text_without_8bit_encoding_is_refused(self, spool):  # noqa: F811
        reply = send(make_cfg(spool, strict_8bitmime_body="yes"), EIGHT_BIT_BODY)
        assert refused_with(reply, BODY_8BIT)
        assert f"mime-error {BODY_8BIT}: na\xefve body from" in maillog(spool)

    def test_8bit_text_declared_8bit_is_accepted(self, spool):  # noqa: F811
        reply = send(make_cfg(spool, strict_8bitmime_body="yes"), DECLARED_8BIT)
        assert reply["status"] == "ok"

    def test_each_part_is_judged_by_its_own_encoding(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_8bitmime_body="yes")
        assert send(cfg, multipart(part_cte="8bit", part_body="gr\xfc\xdfe"))["status"] == "ok"
        assert refused_with(send(cfg, multipart(part_body="gr\xfc\xdfe")), BODY_8BIT)

    def test_headers_are_not_its_business(self, spool):  # noqa: F811
        reply = send(make_cfg(spool, strict_8bitmime_body="yes"), EIGHT_BIT_SUBJECT)
        assert reply["status"] == "ok"


class TestStrict8bitmime:
    @pytest.mark.parametrize("content,reason", [(EIGHT_BIT_SUBJECT, HEADER_8BIT),
                                                (EIGHT_BIT_BODY, BODY_8BIT)])
    def test_turns_on_both(self, spool, content, reason):  # noqa: F811
        assert refused_with(send(make_cfg(spool, strict_8bitmime="yes"), content), reason)

    def test_both_errors_are_logged_and_the_header_one_is_the_reply(self, spool):  # noqa: F811
        content = "Subject: caf\xe9\n\nna\xefve\n".encode()
        assert refused_with(send(make_cfg(spool, strict_8bitmime="yes"), content), HEADER_8BIT)
        log = maillog(spool)
        assert f"mime-error {HEADER_8BIT}" in log and f"mime-error {BODY_8BIT}" in log


class TestStrictEncodingDomain:
    @pytest.mark.parametrize("where", ["top_cte", "nested_cte"])
    @pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
    def test_encoded_multipart_or_message_is_refused(self, spool, where, encoding):  # noqa: F811
        cfg = make_cfg(spool, strict_mime_encoding_domain="yes")
        assert refused_with(send(cfg, multipart(**{where: encoding})), DOMAIN)
        assert f"mime-error {DOMAIN}: {encoding} from" in maillog(spool)

    @pytest.mark.parametrize("encoding", ["7bit", "8bit", "binary"])
    def test_identity_encodings_pass(self, spool, encoding):  # noqa: F811
        cfg = make_cfg(spool, strict_mime_encoding_domain="yes")
        assert send(cfg, multipart(top_cte=encoding, nested_cte=encoding))["status"] == "ok"

    def test_a_leaf_part_may_be_encoded(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_mime_encoding_domain="yes")
        assert send(cfg, multipart(part_cte="base64", part_body="aGk="))["status"] == "ok"


class TestWhenNotApplied:
    def test_disable_mime_input_processing_turns_them_off(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_8bitmime="yes", disable_mime_input_processing="yes")
        assert send(cfg, EIGHT_BIT_SUBJECT)["status"] == "ok"

    def test_no_header_body_checks_turns_them_off(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_8bitmime="yes")
        reply = send(cfg, EIGHT_BIT_BODY, flags=["no_header_body_checks"])
        assert reply["status"] == "ok"

    @pytest.mark.parametrize("origin", ["bounce", "local", "verify"])
    def test_internal_and_forwarded_mail_is_not_inspected(self, spool, origin):  # noqa: F811
        cfg = make_cfg(spool, strict_8bitmime="yes")
        assert send(cfg, EIGHT_BIT_BODY, origin=origin)["status"] == "ok"

    def test_bounces_are_when_internal_mail_filter_classes_says_so(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_8bitmime="yes", internal_mail_filter_classes="bounce")
        assert refused_with(send(cfg, EIGHT_BIT_BODY, origin="bounce"), BODY_8BIT)

    def test_too_deep_nesting_is_refused_with_a_strict_option_on(self, spool):  # noqa: F811
        cfg = make_cfg(spool, strict_7bit_headers="yes", mime_nesting_limit="1")
        content = multipart(part_body="x").replace(b"Content-Type: text/plain",
                                                    b'Content-Type: multipart/mixed; boundary="Y"')
        reply = send(cfg, content)
        assert refused_with(reply, "MIME nesting exceeds safety limit")
        assert 'safety limit: Content-Type: multipart/mixed; boundary="Y" from' in maillog(spool)
