"""Shared pytest set-up: the project root on sys.path, so tests import
`pymaster`, `services` and `tests.support.instance` from the checkout."""

import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import pytest  # noqa: E402

from pymaster.util import log  # noqa: E402


@pytest.fixture
def short_tmp_path(tmp_path_factory) -> Path:
    """short_tmp_path - a fresh directory for a spool whose unix sockets
    must fit sun_path (107 bytes): tmp_path, named for the test (and the
    xdist worker), can leave too little room for private/NAME, let alone a
    worker's endpoint `private/.PID-N` beside it."""
    return Path(tempfile.mkdtemp(prefix="s", dir=tmp_path_factory.getbasetemp()))


@pytest.fixture(autouse=True)
def _restore_logging():
    """Each test starts with the logging set-up the one before it found:
    a test that points pymaster.util.log at a file must not redirect later tests."""
    saved = dict(vars(log._state))
    yield
    for name in list(vars(log._state)):
        if name not in saved:
            delattr(log._state, name)
    for name, value in saved.items():
        setattr(log._state, name, value)


@pytest.fixture(autouse=True)
def _python_sigpipe():
    """Each test runs with the interpreter's SIGPIPE disposition (ignored).

    Importing pymaster.commands gives a command C's default (a closed pipe
    ends it quietly); the test process imports it too, and a test that then
    writes to a closed socket would kill the whole test worker instead of
    seeing EPIPE."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    yield


def pytest_terminal_summary(terminalreporter):
    """The fault suite's counts (tests/e2e/test_faults.py) in every run's
    summary, captured output or not, from xdist workers too."""
    lines = [value for reports in terminalreporter.stats.values() for r in reports
             for name, value in getattr(r, "user_properties", ())
             if name == "fault suite" and getattr(r, "when", "call") == "call"]
    if lines:
        terminalreporter.section("fault suite")
        for line in lines:
            terminalreporter.write_line(line)
