"""Address verification end to end: smtpd's reject_unverified_recipient, the
verify service, its probes through cleanup, qmgr and virtual, and the cache.

The virtual domain `localhost` knows only joe; smtpd does not look users
up itself (smtpd_reject_unlisted_recipient = no), so what it knows about a
recipient comes from the probe: a message from double-bounce@mx.example.com
that virtual only judges (`status=deliverable` / `undeliverable`) and that
qmgr then removes. A second smtpd (its own port) polls only once, so it
always sees a new address still in progress.

Probes take the address_verify_* routes: mail for the relay domain
backend.example goes to discard (relay_transport), but its probes go, by
address_verify_transport_maps, to a scripted SMTP server on loopback
(tests/support/smtpscript.py) that knows ok@backend.example only; the smtp client
in verify mode stops after RCPT.
"""

from __future__ import annotations

import re
import smtplib
import sqlite3

import pytest

from tests.support.instance import ROOT, Instance, free_port
from tests.support.smtpscript import ScriptServer

pytestmark = pytest.mark.skipif(
    not all((ROOT / "libexec" / name).exists()
            for name in ("verify", "virtual", "smtp", "discard")),
    reason="needs the verify, virtual, smtp and discard services")

SENDER = "sender@example.org"
SETTINGS = {
    "myhostname": "mx.example.com",
    "virtual_mailbox_maps": "inline:{ joe@localhost=localhost/joe/ }",
    "smtpd_recipient_restrictions": "reject_unverified_recipient",
    "smtpd_reject_unlisted_recipient": "no",
    "address_verify_poll_delay": "1s",
    # Generous: an answer ends the polling at once, so this only bounds a slow machine.
    "address_verify_poll_count": "20",
}
UNKNOWN_USER = 'unknown user: "nobody@localhost"'
BACKEND_UNKNOWN = "550 5.1.1 <nobody@backend.example>: Recipient address rejected: User unknown"
NORMAL_ROUTE = "normal mail for backend.example"


@pytest.fixture(scope="module")
def backend():
    """The server that knows backend.example's users: it refuses nobody@."""
    with ScriptServer(rcpt={"nobody@backend.example": BACKEND_UNKNOWN}) as server:
        yield server


@pytest.fixture(scope="module")
def inst(tmp_path_factory, backend):
    port = free_port()
    extra = f"127.0.0.1:{port} inet n - n - - smtpd -o address_verify_poll_count=1\n"
    settings = dict(SETTINGS, relay_domains="backend.example",
                    relay_transport=f"discard:{NORMAL_ROUTE}",
                    address_verify_transport_maps="inline:{ "
                    f"backend.example=smtp:[127.0.0.1]:{backend.port} }}")
    with Instance(tmp_path_factory.mktemp("verify"), main_cf=settings,
                  master_cf_extra=extra) as instance:
        instance.once_port = port
        instance.wait_for_port(port)
        yield instance


def rcpt(port: int, recipient: str) -> tuple[int, str]:
    """rcpt - the reply to RCPT TO:<RECIPIENT> in a new session."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("client.example")
        smtp.mail(SENDER)
        code, text = smtp.rcpt(recipient)
        return code, text.decode()


def cache_entry(inst: Instance, address: str) -> tuple | None:
    """cache_entry - (status, probed, updated, text) in the verify cache file."""
    path = inst.queue_dir / "data" / "verify_cache.sqlite"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT status, probed, updated, text FROM entries "
                          "WHERE address = ?", (address,)).fetchone()


def test_known_mailbox_is_accepted_after_the_probe(inst):
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as smtp:
        smtp.ehlo("client.example")
        smtp.mail(SENDER)
        assert smtp.rcpt("joe@localhost") == (250, b"2.1.5 Ok")
        code, _ = smtp.data(b"Subject: verified\r\n\r\ntoken-verified-joe\r\n")
        assert code == 250

    probe = inst.wait_for_log(r"qmgr\[\d+\]: (\w+): from=<double-bounce@mx\.example\.com>, "
                              r"size=\d+, nrcpt=1 \(queue active\)").group(1)
    inst.wait_for_log(rf"virtual\[\d+\]: {probe}: to=<joe@localhost>, relay=virtual, .*"
                      r"dsn=2\.0\.0, status=deliverable \(delivers to maildir\)")
    inst.wait_for_log(rf"{probe}: removed")
    inst.wait_for_log(r"to=<joe@localhost>, relay=virtual, .*status=sent \(delivered to maildir\)")
    # Only the real message reached joe's Maildir, never the probe.
    [message] = inst.maildir_messages(inst.mailbox_dir / "localhost" / "joe")
    assert b"token-verified-joe" in message
    assert cache_entry(inst, "joe@localhost")[0] == "OK"


def test_unknown_address_is_refused_with_the_probes_reason_then_from_the_cache(inst):
    reply = "4.1.1 <nobody@localhost>: Recipient address rejected: unverified address: " \
        + UNKNOWN_USER
    assert rcpt(inst.smtp_port, "nobody@localhost") == (450, reply)
    inst.wait_for_log(r"smtpd\[\d+\]: " + re.escape(
        f"NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 450 {reply}; "
        f"from=<{SENDER}> to=<nobody@localhost> proto=ESMTP helo=<client.example>"))
    probe = inst.wait_for_log(r"virtual\[\d+\]: (\w+): to=<nobody@localhost>, relay=virtual, "
                              r".*dsn=5\.1\.1, status=undeliverable \(" + UNKNOWN_USER
                              + r"\)").group(1)
    inst.wait_for_log(rf"{probe}: removed")

    # The second time the cache answers; no probe is sent (a probe would be
    # marked in flight before the answer was given).
    assert rcpt(inst.smtp_port, "nobody@localhost") == (450, reply)
    status, probed, updated, text = cache_entry(inst, "nobody@localhost")
    assert (status, probed, text) == ("BOUNCE", 0, UNKNOWN_USER) and updated > 0
    assert inst.log_text().count("to=<nobody@localhost>, relay=virtual") == 1

    # The probe bounced nowhere: no notice, no bounce log.
    log = inst.log_text()
    assert "non-delivery notification" not in log
    assert not any(p.is_file() for p in (inst.queue_dir / "bounce").rglob("*"))
    assert not any(p.is_file() for p in (inst.queue_dir / "trace").rglob("*"))


def test_new_address_is_in_progress_while_the_probe_runs(inst):
    assert rcpt(inst.once_port, "new@localhost") == (
        450, "4.1.1 <new@localhost>: Recipient address rejected: unverified address: "
             "Address verification in progress")
    # The probe finishes anyway and its verdict is kept for the next client.
    inst.wait_for_log(r"to=<new@localhost>, relay=virtual, .*status=undeliverable")
    assert rcpt(inst.once_port, "new@localhost") == (
        450, "4.1.1 <new@localhost>: Recipient address rejected: unverified address: "
             'unknown user: "new@localhost"')


def test_probes_take_the_address_verify_routes(inst, backend):
    relay = re.escape(f"127.0.0.1[127.0.0.1]:{backend.port}")
    refused = f"host 127.0.0.1[127.0.0.1] said: {BACKEND_UNKNOWN} (in reply to RCPT TO command)"
    with smtplib.SMTP("127.0.0.1", inst.smtp_port, timeout=60) as smtp:
        smtp.ehlo("client.example")
        smtp.mail(SENDER)
        # Accepted once the backend said 250 to the probe.
        assert smtp.rcpt("ok@backend.example") == (250, b"2.1.5 Ok")
        code, text = smtp.rcpt("nobody@backend.example")
        assert (code, " ".join(text.decode().split())) == (
            450, "4.1.1 <nobody@backend.example>: Recipient address rejected: "
                 f"unverified address: {refused}")
        code, _ = smtp.data(b"Subject: routed\r\n\r\ntoken-backend\r\n")
        assert code == 250

    inst.wait_for_log(rf"smtp\[\d+\]: \w+: to=<ok@backend\.example>, relay={relay}, "
                      r".*status=deliverable \(250 2\.1\.5 Ok\)")
    inst.wait_for_log(rf"smtp\[\d+\]: \w+: to=<nobody@backend\.example>, relay={relay}, "
                      r".*dsn=5\.1\.1, status=undeliverable \(host 127\.0\.0\.1")
    # The message itself went the normal way: relay_transport.
    inst.wait_for_log(r"discard\[\d+\]: \w+: to=<ok@backend\.example>, relay=none, "
                      rf".*status=sent \({NORMAL_ROUTE}\)")
    # The backend saw the probes' envelopes, never any content.
    mail = [c for c in backend.commands if c.startswith("MAIL")]
    assert mail and all(c.startswith("MAIL FROM:<double-bounce@mx.example.com>") for c in mail)
    assert sorted(c.split()[1] for c in backend.commands if c.startswith("RCPT")) == \
        ["TO:<nobody@backend.example>", "TO:<ok@backend.example>"]
    assert "DATA" not in backend.commands and backend.messages == []
    assert cache_entry(inst, "ok@backend.example")[0] == "OK"
