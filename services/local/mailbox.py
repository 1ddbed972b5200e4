"""Delivery to a user's mailbox, in local(8)'s order of preference.

  1. mailbox_transport_maps, then mailbox_transport: another delivery agent
     delivers it (transport.py; also for recipients without an account)
  2. mailbox_command_maps, then mailbox_command: a command such as procmail,
     run as the user (mailbox_command is used literally: it is not subject
     to $name expansion, so it may hold shell syntax)
  3. home_mailbox: a file under the home directory; ending in `/`, a Maildir
  4. mail_spool_directory/USER: the system mail spool (mbox); a spool
     directory ending in `/` holds Maildirs

Mailbox files in the home directory are written as the user. The spool
mailbox is created by root in the spool directory (which the user may not
be able to write, for the dotlock) and given to the user.

Interface:
    deliver_mailbox(delivery, target) -> Outcome
"""

from __future__ import annotations

import os

from pymaster.mail.mailbox import (
    MailboxError,
    as_user,
    deliver_maildir,
    deliver_mbox,
    envelope_headers,
    parse_lock_styles,
)
from pymaster.mail.maps import Maps
from pymaster.util.tables import TableError
from services.local import command, transport
from services.local.context import Delivery, Outcome, Privs, Target, deferred, failed, sent


def deliver_mailbox(delivery: Delivery, target: Target) -> Outcome:
    """deliver_mailbox - deliver to TARGET's mailbox (TARGET.privs is the user)."""
    cfg = delivery.cfg
    handed_off = transport.mailbox_handoff(delivery, target)
    if handed_off is not None:
        return handed_off
    try:
        mailbox_command = find_mailbox_command(cfg, target.user)
    except TableError as e:
        return deferred(f"mailbox_command_maps lookup failed: {e}", "4.3.0")
    if mailbox_command:
        return command.deliver_command(delivery, target.with_(source="mailbox"), mailbox_command)
    home_mailbox = cfg.get("home_mailbox")
    if home_mailbox:
        return deliver_home_mailbox(delivery, target, home_mailbox)
    return deliver_spool_mailbox(delivery, target)


def find_mailbox_command(cfg, user: str) -> str:
    """find_mailbox_command - mailbox_command_maps for USER, else mailbox_command, unexpanded."""
    if cfg.get("mailbox_command_maps"):
        value = Maps(cfg, "mailbox_command_maps").lookup(user)
        if value:
            return value.strip()
    return (cfg.raw("mailbox_command") or "").strip()


def mailbox_prefix(delivery: Delivery, target: Target) -> bytes:
    """mailbox_prefix - Return-Path, X-Original-To and Delivered-To for a mailbox."""
    return envelope_headers(delivery.message.sender, target.orig_address, target.address)


def deliver_home_mailbox(delivery: Delivery, target: Target, home_mailbox: str) -> Outcome:
    """deliver_home_mailbox - HOME/home_mailbox, written as the user."""
    privs = target.privs or Privs.current()
    path = os.path.join(privs.home, home_mailbox)
    with as_user(privs.uid, privs.gid):
        if home_mailbox.endswith("/"):
            return to_maildir(delivery, target, path)
        return to_mbox(delivery, target, path, create_owner=None)


def deliver_spool_mailbox(delivery: Delivery, target: Target) -> Outcome:
    """deliver_spool_mailbox - mail_spool_directory/USER, created by root for the user."""
    privs = target.privs or Privs.current()
    spool = delivery.cfg.get("mail_spool_directory")
    path = os.path.join(spool, privs.logname or target.user)
    if spool.endswith("/"):
        with as_user(privs.uid, privs.gid):
            return to_maildir(delivery, target, path + "/")
    owner = (privs.uid, privs.gid) if privs.uid is not None and privs.gid is not None else None
    return to_mbox(delivery, target, path, create_owner=owner)


def to_maildir(delivery: Delivery, target: Target, maildir: str) -> Outcome:
    if delivery.verify:
        return sent("delivers to maildir")
    try:
        deliver_maildir(maildir, mailbox_prefix(delivery, target), delivery.message.content,
                        delivery.cfg.size("mailbox_size_limit"))
    except MailboxError as e:
        return failed(e.dsn, f"maildir delivery failed: {e.reason}")
    return sent("delivered to maildir")


def to_mbox(delivery: Delivery, target: Target, path: str,
            create_owner: tuple[int, int] | None) -> Outcome:
    if delivery.verify:
        return sent("delivers to mailbox")
    cfg = delivery.cfg
    try:
        deliver_mbox(path, mailbox_prefix(delivery, target), delivery.message.content,
                     delivery.message.sender, parse_lock_styles(cfg.list("mailbox_delivery_lock")),
                     cfg.size("mailbox_size_limit"), cfg.int("deliver_lock_attempts"),
                     cfg.time("deliver_lock_delay"), cfg.time("stale_lock_time"), create_owner,
                     cfg.bool("strict_mailbox_ownership"))
    except MailboxError as e:
        return failed(e.dsn, f"cannot update mailbox {path} for user {target.user}. {e.reason}")
    return sent("delivered to mailbox")
