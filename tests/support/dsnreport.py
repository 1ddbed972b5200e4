"""Reading delivery status notifications (RFC 3464) that tests find in mailboxes.

Interface:
    parse(raw) -> EmailMessage                  a delivered message, parsed
    recipient_fields(report) -> {address: fields}   per-recipient status fields
"""

from __future__ import annotations

import email
import email.message
import email.policy


def parse(raw: bytes) -> email.message.EmailMessage:
    """parse - RAW as a message, with the modern email policy."""
    return email.message_from_bytes(raw, policy=email.policy.default)


def recipient_fields(report: email.message.EmailMessage) -> dict[str, dict[str, str]]:
    """recipient_fields - the delivery-status part's per-recipient fields, by address."""
    status = list(report.iter_parts())[1]
    assert status.get_content_type() == "message/delivery-status"
    blocks = [dict(b.items()) for b in status.get_payload()][1:]
    return {b["Final-Recipient"].split(";", 1)[1].strip(): b for b in blocks}
