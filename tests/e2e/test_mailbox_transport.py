"""local(8) handing mail to the lmtp agent: mailbox_transport and fallback_transport.

A real instance, a real local agent and a real lmtp client, delivering to a
scripted LMTP server (tests/support/smtpscript.py) on a free loopback port. The
lmtp agent logs the delivery's status line; local logs only that it passed
the recipient on, and qmgr sees the lmtp agent's outcome as local's.

mailbox_transport is tested for a real system account (a temporary one,
which needs root): it takes precedence over that account's own mailbox.
"""

import re

import pytest

from tests.support.accounts import account_under, can_add_accounts
from tests.support.instance import Instance, submit_to_cleanup
from tests.support.smtpscript import ScriptServer

DOMAIN = "mx.example.com"
needs_root = pytest.mark.skipif(not can_add_accounts(),
                                reason="delivery to system accounts needs root and useradd")


@pytest.fixture
def account(tmp_path):
    """account - a temporary system user whose home is under tmp_path."""
    with account_under(tmp_path, "pm") as user:
        yield user


def submit(inst, rcpts, sender="a@example.org") -> str:
    return submit_to_cleanup(inst, rcpts, b"Subject: local test\n\nhello\n", sender)


def lmtp_instance(tmp_path, **main_cf) -> Instance:
    settings = {"myhostname": DOMAIN, "mydestination": DOMAIN, "alias_maps": "",
                "recipient_delimiter": "+"}
    settings.update(main_cf)
    return Instance(tmp_path, main_cf=settings)


def lmtp_line(rcpt: str, status: str) -> str:
    """lmtp_line - the lmtp agent's status line for RCPT, as a regex."""
    return (rf"postfix/lmtp\[\d+\]: (\w+): to=<{re.escape(rcpt)}>, relay=[^,]*127\.0\.0\.1"
            rf"[^,]*, .*status={status} ")


def local_status_lines(inst: Instance) -> list[str]:
    return re.findall(r"postfix/local\[\d+\]: .*status=.*", inst.log_text())


@needs_root
class TestMailboxTransport:
    def test_accepted_by_lmtp_instead_of_the_users_mailbox(self, tmp_path, account):
        rcpt = f"{account.pw_name}@{DOMAIN}"
        with ScriptServer(lmtp=True) as server, \
                lmtp_instance(tmp_path, home_mailbox="Maildir/",
                              mailbox_transport=f"lmtp:inet:127.0.0.1:{server.port}") as inst:
            queue_id = submit(inst, [rcpt])
            inst.wait_for_log(rf"postfix/local\[\d+\]: {queue_id}: passing <{re.escape(rcpt)}> "
                              r"to transport=lmtp")
            line = inst.wait_for_log(lmtp_line(rcpt, "sent"))
            assert line.group(1) == queue_id
            inst.wait_for_log(rf"{queue_id}: removed")
            assert local_status_lines(inst) == []
        assert server.commands[0].startswith("LHLO ")
        [message] = server.messages
        assert message["accepted"] == [rcpt.lower()]
        assert b"Subject: local test" in message["data"]
        assert not (tmp_path / "home" / account.pw_name / "Maildir").exists()

    def test_lmtp_deferral_and_bounce_are_the_recipients_outcome(self, tmp_path, account):
        busy = f"{account.pw_name}+busy@{DOMAIN}"
        gone = f"{account.pw_name}+gone@{DOMAIN}"
        replies = {busy: "452 4.2.2 mailbox full", gone: "550 5.1.1 no such mailbox"}
        with ScriptServer(lmtp=True, lmtp_replies=replies) as server, \
                lmtp_instance(tmp_path,
                              mailbox_transport=f"lmtp:inet:127.0.0.1:{server.port}") as inst:
            # The null sender: the bounce needs no notice delivered anywhere.
            queue_id = submit(inst, [busy, gone], sender="")
            inst.wait_for_log(lmtp_line(busy, "deferred") + r"\(host .*452 4\.2\.2 mailbox full")
            inst.wait_for_log(lmtp_line(gone, "bounced") + r"\(host .*550 5\.1\.1 no such mailbox")
            # The deferred recipient keeps the message queued; the bounced
            # one is done and is not tried again.
            inst.wait_for_log(rf"{queue_id}: .*status=deferred")
            queued = inst.command("mailq").stdout.decode()
            assert queue_id in queued and busy in queued and gone not in queued
            assert local_status_lines(inst) == []
        assert len(server.messages) == 2


class TestFallbackTransport:
    def test_unknown_local_user_goes_to_lmtp(self, tmp_path):
        rcpt = f"nosuch-pm-user@{DOMAIN}"
        with ScriptServer(lmtp=True) as server, \
                lmtp_instance(tmp_path, luser_relay="catchall@example.org",
                              fallback_transport=f"lmtp:inet:127.0.0.1:{server.port}") as inst:
            queue_id = submit(inst, [rcpt])
            inst.wait_for_log(rf"{queue_id}: passing <{re.escape(rcpt)}> to transport=lmtp")
            inst.wait_for_log(lmtp_line(rcpt, "sent"))
            inst.wait_for_log(rf"{queue_id}: removed")
            assert local_status_lines(inst) == []
        assert [m["accepted"] for m in server.messages] == [[rcpt]]
