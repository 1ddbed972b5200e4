"""Parsing SMTP commands and the MAIL FROM / RCPT TO parameters."""

import pytest

from services.smtpd import replies
from services.smtpd.command import CommandError, parse_mail, parse_rcpt, split_command


@pytest.mark.parametrize("line, verb, arg", [
    ("EHLO client.example", "EHLO", "client.example"),
    ("mail FROM:<a@b>", "MAIL", "FROM:<a@b>"),
    ("QUIT", "QUIT", ""),
    ("  noop  ", "NOOP", ""),
    ("RCPT TO: <a@b>  NOTIFY=NEVER", "RCPT", "TO: <a@b>  NOTIFY=NEVER"),
])
def test_split_command(line, verb, arg):
    assert split_command(line) == (verb, arg)


class TestMail:
    def test_plain_sender(self):
        assert parse_mail("FROM:<a@example.com>").sender == "a@example.com"

    def test_null_sender(self):
        assert parse_mail("FROM:<>").sender == ""

    def test_space_after_colon_and_lower_case_keyword(self):
        assert parse_mail("from: <a@example.com>").sender == "a@example.com"

    def test_all_parameters(self):
        m = parse_mail("FROM:<a@b> SIZE=1000 BODY=8bitmime RET=HDRS ENVID=x+2By SMTPUTF8")
        assert (m.size, m.body, m.ret, m.envid, m.smtputf8) == (1000, "8BITMIME", "HDRS", "x+2By", True)

    @pytest.mark.parametrize("arg, reply", [
        ("", replies.ERR_SYNTAX_MAIL),
        ("TO:<a@b>", replies.ERR_SYNTAX_MAIL),
        ("FROM:", replies.ERR_SYNTAX_MAIL),
        ("FROM:<a@b", replies.ERR_BAD_SENDER),
        ("FROM:<a@b> SIZE=x", replies.ERR_BAD_SIZE),
        ("FROM:<a@b> BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
        ("FROM:<a@b> RET=ALL", replies.ERR_BAD_RET),
        ("FROM:<a@b> ENVID=a=b", replies.ERR_BAD_ENVID),
        ("FROM:<a@b> FOO=bar", "555 5.5.4 Unsupported option: FOO=bar"),
        # As Postfix: a keyword without its value is no option it knows, and
        # the option is named as the client wrote it.
        ("FROM:<a@b> SIZE", "555 5.5.4 Unsupported option: SIZE"),
        ("FROM:<a@b> RET", "555 5.5.4 Unsupported option: RET"),
        ("FROM:<a@b> c@d", "555 5.5.4 Unsupported option: c@d"),
        ("FROM:a b", "555 5.5.4 Unsupported option: b"),
        ("FROM:<a@\u00e9.example>", replies.ERR_BAD_SENDER),   # 8-bit domain, no SMTPUTF8
    ])
    def test_errors(self, arg, reply):
        with pytest.raises(CommandError) as e:
            parse_mail(arg)
        assert e.value.reply == reply

    def test_long_envid_is_taken(self):
        assert len(parse_mail("FROM:<a@b> ENVID=" + "x" * 5000).envid) == 5000

    def test_eight_bit_domain_with_smtputf8(self):
        assert parse_mail("FROM:<a@\u00e9.example> SMTPUTF8").sender == "a@\u00e9.example"

    def test_smtputf8_refused_when_disabled(self):
        with pytest.raises(CommandError) as e:
            parse_mail("FROM:<a@b> SMTPUTF8", smtputf8=False)
        assert e.value.reply == replies.ERR_SMTPUTF8_DISABLED


class TestRcpt:
    def test_plain_recipient(self):
        assert parse_rcpt("TO:<b@example.org>").address == "b@example.org"

    def test_postmaster_without_domain(self):
        assert parse_rcpt("TO:<postmaster>").address == "postmaster"

    def test_dsn_parameters(self):
        r = parse_rcpt("TO:<b@x> NOTIFY=success,failure ORCPT=rfc822;b@x")
        assert (r.notify, r.orcpt) == ("SUCCESS,FAILURE", "rfc822;b@x")

    def test_notify_never(self):
        assert parse_rcpt("TO:<b@x> NOTIFY=NEVER").notify == "NEVER"

    @pytest.mark.parametrize("arg, reply", [
        ("", replies.ERR_SYNTAX_RCPT),
        ("FROM:<b@x>", replies.ERR_SYNTAX_RCPT),
        ("TO:<>", replies.ERR_BAD_RECIPIENT),
        ("TO:<b@x> NOTIFY=NEVER,SUCCESS", replies.ERR_BAD_NOTIFY),
        ("TO:<b@x> NOTIFY=SOMETIMES", replies.ERR_BAD_NOTIFY),
        ("TO:<b@x> ORCPT=b@x", replies.ERR_BAD_ORCPT),
        ("TO:<b@x> SIZE=10", "555 5.5.4 Unsupported option: SIZE=10"),
    ])
    def test_errors(self, arg, reply):
        with pytest.raises(CommandError) as e:
            parse_rcpt(arg)
        assert e.value.reply == reply
