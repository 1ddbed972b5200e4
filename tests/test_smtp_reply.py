"""services.smtp.reply: reply lines, DSN codes and the reasons as Postfix words them."""

import pytest

from services.smtp.reply import Reply, ReplyError, dsn_of, refused, said


def test_a_multiline_reply_and_its_keywords():
    r = Reply(250, ["250-mx.example.com", "250-PIPELINING", "250-SIZE 10240000",
                    "250 8BITMIME"])
    assert r.keywords() == {"PIPELINING": "", "SIZE": "10240000", "8BITMIME": ""}
    assert r.kind == "ok"


@pytest.mark.parametrize("line, parsed", [
    ("250-PIPELINING", (250, False, "PIPELINING")),
    ("250 OK\r\n", (250, True, "OK")),
    ("421", (421, True, "")),
])
def test_reply_lines(line, parsed):
    assert Reply.parse_line(line) == parsed


@pytest.mark.parametrize("line", ["25", "hello", "2500 x", "abc def"])
def test_malformed_reply_lines(line):
    with pytest.raises(ReplyError):
        Reply.parse_line(line)


@pytest.mark.parametrize("code, text, dsn", [
    (550, "5.1.1 <u@d>: unknown user", "5.1.1"),
    (450, "4.7.1 greylisted", "4.7.1"),
    (550, "unknown user", "5.0.0"),
    (451, "5.1.1 class does not match the code", "4.0.0"),
    (250, "2.0.0 Ok: queued as X", "2.0.0"),
    (250, "Ok", "2.0.0"),
])
def test_dsn_codes(code, text, dsn):
    assert dsn_of(code, text) == dsn


def test_reply_kinds():
    assert [Reply(c, [f"{c} x"]).kind for c in (250, 354, 421, 452, 550)] == \
        ["ok", "ok", "soft", "soft", "hard"]


def test_reasons_quote_the_whole_reply_on_one_line():
    r = Reply(550, ["550-5.1.1 <u@d>: unknown user", "550 5.1.1 see the docs"])
    assert said("mx.example.com[192.0.2.1]", r, "RCPT TO") == (
        "host mx.example.com[192.0.2.1] said: 550-5.1.1 <u@d>: unknown user "
        "550 5.1.1 see the docs (in reply to RCPT TO command)")
    assert refused("mx[192.0.2.1]", Reply(554, ["554 go away"])) == \
        "host mx[192.0.2.1] refused to talk to me: 554 go away"
