"""Debian's smtp-sink (from the postfix package) as a next hop for relay tests.

Interface:
    SMTP_SINK                      the program's path
    smtp_sink(host) -> context manager yielding the port smtp-sink accepts on;
        pytest.skip when it is not installed
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.support.instance import free_port, is_root, listening
from tests.support.wait import wait_until

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


@contextmanager
def smtp_sink(host: str = "127.0.0.2") -> Iterator[int]:
    """smtp_sink - smtp-sink on HOST and a free port, accepting everything."""
    if not os.path.exists(SMTP_SINK):
        pytest.skip("smtp-sink (Debian's postfix package) is not installed")
    port = free_port()
    args = [SMTP_SINK, *(["-u", "root"] if is_root() else []), f"{host}:{port}", "100"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(host, port), what=f"smtp-sink on {host}:{port}")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
