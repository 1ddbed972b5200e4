"""sendmail -bs fed by a script: LF-only lines queue the message, and the
exit status is 0 only when no message was left unqueued.

Debian's sendmail -bs is run on the same dialogues: both queue LF-only
input and exit 0. Where a message is lost (input ends inside DATA, the
session quits with a transaction open) Postfix exits 0 in silence;
pymaster exits 75 with the reason on standard error, on purpose.
"""

from __future__ import annotations

import pytest

from tests.support.instance import Instance
from tests.support.parity import postfix

LF_DIALOGUE = (b"HELO local.example\nMAIL FROM:<me@example.com>\nRCPT TO:<joe@example.net>\n"
               b"DATA\nSubject: lf only\n\n..dotted\nbody\n.\nQUIT\n")
# Dialogues that lose their message: Postfix exits 0, pymaster 75.
LOST = {
    "eof in data": b"HELO x\nMAIL FROM:<me@example.com>\nRCPT TO:<joe@example.net>\nDATA\n"
                   b"Subject: x\n\nbody\n",
    "eof after mail": b"HELO x\nMAIL FROM:<me@example.com>\n",
    "quit with transaction open": b"HELO x\nMAIL FROM:<me@example.com>\nRCPT TO:<bad>\nQUIT\n",
}
SETTINGS = {"myhostname": "mx.example.com", "mydomain": "example.com"}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with Instance(tmp_path_factory.mktemp("bs"), main_cf=SETTINGS) as instance:
        yield instance


def test_lf_only_lines_are_queued(inst):
    done = inst.command("sendmail", "-bs", input=LF_DIALOGUE)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.decode().splitlines()
    assert any(r.startswith("250 2.0.0 Ok: queued as ") for r in replies), replies
    assert replies[-1].startswith("221 ")
    inst.wait_for_log(r"postfix/pickup\[\d+\]: \w+: uid=\d+ from=<me@example\.com>")


def test_quit_alone_exits_0(inst):
    done = inst.command("sendmail", "-bs", input=b"QUIT\n")
    assert done.returncode == 0 and done.stdout.decode().splitlines()[-1].startswith("221 ")


@pytest.mark.parametrize("name", sorted(LOST))
def test_a_lost_message_is_never_silent(inst, name):
    done = inst.command("sendmail", "-bs", input=LOST[name])
    assert done.returncode == 75, done.stderr
    assert done.stderr.startswith(b"sendmail: fatal: ") and b"not queued" in done.stderr


@pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")
def test_parity_lf_only_lines_queue_in_both(tmp_path):
    with postfix.DebianPostfix(tmp_path / "postfix", SETTINGS) as pf:
        theirs = pf.command("sendmail", "-bs", input=LF_DIALOGUE)
        quit_only = pf.command("sendmail", "-bs", input=b"QUIT\n")
    assert theirs.returncode == 0 and b"250 2.0.0 Ok: queued as " in theirs.stdout
    assert quit_only.returncode == 0
    with Instance(tmp_path / "pymaster", main_cf=SETTINGS) as inst:
        ours = inst.command("sendmail", "-bs", input=LF_DIALOGUE)
    assert ours.returncode == theirs.returncode
    assert [r[:4] for r in ours.stdout.decode().splitlines()] == \
        [r[:4] for r in theirs.stdout.decode().splitlines()]
