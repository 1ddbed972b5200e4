"""Every program master.cf names exists and does its job: the in-tree
configuration starts without "not found or not executable", and flush,
trivial-rewrite and tlsmgr answer over their endpoints, scache over its
stream socket."""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import pytest

from pymaster.mail.scache_client import ScacheClient
from pymaster.util import ipc
from tests.support.instance import ROOT, Instance, free_port, is_root
from tests.support.wait import wait_until

MISSING = "not found or not executable"


def missing_lines(text: str) -> list[str]:
    """missing_lines - the warnings about missing programs; proxymap is
    another change's, and is forgiven until libexec/proxymap exists."""
    pending = set() if (ROOT / "libexec" / "proxymap").exists() else {"/libexec/proxymap:"}
    return [line for line in text.splitlines()
            if MISSING in line and not any(p in line for p in pending)]


def test_in_tree_master_cf_starts_and_checks_clean(tmp_path):
    with Instance(tmp_path) as inst:
        inst.wait_for_log(r"daemon started|starting the Postfix mail system|master")
        done = inst.postfix("check")
        assert done.returncode == 0
        assert missing_lines(done.stdout.decode() + done.stderr.decode()) == []
        assert inst.postfix("reload").returncode == 0
        inst.wait_for_log(r"reload -- version")
        assert missing_lines(inst.log_text()) == []
    for program in ("flush", "scache", "tlsmgr", "trivial-rewrite"):
        assert (ROOT / "libexec" / program).stat().st_mode & 0o111


def call(inst: Instance, name: str, header: dict) -> tuple[dict, list]:
    client = ipc.Client(ipc.endpoint("private", name, str(inst.queue_dir)), timeout=20)
    try:
        return client.call(header)
    finally:
        client.close()


def scache(inst: Instance) -> ScacheClient:
    """scache - a client of the instance's scache (a stream socket, not zeromq)."""
    return ScacheClient(str(inst.queue_dir / "private" / "scache"), 20)


def flush_log(inst: Instance, site: str) -> Path:
    return inst.queue_dir / "flush" / site


def test_fast_flush_by_postqueue_sendmail_and_etrn(tmp_path):
    dead = free_port()          # nothing listens: every attempt is deferred at once
    settings = {
        "relay_domains": "example.org",
        "transport_maps": f"inline:{{ example.org=smtp:[127.0.0.1]:{dead} }}",
        "minimal_backoff_time": "3600s", "maximal_backoff_time": "7200s",
        "queue_run_delay": "3600s",
    }
    with Instance(tmp_path, main_cf=settings) as inst:
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.sendmail("alice@example.com", ["bob@example.org"], b"Subject: ff\n\nhello\n")
        deferred = r"to=<bob@example\.org>, relay=none, .*status=deferred"
        m = inst.wait_for_log(r"(\w+): " + deferred)
        qid = m.group(1)
        wait_until(lambda: flush_log(inst, "example.org").exists()
                 and qid in flush_log(inst, "example.org").read_text())

        # postqueue -s: the logged message is tried again now, not in an hour.
        done = inst.command("postqueue", "-s", "example.org")
        assert done.returncode == 0, done.stderr
        inst.wait_for_log(deferred, count=2)

        # sendmail -qRsite is postqueue -s site.
        wait_until(lambda: qid in flush_log(inst, "example.org").read_text())
        assert inst.command("sendmail", "-qRexample.org").returncode == 0
        inst.wait_for_log(deferred, count=3)

        # ETRN from a client smtpd_etrn_restrictions allows (the default: any).
        wait_until(lambda: qid in flush_log(inst, "example.org").read_text())
        with smtplib.SMTP("127.0.0.1", inst.smtp_port) as s:
            s.ehlo("client.example")
            assert s.docmd("ETRN", "example.org") == (250, b"Queuing started")
            assert s.docmd("ETRN", "other.example") == \
                (459, b"<other.example>: service unavailable")
        inst.wait_for_log(deferred, count=4)

        # A destination that fast_flush_domains does not list.
        done = inst.command("postqueue", "-s", "other.example")
        assert done.returncode == 69
        assert b'fatal: Flush service is not configured for destination "other.example"' \
            in done.stderr
        done = inst.command("postqueue", "-s", "bad/site")
        assert done.returncode == 64
        assert b'Cannot flush mail queue - invalid destination: "bad/site"' in done.stderr


def test_rewrite_tlsmgr_and_scache_answer(tmp_path):
    with Instance(tmp_path, main_cf={"myorigin": "example.com",
                                     "smtp_tls_session_cache_database":
                                         "btree:$data_directory/smtp_scache"}) as inst:
        header, _ = call(inst, "rewrite", {"op": "rewrite", "rule": "local", "address": "joe"})
        assert header == {"status": "ok", "address": "joe@example.com"}
        header, _ = call(inst, "rewrite", {"op": "resolve", "address": "joe@far.example"})
        assert (header["status"], header["transport"], header["nexthop"]) == \
            ("ok", "smtp", "far.example")

        header, payload = call(inst, "tlsmgr", {"op": "seed", "size": 32})
        assert header["status"] == "ok" and len(payload[0]) == 32
        assert call(inst, "tlsmgr", {"op": "policy", "cache_type": "smtp"})[0] == \
            {"status": "ok", "cachable": True, "timeout": 3600}
        assert call(inst, "tlsmgr", {"op": "policy", "cache_type": "smtpd"})[0]["cachable"] \
            is False

        client = scache(inst)
        assert client.find_dest("smtp:far.example") is None
        assert client.available()           # it answered: not found
        client.close()
    exch = inst.queue_dir / "data" / "prng_exch"
    assert exch.stat().st_size == 1024
    assert not re.search(r"(flush|tlsmgr|scache|trivial-rewrite)\[\d+\]: (warning|fatal|panic)",
                         inst.log_text())


@pytest.mark.skipif(not is_root(), reason="the jail (chroot, mail_owner) needs root")
def test_in_debian_jail_flush_and_tlsmgr_work(tmp_path):
    """Debian's master.cf chroots flush, tlsmgr, scache and trivial-rewrite."""
    from tests.e2e.test_check import debian_instance
    inst = debian_instance(tmp_path)
    dead = free_port()
    inst.set_main_cf({"relay_domains": "example.org",
                      "transport_maps": f"inline:{{ example.org=smtp:[127.0.0.1]:{dead} }}",
                      "smtp_tls_security_level": "none",
                      "minimal_backoff_time": "3600s", "maximal_backoff_time": "7200s",
                      "queue_run_delay": "3600s"})
    assert inst.postfix("set-permissions").returncode == 0
    with inst.start():
        with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=30) as s:
            s.ehlo("client.example.com")
            s.sendmail("alice@example.com", ["bob@example.org"], b"Subject: ff\n\nhello\n")
        deferred = r"to=<bob@example\.org>, relay=none, .*status=deferred"
        qid = inst.wait_for_log(r"(\w+): " + deferred).group(1)
        wait_until(lambda: flush_log(inst, "example.org").exists()
                 and qid in flush_log(inst, "example.org").read_text())
        assert inst.command("postqueue", "-s", "example.org").returncode == 0
        inst.wait_for_log(deferred, count=2)
        header, _ = call(inst, "rewrite", {"op": "rewrite", "rule": "local", "address": "joe"})
        assert header == {"status": "ok", "address": "joe@example.com"}
        client = scache(inst)
        assert client.find_endp("x") is None and client.available()
        client.close()
        assert call(inst, "tlsmgr", {"op": "policy", "cache_type": "smtp"})[0]["cachable"]
    assert (tmp_path / "data" / "prng_exch").stat().st_size == 1024
    assert not re.search(r"(flush|tlsmgr|scache|trivial-rewrite)\[\d+\]: (warning|fatal|panic)",
                         inst.log_text()), inst.log_text()
