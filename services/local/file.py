"""Delivery to a file: `/file/name` destinations in aliases, :include: and .forward.

The file is appended to in mbox format (From line, `>From ` quoting, an
empty line after the message) as the account in force, under the kernel
locks of mailbox_delivery_lock (no dotlock: the directory of an arbitrary
file may not be writable). A name ending in `/` is a Maildir.

Interface:
    deliver_file(delivery, target, path) -> Outcome
"""

from __future__ import annotations

from pymaster.mail.mailbox import (
    MailboxError,
    as_user,
    deliver_maildir,
    deliver_mbox,
    envelope_headers,
    parse_lock_styles,
)
from services.local.context import Delivery, Outcome, Privs, Target, failed, sent


def file_locks(cfg) -> list[str]:
    """file_locks - mailbox_delivery_lock without dotlock (fcntl when nothing is left)."""
    styles = [s for s in parse_lock_styles(cfg.list("mailbox_delivery_lock")) if s != "dotlock"]
    return styles or ["fcntl"]


def deliver_file(delivery: Delivery, target: Target, path: str) -> Outcome:
    """deliver_file - append the message to PATH (or write it into the Maildir PATH/)."""
    if delivery.verify:
        return sent(f"delivers to file: {path}")
    cfg = delivery.cfg
    msg = delivery.message
    delivered = "file" in [s.lower() for s in cfg.list("prepend_delivered_header")]
    prefix = envelope_headers(msg.sender, target.orig_address,
                              target.address if delivered else None)
    privs = (target.privs or Privs.current()).for_commands(cfg.get("default_privs"))
    try:
        with as_user(privs.uid, privs.gid):
            if path.endswith("/"):
                deliver_maildir(path, prefix, msg.content, cfg.size("mailbox_size_limit"))
                return sent("delivered to maildir")
            deliver_mbox(path, prefix, msg.content, msg.sender, file_locks(cfg),
                         cfg.size("mailbox_size_limit"), cfg.int("deliver_lock_attempts"),
                         cfg.time("deliver_lock_delay"), cfg.time("stale_lock_time"))
    except MailboxError as e:
        return failed(e.dsn, f"cannot append message to file {path}: {e.reason}")
    return sent(f"delivered to file: {path}")
