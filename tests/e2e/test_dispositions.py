"""HOLD and DISCARD verdicts under concurrency: nothing leaks to delivery.

cleanup decides where a message goes before qmgr can see its file: a held
message reaches hold/ while still incomplete, a discarded one is never
queued. Many sessions at once give qmgr every chance to take a file early;
a control message sent afterwards shows that qmgr has looked at incoming/
since, so counting deliveries then is not a matter of waiting long enough.
"""

from __future__ import annotations

import re
import smtplib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.instance import Instance

SESSIONS = 8
MESSAGES_PER_SESSION = 5
TOTAL = SESSIONS * MESSAGES_PER_SESSION


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dispositions")
    inst = Instance(tmp, start=False, main_cf={
        "smtpd_recipient_restrictions":
            "check_recipient_access inline:{held@localhost=HOLD, gone@localhost=DISCARD}, "
            "permit_mynetworks, reject_unauth_destination",
    })
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


def send_from_many_sessions(inst: Instance, recipient: str) -> list[str]:
    """The replies to TOTAL messages for RECIPIENT over SESSIONS sessions at once."""
    def one_session(n: int) -> list[str]:
        replies = []
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as s:
            for k in range(MESSAGES_PER_SESSION):
                s.mail("sender@example.com")
                s.rcpt(recipient)
                code, text = s.data(f"Subject: {recipient} {n}.{k}\n\nbody\n".encode())
                replies.append(f"{code} {text.decode()}")
        return replies
    with ThreadPoolExecutor(SESSIONS) as pool:
        return [r for rs in pool.map(one_session, range(SESSIONS)) for r in rs]


def files_in(inst: Instance, queue_name: str) -> list[str]:
    return [p.name for p in (inst.queue_dir / queue_name).rglob("*") if p.is_file()]


def deliveries_after_a_control_message(inst: Instance, token: str) -> int:
    """Send one plain message; once delivered, the number of status=sent lines.

    The control messages of earlier tests (the instance is the module's)
    are in the log already: this one's line is the next of them, logged
    after the agent wrote the mailbox."""
    control = r"to=<control@localhost>.*status=sent"
    logged = len(re.findall(control, inst.log_text()))
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as s:
        s.sendmail("sender@example.com", ["control@localhost"],
                   f"Subject: {token}\n\ncontrol\n".encode())
    inst.maildir_message_with(inst.mailbox_dir / "localhost" / "control", token, timeout=60)
    inst.wait_for_log(control, count=logged + 1, timeout=60)
    return inst.log_text().count("status=sent")


def test_held_messages_all_reach_hold_and_none_is_delivered(inst):
    replies = send_from_many_sessions(inst, "held@localhost")
    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    held = {r.rsplit(" ", 1)[1] for r in replies}
    sent_before = inst.log_text().count("status=sent")
    assert deliveries_after_a_control_message(inst, "control-after-hold") == sent_before + 1
    assert held <= set(files_in(inst, "hold"))
    assert "cannot move to hold" not in inst.log_text()
    assert "to=<held@localhost>, relay=" not in inst.log_text()


def test_discarded_messages_are_accepted_and_never_queued(inst):
    replies = send_from_many_sessions(inst, "gone@localhost")
    assert all(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    sent_before = inst.log_text().count("status=sent")
    assert deliveries_after_a_control_message(inst, "control-after-discard") == sent_before + 1
    assert "to=<gone@localhost>, relay=" not in inst.log_text()
    discarded = {r.rsplit(" ", 1)[1] for r in replies}
    queued = {name for q in ("incoming", "active", "deferred", "hold") for name in files_in(inst, q)}
    assert discarded & queued == set()
