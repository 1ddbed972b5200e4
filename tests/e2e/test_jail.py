"""End to end: every service in the chroot jail where Debian's master.cf puts it.

Instance A runs the shipped master.cf with the chroot column set to `y` for
the services Debian's master.cf chroots, as root: each must import and open
everything it needs in its pre_jail step, because a module imported or a
file opened after the chroot fails. A's mail goes through smtpd, cleanup
and qmgr to discard, to error (whose bounce goes through bounce and
cleanup), and over STARTTLS through smtp to instance B; postqueue -p asks
showq. Only root can chroot, so the module skips elsewhere.
"""

from __future__ import annotations

import re
import smtplib

import pytest

from tests.support.instance import Instance, free_port, is_root
from tests.e2e.test_smtp_tls import listener, run_ok, start_both, start_server

pytestmark = pytest.mark.skipif(not is_root(), reason="chroot needs root")

# The services Debian's master.cf runs chrooted (its fifth column is y).
DEBIAN_CHROOTED = {"smtpd", "pickup", "cleanup", "qmgr", "bounce", "defer", "trace",
                   "verify", "smtp", "relay", "showq", "error", "retry", "discard",
                   "anvil", "lmtp"}
ROUTES = {"discard.test": "discard:thrown away", "error.test": "error:5.1.1 no such user",
          "relay.test": "smtp:[127.0.0.2]:{port}"}


def chrooted(master_cf: str) -> str:
    """chrooted - MASTER_CF with chroot = y for every DEBIAN_CHROOTED command."""
    out = []
    for line in master_cf.splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#") \
                and fields[7] in DEBIAN_CHROOTED:
            fields[4] = "y"
            line = " ".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jail")
    port = free_port()
    b = start_server(tmp / "b", {"tls": port}, listener("tls", port), ["relay.test"])
    start_both(b)
    try:
        a = Instance(tmp / "a", main_cf={
            "myhostname": "a.test", "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1", "smtp_tls_security_level": "may",
            "smtp_tls_loglevel": "1", "smtp_tls_CAfile": str(b.ca),
            "transport_maps": f"texthash:{tmp}/a/etc/transport",
            # error.test must reach the error agent, not be refused at RCPT.
            "smtpd_reject_unlisted_recipient": "no",
        }, start=False)
        a._master_cf = chrooted(a._shipped_master_cf())
        a.write_config()
        (a.config_dir / "transport").write_text(
            "".join(f"{d} {r.format(port=port)}\n" for d, r in ROUTES.items()))
        a.start()
        try:
            with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=30) as s:
                for domain in ROUTES:
                    s.sendmail("sender@a.test", [f"user@{domain}"],
                               f"Subject: {domain}\n\nto {domain}\n".encode())
            yield a, b
        finally:
            a.stop()
    finally:
        b.stop()


def status(a: Instance, domain: str, agent: str, what: str) -> str:
    return a.wait_for_log(rf"postfix/(?:\w+/)?{agent}\[\d+\]: \w+: to=<user@{re.escape(domain)}>"
                          rf", .*status={what} .*$").group(0)


class TestJailedServices:
    def test_the_services_run_chrooted(self, pair):
        a, _ = pair
        text = a.log_text()
        assert "fatal" not in text and "panic" not in text, text

    def test_discard_delivers_from_the_jail(self, pair):
        a, _ = pair
        assert status(a, "discard.test", "discard", "sent").endswith("(thrown away)")

    def test_error_bounces_and_bounce_notifies_the_sender(self, pair):
        a, _ = pair
        assert "dsn=5.1.1" in status(a, "error.test", "error", "bounced")
        a.wait_for_log(r"postfix/bounce\[\d+\]: \w+: sender non-delivery notification: \w+")

    def test_smtp_relays_over_tls_from_the_jail(self, pair):
        a, b = pair
        assert "status=sent (250 " in status(a, "relay.test", "smtp", "sent")
        a.wait_for_log(r"postfix/smtp\[\d+\]: \w+ TLS connection established to "
                       r"\S*\[127\.0\.0\.2\]")
        assert b.maildir_messages(b.mailbox_dir / "relayed", count=1)

    def test_showq_lists_the_queue_from_the_jail(self, pair):
        a, _ = pair
        status(a, "relay.test", "smtp", "sent")
        done = a.command("postqueue", "-p")
        assert done.returncode == 0, done.stderr.decode()
        assert b"Mail queue is empty" in done.stdout or b"Queue ID" in done.stdout
