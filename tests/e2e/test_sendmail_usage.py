"""sendmail's usage errors beside Debian's sendmail: the same standard error
and exit status for each command line (the mail system need not run: none
of these reaches the queue, except the warnings' cases, which queue mail).

The user's name and uid appear in Postfix's text (`root(0): …`), so both
run as the same user.
"""

from __future__ import annotations

import pytest

from tests.support.instance import Instance
from tests.support.parity import postfix

pytestmark = pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "-")

MESSAGE = b"Subject: usage\n\nbody\n"
# (argv, Postfix's exit status): the text must match too.
CASES = [
    (["-t"], 75),                       # No recipient addresses found in message header
    ([], 75),                           # Recipient addresses must be specified …
    (["-bv"], 75),
    (["-Z", "x@example.net"], 75),      # invalid option, usage line
    (["-tZ"], 75),
    (["-f"], 75),                       # option requires an argument
    (["-V"], 75),
    (["-qfoo"], 75),                    # -qf is not implemented
    (["-qx"], 75),
    (["-q5m"], 0),                      # a daemon's interval: nothing to do
    (["-bz"], 75),                      # unsupported: -bz
    (["-B", "bogus", "x@example.net"], 75),
    (["-N", "bogus", "x@example.net"], 0),        # warnings, then queued
    (["-N", "never,success", "x@example.net"], 0),
    (["-R", "bogus", "x@example.net"], 0),
]
SETTINGS = {"myhostname": "mx.example.com", "mydomain": "example.com"}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    base = tmp_path_factory.mktemp("usage")
    with postfix.DebianPostfix(base / "postfix", SETTINGS) as pf, \
            Instance(base / "pymaster", main_cf=SETTINGS) as inst:
        yield pf, inst


@pytest.mark.parametrize("argv,status", CASES, ids=[" ".join(a) or "none" for a, _ in CASES])
def test_usage_parity(both, argv, status):
    pf, inst = both
    theirs = pf.command("sendmail", *argv, input=MESSAGE)
    ours = inst.command("sendmail", *argv, input=MESSAGE)
    assert theirs.returncode == status, theirs.stderr
    assert (ours.returncode, ours.stderr.decode()) == (theirs.returncode, theirs.stderr.decode())
