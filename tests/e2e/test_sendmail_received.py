"""Mail from sendmail carries `Received: by HOST (Postfix, from userid N)`,
read back with `postcat -q` beside Debian's Postfix on the same input.

The message is held by header_checks so it stays in the queue to be read.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.support.instance import Instance
from tests.support.parity import postfix
from tests.support.wait import wait_until

SETTINGS = {"myhostname": "mx.example.com", "mydomain": "example.com"}
MESSAGE = b"Subject: hold me\n\nbody\n"
RECEIVED = re.compile(r"(?m)^Received: by mx\.example\.com \(Postfix, from userid (\d+)\)\n"
                      r"\tid (\w+); (.+)$")


def held_received(mta) -> re.Match:
    """held_received - submit MESSAGE, wait until it is held, its Received: header."""
    (mta.config_dir / "hc").write_text("/^Subject: hold/ HOLD\n")
    mta.set_main_cf({"header_checks": f"regexp:{mta.config_dir / 'hc'}"})
    mta.command("postfix", "-c", str(mta.config_dir), "reload")
    done = mta.command("sendmail", "-f", "me@example.com", "joe@example.net", input=MESSAGE)
    assert done.returncode == 0, done.stderr

    def held_id() -> str:
        listing = mta.command("postqueue", "-p").stdout.decode()
        found = re.search(r"(?m)^(\w+)!", listing)
        return found.group(1) if found else ""
    queue_id = wait_until(held_id, 20, lambda: "a held message")
    text = mta.command("postcat", "-hq", queue_id).stdout.decode()
    match = RECEIVED.search(text)
    assert match, text
    assert match.group(2) == queue_id
    return match


def test_sendmail_mail_names_the_submitting_uid(tmp_path):
    with Instance(tmp_path, main_cf=SETTINGS) as inst:
        match = held_received(inst)
    assert match.group(1) == str(os.getuid())


@pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")
def test_parity_received_header_shape(tmp_path):
    with postfix.DebianPostfix(tmp_path / "postfix", SETTINGS) as pf:
        theirs = held_received(pf)
    with Instance(tmp_path / "pymaster", main_cf=SETTINGS) as inst:
        ours = held_received(inst)
    assert ours.group(1) == theirs.group(1)
    # The date: "Mon,  7 Dec 2026 14:28:22 +0000 (UTC)" in both, the zone aside.
    date = re.compile(r"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
    assert date.match(ours.group(3)) and date.match(theirs.group(3))
