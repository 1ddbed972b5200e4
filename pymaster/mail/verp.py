"""VERP: variable envelope return paths for mailing lists.

A message submitted with `MAIL FROM:<list-return@lists.example.com> XVERP`
(or `sendmail -XV`) carries the request as the queue file attribute
`verp_delimiters=+=`. qmgr then hands its recipients to the delivery agents
one at a time, and each agent (smtp, local, pipe) uses a sender of its own
per recipient: the sender's local part, the first delimiter, the
recipient's local part, the second delimiter, the recipient's domain, then
`@` and the sender's domain:

    list-return@lists.example.com + alice@example.com
        -> list-return+alice=example.com@lists.example.com

The recipient is the original one (what the list sent to), not the result
of aliasing or forwarding, which is what a VERP consumer expects. The bounce
service sends one notice per recipient to that address (unless
disable_verp_bounces), so the list learns who failed from the address alone.

Delimiters: two characters, each one of verp_delimiter_filter (default
`-=+`); default_verp_delimiters (default `+=`) when the request names none.

Interface:
    ATTR                                 "verp_delimiters", the queue file attribute
    verify(delims, filter) -> str        "" when good, else Postfix's reason
    config_error(cfg) -> str             "" or the fatal text for bad main.cf delimiters
    sender_for(sender, delims, recipient) -> str
    request_sender(req) -> str           a delivery request's sender for its recipient
"""

from __future__ import annotations

ATTR = "verp_delimiters"


def verify(delims: str, filter_chars: str) -> str:
    """verify - "" when DELIMS are two characters from FILTER_CHARS, else why not."""
    if len(delims) != 2:
        return "bad VERP delimiter string length"
    if delims[0] not in filter_chars:
        return "bad first VERP delimiter character"
    if delims[1] not in filter_chars:
        return "bad second VERP delimiter character"
    return ""


def config_error(cfg) -> str:
    """config_error - the fatal text for main.cf's default_verp_delimiters, or ""."""
    why = verify(cfg.get("default_verp_delimiters"), cfg.get("verp_delimiter_filter"))
    if not why:
        return ""
    return (f"file {cfg.main_cf}: parameters default_verp_delimiters and "
            f"verp_delimiter_filter: {why}")


def sender_for(sender: str, delims: str, recipient: str) -> str:
    """sender_for - SENDER personalised for RECIPIENT with the two DELIMS.

    The null sender stays null (nobody gets notices for it anyway)."""
    if not sender or len(delims) != 2:
        return sender
    s_local, s_at, s_domain = sender.rpartition("@") if "@" in sender else (sender, "", "")
    r_local, r_at, r_domain = recipient.rpartition("@") if "@" in recipient \
        else (recipient, "", "")
    out = s_local + delims[0] + r_local
    if r_domain:
        out += delims[1] + r_domain
    if s_domain:
        out += "@" + s_domain
    return out


def request_sender(req) -> str:
    """request_sender - the envelope sender a delivery agent uses for REQ.

    REQ (a pymaster.mail.delivery.DeliveryRequest) holds one recipient
    when the message asked for VERP (qmgr sees to that); its original
    recipient personalises the sender."""
    delims = str(req.attrs.get(ATTR, ""))
    if not delims or not req.sender or not req.recipients:
        return req.sender
    rcpt = req.recipients[0]
    return sender_for(req.sender, delims, rcpt.orig or rcpt.address)
