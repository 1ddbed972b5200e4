"""anvil and smtpd's client limits: they cut in at the configured counts and
reset after anvil_rate_time_unit; anvil logs its statistics when it ends."""

import smtplib
import time

import pytest

from tests.support.instance import Instance


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with Instance(tmp_path_factory.mktemp("anvil"), main_cf={
            "myhostname": "mx.example.com", "mydestination": "$myhostname, localhost",
            "smtpd_client_event_limit_exceptions": "",
            "smtpd_client_connection_count_limit": "3",
            "smtpd_client_message_rate_limit": "2",
            "anvil_rate_time_unit": "2s"}) as inst:
        yield inst


def test_connection_count_limit(inst):
    open_ = [smtplib.SMTP("127.0.0.1", inst.smtp_port) for _ in range(3)]
    with pytest.raises(smtplib.SMTPConnectError) as e:
        smtplib.SMTP("127.0.0.1", inst.smtp_port)
    assert e.value.smtp_code == 421
    assert e.value.smtp_error == b"4.7.0 mx.example.com Error: too many connections from 127.0.0.1"
    inst.wait_for_log(r"warning: Connection concurrency limit exceeded: 4 from "
                      r"localhost\[127\.0\.0\.1\] for service ")
    for s in open_:
        s.quit()


def test_a_closed_connection_is_no_longer_counted(inst):
    """disconnect is one-way: anvil hears it soon after, not before the client's
    next connection necessarily, so the client retries for a while. Four rounds
    of three connections each get in: closed ones stop counting."""
    for _ in range(4):
        _open_three_and_quit(inst, deadline=time.monotonic() + 20)


def _open_three_and_quit(inst, deadline: float) -> None:
    while True:
        sessions = []
        try:
            for _ in range(3):
                sessions.append(smtplib.SMTP("127.0.0.1", inst.smtp_port))
            return
        except smtplib.SMTPConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            for s in sessions:
                s.quit()


def test_message_rate_limit_and_reset(inst):
    time.sleep(2)       # a fresh time unit
    s = smtplib.SMTP("127.0.0.1", inst.smtp_port)
    s.ehlo("client.example")
    for _ in range(2):
        assert s.docmd("MAIL", "FROM:<a@b.example>")[0] == 250
        s.rset()
    assert s.docmd("MAIL", "FROM:<a@b.example>") == \
        (450, b"4.7.1 Error: too many messages from 127.0.0.1")
    time.sleep(2.1)
    assert s.docmd("MAIL", "FROM:<a@b.example>")[0] == 250
    s.quit()


def test_statistics_at_exit(inst):
    inst.stop()
    inst.wait_for_log(r"postfix/anvil\[\d+\]: statistics: max connection count \d+ "
                      r"for \(.*:127\.0\.0\.1\) at ")
