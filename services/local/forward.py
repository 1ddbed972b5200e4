"""The user's .forward file, and forwarding: new mail through cleanup.

.forward: each forward_path element is expanded with the user's attributes
($home, $user, ${extension} …, see expand.py); an element naming an empty
attribute is skipped; the first file that exists, is owned by the user (or
root) and lists something wins. It is read as the user. Its destinations
have the source "forward".

Forwarding: addresses from aliases, :include: files, .forward files and
luser_relay are collected while a recipient is delivered, then sent to
cleanup as ONE new message per envelope sender (the `message` request with
origin=local), with the original recipient preserved and a Delivered-To:
header (per prepend_delivered_header) that lets a later pass see a loop.
The recipient's status line then says `forwarded as QUEUEID`.

Interface:
    deliver_dotforward(delivery, target) -> bool    False: no usable .forward
    submit_forwards(delivery, client) -> list[Outcome]
"""

from __future__ import annotations

import os
import stat

from pymaster.mail import cleanup_client
from pymaster.mail.mailbox import as_user
from pymaster.util import ipc, log
from pymaster.util.strings import split_list
from services.local import items
from services.local.context import Delivery, Outcome, Target, deferred, failed, sent
from services.local.expand import attributes, expand


def forward_files(delivery: Delivery, target: Target) -> list[str]:
    """forward_files - forward_path expanded for TARGET, elements with empty attributes dropped."""
    cfg = delivery.cfg
    attrs = attributes(target, delivery.message, target.privs, cfg)
    paths = []
    for element in split_list(cfg.raw("forward_path") or ""):
        path, undefined = expand(element, attrs, cfg.get("forward_expansion_filter"), cfg)
        if path and not undefined and path not in paths:
            paths.append(path)
    return paths


def read_forward_file(path: str, target: Target) -> str | None:
    """read_forward_file - the text of a usable .forward at PATH, else None.

    Raises OSError for an error other than "no such file"."""
    privs = target.privs
    assert privs is not None  # deliver_user sets the user's
    try:
        with as_user(privs.uid, privs.gid):
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    with os.fdopen(fd, "r", encoding="utf-8", errors="surrogateescape") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        if privs.uid is not None and st.st_uid not in (0, privs.uid):
            log.warning(f"file {path} has bad owner uid {st.st_uid}")
            return None
        return f.read()


def deliver_dotforward(delivery: Delivery, target: Target) -> bool:
    """deliver_dotforward - deliver through the user's .forward; False when there is none."""
    for path in forward_files(delivery, target):
        try:
            text = read_forward_file(path, target)
        except OSError as e:
            delivery.add(deferred(f"error reading forwarding file: {e.strerror}", "4.3.0"))
            return True
        if text is None:
            continue
        destinations = items.split_items(text)
        if not destinations:
            continue
        child = target.with_(source="forward", expanded_from=path, level=target.level + 1)
        items.deliver_items(delivery, child, destinations)
        return True
    return False


def forward_content(delivery: Delivery, delivered_to: str) -> bytes:
    """forward_content - the message as forwarded, with its Delivered-To: on top."""
    cfg = delivery.cfg
    if "forward" in [s.lower() for s in cfg.list("prepend_delivered_header")]:
        return f"Delivered-To: {delivered_to}\n".encode("utf-8", "surrogateescape") \
            + delivery.message.content
    return delivery.message.content


def cleanup_request(delivery: Delivery, sender: str, addresses: list[str]) -> dict:
    """cleanup_request - the `message` request that resubmits the message."""
    rcpt = delivery.rcpt
    orig = rcpt.orig or rcpt.address
    attrs = {"origin": "local", "rewrite_context": "local"}
    for name in ("envid", "ret"):
        if delivery.message.attrs.get(name):
            attrs[name] = delivery.message.attrs[name]
    return cleanup_client.message_request(
        sender, [cleanup_client.recipient(a, orig, rcpt.notify, rcpt.orcpt) for a in addresses],
        attrs)


def submit_forwards(delivery: Delivery, client: ipc.Client) -> list[Outcome]:
    """submit_forwards - send the collected addresses to cleanup, one message per sender.

    sendmail -bv forwards nothing: each address is reported instead."""
    if delivery.verify:
        return [sent(f"forwards to {a}") for addrs in delivery.forwards.values() for a in addrs]
    outcomes = []
    for sender, addresses in delivery.forwards.items():
        content = forward_content(delivery, delivery.delivered_to[sender])
        try:
            answer, _ = client.call(cleanup_request(delivery, sender, addresses), [content])
        except ipc.IpcError as e:
            outcomes.append(deferred(f"unable to forward message: {e}", "4.3.0"))
            continue
        reply = cleanup_client.Reply.of(answer)
        reason = reply.reason
        if reply.ok:
            outcomes.append(sent(f"forwarded as {reply.queue_id}"))
        elif reply.status == "reject":
            outcomes.append(failed(reply.dsn or "5.3.0", f"unable to forward message: {reason}"))
        else:
            outcomes.append(deferred(f"unable to forward message: {reason}", "4.3.0"))
    return outcomes
