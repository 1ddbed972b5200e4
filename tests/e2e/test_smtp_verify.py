"""sendmail -bv through the smtp client: real probes, nothing delivered.

For a relayed domain the smtp client in verify mode talks to the next hop
exactly as for a delivery (here transport_maps sends relay.example to a
scripted SMTP server on loopback, tests/support/smtpscript.py) and stops after the
RCPT replies: 250 makes the recipient deliverable, 550 undeliverable with
the server's words, and a next hop that cannot be reached undeliverable
with the connection error. The trace service mails the report to the
sender's Maildir in the in-tree virtual domain `localhost`.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket

import pytest

from tests.support.dsnreport import parse, recipient_fields
from tests.support.instance import ROOT, Instance
from tests.support.smtpscript import ScriptServer

pytestmark = pytest.mark.skipif(
    not all((ROOT / "libexec" / name).exists() for name in ("bounce", "virtual", "smtp")),
    reason="needs the bounce, virtual and smtp services")

UNKNOWN = "550 5.1.1 <nobody@relay.example>: Recipient address rejected: User unknown"


@pytest.fixture(scope="module")
def server():
    with ScriptServer(rcpt={"nobody@relay.example": UNKNOWN}) as peer:
        yield peer


@pytest.fixture(scope="module")
def dead_port():
    """A loopback port held bound but never listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def inst(tmp_path_factory, server, dead_port):
    settings = {
        "myhostname": "mx.example.com",
        "relay_domains": "relay.example down.example",
        "transport_maps": f"inline:{{ {{ relay.example = smtp:[127.0.0.1]:{server.port} }}, "
                          f"{{ down.example = smtp:[127.0.0.1]:{dead_port} }} }}",
        "smtp_connect_timeout": "5s",
    }
    with Instance(tmp_path_factory.mktemp("smtp_verify"), main_cf=settings) as instance:
        yield instance


def report_for(inst: Instance, user: str) -> email.message.EmailMessage:
    [raw] = inst.maildir_messages(inst.mailbox_dir / "localhost" / user)
    report = parse(raw)
    assert report["Subject"] == "Mail Delivery Status Report"
    return report


def test_bv_probes_the_next_hop_without_delivering(inst, server):
    done = inst.command("sendmail", "-bv", "-f", "probe1@localhost",
                        "ok@relay.example", "nobody@relay.example")
    assert done.returncode == 0, done.stderr

    report = report_for(inst, "probe1")
    relay = f"127.0.0.1[127.0.0.1]:{server.port}"
    text = list(report.iter_parts())[0].get_content()
    assert f"<ok@relay.example>: delivery via {relay}: 250 2.1.5 Ok" in text
    assert (f"<nobody@relay.example>: delivery via {relay}: host 127.0.0.1[127.0.0.1] "
            f"said: {UNKNOWN} (in reply to RCPT TO command)") in " ".join(text.split())
    fields = recipient_fields(report)
    assert fields["ok@relay.example"]["Action"] == "deliverable"
    assert fields["ok@relay.example"]["Status"] == "2.1.5"
    # As Postfix reports a probe: the server that answered, and its reply.
    assert fields["ok@relay.example"]["Remote-MTA"] == "dns; 127.0.0.1"
    assert fields["ok@relay.example"]["Diagnostic-Code"] == "smtp; 250 2.1.5 Ok"
    assert fields["nobody@relay.example"]["Remote-MTA"] == "dns; 127.0.0.1"
    assert fields["nobody@relay.example"]["Diagnostic-Code"] == f"smtp; {UNKNOWN}"
    assert fields["nobody@relay.example"]["Action"] == "undeliverable"
    assert fields["nobody@relay.example"]["Status"] == "5.1.1"

    queue_id = inst.wait_for_log(
        rf"postfix/smtp\[\d+\]: (\w+): to=<ok@relay\.example>, relay={re.escape(relay)}"
        r", .*dsn=2\.1\.5, status=deliverable \(250 2\.1\.5 Ok\)").group(1)
    inst.wait_for_log(rf"{queue_id}: to=<nobody@relay\.example>, .*dsn=5\.1\.1, "
                      r"status=undeliverable \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 ")
    inst.wait_for_log(rf"{queue_id}: removed")
    # The server saw the envelope, never the content; nothing bounced.
    assert any(c.startswith("MAIL FROM:<probe1@localhost>") for c in server.commands)
    assert [c for c in server.commands if c.startswith("RCPT")] == [
        "RCPT TO:<ok@relay.example> ORCPT=rfc822;ok@relay.example",
        "RCPT TO:<nobody@relay.example> ORCPT=rfc822;nobody@relay.example"]
    assert "DATA" not in server.commands
    assert server.messages == []
    assert f"{queue_id}: sender non-delivery notification" not in inst.log_text()


def test_bv_to_a_next_hop_that_is_down_says_why(inst, dead_port):
    done = inst.command("sendmail", "-bv", "-f", "probe2@localhost", "someone@down.example")
    assert done.returncode == 0, done.stderr

    report = report_for(inst, "probe2")
    connect_error = f"connect to 127.0.0.1[127.0.0.1]:{dead_port}: Connection refused"
    assert f"<someone@down.example>: {connect_error}" in \
        " ".join(list(report.iter_parts())[0].get_content().split())
    fields = recipient_fields(report)["someone@down.example"]
    assert fields["Action"] == "undeliverable"
    assert fields["Status"] == "4.4.1"
    inst.wait_for_log(r"to=<someone@down\.example>, relay=none, .*dsn=4\.4\.1, "
                      rf"status=undeliverable \({re.escape(connect_error)}\)")
