"""sendmail -bv end to end: address verification reports, nothing delivered.

`sendmail -bv` queues the command-line recipients with trace_flags=verify
and no message; qmgr routes them as usual, each delivery agent only says
what it would do (virtual: `delivers to maildir`, error: its reason), and
the trace service mails the sender a "Mail Delivery Status Report" whose
delivery-status part says `Action: deliverable` or `undeliverable`. The
report reaches the sender's Maildir in the in-tree virtual domain
`localhost`; the tests read it back with Python's `email` package.
"""

from __future__ import annotations

import pytest

from tests.support.dsnreport import parse, recipient_fields
from tests.support.instance import ROOT, Instance

pytestmark = pytest.mark.skipif(
    not all((ROOT / "libexec" / name).exists() for name in ("bounce", "virtual", "error")),
    reason="needs the bounce, virtual and error services")

SETTINGS = {
    "myhostname": "mx.example.com",
    "transport_maps": "inline:{ { error.example = error:5.1.1 no such user } }",
}


@pytest.fixture(scope="module")
def inst(tmp_path_factory):
    with Instance(tmp_path_factory.mktemp("sendmail_bv"), main_cf=SETTINGS) as instance:
        yield instance


def maildir(inst: Instance, user: str):
    return inst.mailbox_dir / "localhost" / user


def test_bv_mails_a_verification_report_and_delivers_nothing(inst):
    done = inst.command("sendmail", "-bv", "-f", "sender@localhost",
                        "joe@localhost", "nobody@error.example")
    assert done.returncode == 0, done.stderr

    [raw] = inst.maildir_messages(maildir(inst, "sender"))
    report = parse(raw)
    assert report["Subject"] == "Mail Delivery Status Report"
    assert report.get_content_type() == "multipart/report"
    text = list(report.iter_parts())[0].get_content()
    assert "Enclosed is the mail delivery report that you requested." in text
    assert "<joe@localhost>: delivery via virtual: delivers to maildir" in text
    assert "<nobody@error.example>: no such user" in text

    fields = recipient_fields(report)
    assert fields["joe@localhost"]["Action"] == "deliverable"
    assert fields["joe@localhost"]["Status"] == "2.0.0"
    assert fields["nobody@error.example"]["Action"] == "undeliverable"
    assert fields["nobody@error.example"]["Status"] == "5.1.1"

    # The verdicts are logged; the verified message itself is gone, and
    # neither a delivery nor a bounce happened.
    queue_id = inst.wait_for_log(r"(\w+): to=<joe@localhost>, relay=virtual, .*"
                                 r"status=deliverable \(delivers to maildir\)").group(1)
    inst.wait_for_log(rf"{queue_id}: to=<nobody@error\.example>, relay=none, .*"
                      r"dsn=5\.1\.1, status=undeliverable \(no such user\)")
    inst.wait_for_log(rf"{queue_id}: sender delivery status notification: \w+")
    inst.wait_for_log(rf"{queue_id}: removed")
    log = inst.log_text()
    assert f"{queue_id}: sender non-delivery notification" not in log
    assert not (maildir(inst, "joe") / "new").exists() \
        or not list((maildir(inst, "joe") / "new").iterdir())


def test_bv_needs_recipients(inst):
    done = inst.command("sendmail", "-bv", "-f", "sender@localhost")
    assert done.returncode == 75
