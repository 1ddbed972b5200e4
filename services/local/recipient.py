"""Delivering to one local recipient, in local(8)'s order.

  1. A message that already carries `Delivered-To: RECIPIENT` has been here
     before: it bounces with `mail forwarding loop for RECIPIENT` (5.4.6).
  2. alias_maps: an alias replaces the recipient with its destinations.
  3. The passwd entry of the user (the local part without its extension):
     its .forward file (forward_path), else its mailbox.
  4. No such user: mailbox_transport(_maps) still applies (it serves
     mailboxes without accounts, such as Cyrus's); then
     fallback_transport(_maps), luser_relay, and else `unknown user:
     "NAME"` (5.1.1).

Interface:
    deliver_recipient(delivery, target)
    deliver_own_mailbox(delivery, target, user)   the `\\user` destination
"""

from __future__ import annotations

import pwd

from pymaster.mail.mailbox import has_delivered_to
from services.local import alias, forward, mailbox, transport
from services.local.context import Delivery, Privs, Target, bounced
from services.local.expand import attributes, expand


def lookup_user(name: str) -> pwd.struct_passwd | None:
    """lookup_user - the passwd entry of NAME, or None when there is no such user."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def deliver_recipient(delivery: Delivery, target: Target) -> None:
    """deliver_recipient - deliver to TARGET through aliases, .forward and mailbox."""
    if has_delivered_to(delivery.message.content, target.address):
        delivery.add(bounced(f"mail forwarding loop for {target.address}", "5.4.6"))
        return
    if alias.deliver_alias(delivery, target):
        return
    pw = lookup_user(target.user)
    if pw is None:
        deliver_no_account(delivery, target)
        return
    deliver_user(delivery, target, pw, dotforward=True)


def deliver_no_account(delivery: Delivery, target: Target) -> None:
    """deliver_no_account - TARGET has no passwd entry: mailbox_transport, else unknown."""
    handed_off = transport.mailbox_handoff(delivery, target)
    if handed_off is not None:
        delivery.add(handed_off)
        return
    deliver_unknown(delivery, target)


def deliver_user(delivery: Delivery, target: Target, pw: pwd.struct_passwd,
                 dotforward: bool) -> None:
    """deliver_user - the user's .forward if there is one, else the user's mailbox."""
    target = target.with_(privs=Privs.of_user(pw), user=pw.pw_name)
    if dotforward and forward.deliver_dotforward(delivery, target):
        return
    delivery.add(mailbox.deliver_mailbox(delivery, target))


def deliver_own_mailbox(delivery: Delivery, target: Target, user: str) -> None:
    """deliver_own_mailbox - `\\user`: straight to the mailbox, no alias, no .forward."""
    pw = lookup_user(user.lower())
    if pw is None:
        deliver_no_account(delivery, target.with_(user=user.lower()))
        return
    deliver_user(delivery, target, pw, dotforward=False)


def deliver_unknown(delivery: Delivery, target: Target) -> None:
    """deliver_unknown - no alias, no account: fallback_transport, luser_relay, or bounce."""
    cfg = delivery.cfg
    handed_off = transport.fallback_handoff(delivery, target)
    if handed_off is not None:
        delivery.add(handed_off)
        return
    relay = cfg.raw("luser_relay") or ""
    if relay.strip():
        attrs = attributes(target, delivery.message, None, cfg)
        address, _ = expand(relay.strip(), attrs, cfg.get("forward_expansion_filter"), cfg)
        if address:
            delivery.forward(target, address)
            return
    delivery.add(bounced(f'unknown user: "{target.user}"', "5.1.1"))

