"""`make bench` section: mail relayed through the smtp client to smtp-sink.

smtp-source sends 5,000 one-kilobyte messages over 20 sessions to an
instance whose relayhost is Postfix's smtp-sink on 127.0.0.2 (the
connection cache on), and the figures are messages delivered per second
and CPU seconds per 1,000 messages of the whole instance. Where Debian's
Postfix is installed (and we are root), the same load goes through Postfix
in the same run, and the ratio is printed. Nothing here asserts a figure.

Interface: run(workdir: Path, messages=5000, sessions=20) -> list[str]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from bench.run import (DEBIAN_POSTFIX, SMTP_SOURCE, PostfixInstance, _format_smtp,
                       _wait_port, log_count, run_smtp)
from tests.support.instance import Instance, free_port

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SINK_HOST = "127.0.0.2"
RCPT = "user@relayed.example"


def relay_settings(sink_port: int) -> dict[str, str]:
    return {
        "myhostname": "bench.example.com",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[{SINK_HOST}]:{sink_port}",
        "smtpd_recipient_restrictions": "permit_mynetworks, reject",
        "smtp_connection_cache_on_demand": "yes",
        "default_destination_concurrency_limit": "20",
        "message_size_limit": "10240000",
    }


def run(workdir: Path, messages: int = 5000, sessions: int = 20) -> list[str]:
    """run - the smtp client figures for pymaster, and Postfix where installed."""
    if not SMTP_SOURCE or not os.path.exists(SMTP_SINK):
        return ["smtp_client: skipped (smtp-source/smtp-sink from Debian's postfix "
                "package are not installed)"]
    args = argparse.Namespace(messages=messages, sessions=sessions)
    sink_port = free_port()
    sink = _start_sink(sink_port)
    try:
        results = [_pymaster(workdir / "pymaster", sink_port, args)]
        if os.path.exists(DEBIAN_POSTFIX) and os.geteuid() == 0:
            results.append(_postfix(workdir / "postfix", sink_port, args))
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    return _format_smtp("smtp-sink via relayhost (smtp client, connection cache on)",
                        args, results)


def _start_sink(port: int) -> subprocess.Popen:
    user = ["-u", "root"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([SMTP_SINK, *user, f"{SINK_HOST}:{port}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_port_on(SINK_HOST, port)
    return proc


def _wait_port_on(host: str, port: int) -> None:
    import socket
    import time
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def _pymaster(tmp: Path, sink_port: int, args) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    with Instance(tmp, main_cf=relay_settings(sink_port)) as inst:
        count = lambda: log_count(inst.maillog, "status=sent")  # noqa: E731
        return run_smtp("pymaster", inst, inst.smtp_port, args, RCPT, count)


def _postfix(tmp: Path, sink_port: int, args) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    pf = PostfixInstance(tmp, relay_settings(sink_port))
    pf.run("start")
    try:
        _wait_port(pf.port)
        count = lambda: log_count(pf.maillog, "status=sent")  # noqa: E731
        return run_smtp("postfix", pf, pf.port, args, RCPT, count)
    finally:
        pf.run("stop")
