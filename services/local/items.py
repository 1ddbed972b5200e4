"""The destinations an alias, :include: file or .forward file lists, and where each goes.

aliases(5) and local(8) define one list syntax for all three: destinations
separated by commas (and, in files, by lines), each one of

    |command        pipe the message into a command        (command.py)
    /file/name      append to a file; a trailing / is a Maildir (file.py)
    :include:/path  read more destinations from a file     (include.py)
    \\user           the user's own mailbox, no more aliasing or .forward
    user@domain     forward: a new message through cleanup (forward.py)

A destination with spaces (`"|/usr/bin/vacation -a me"`) is quoted. Lines
whose first non-blank character is `#` are comments. Whether a command or a
file may be named depends on where the list came from: allow_mail_to_commands
and allow_mail_to_files list the sources (alias, forward, include) that may.

Interface:
    split_items(text) -> list[str]
    deliver_items(delivery, target, items)   dispatch every destination
"""

from __future__ import annotations

from pymaster.mail.addr import split_address
from pymaster.mail.aliases import split_values
from pymaster.util import log
from services.local import command, context, file, include, recipient
from services.local.context import Delivery, Target, bounced


def split_items(text: str) -> list[str]:
    """split_items - the destinations in TEXT, unquoted, comments and blanks dropped."""
    items: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        for item in split_values(line):
            if item[0] in "|/" or item[:9].lower() == ":include:":
                items.append(item)
            else:
                # Plain addresses may also be separated by white space.
                items.extend(item.split())
    return items


def allowed(cfg, parameter: str, source: str) -> bool:
    """allowed - whether allow_mail_to_commands/files lists SOURCE (alias, forward, include)."""
    return source in [s.lower() for s in cfg.list(parameter)]


def deliver_items(delivery: Delivery, target: Target, items: list[str]) -> None:
    """deliver_items - deliver the message to every destination in ITEMS."""
    if target.level >= context.MAX_LEVEL:
        delivery.add(bounced(f"mail forwarding loop for {target.address}", "5.4.6"))
        return
    for item in items:
        deliver_item(delivery, target, item)


def deliver_item(delivery: Delivery, target: Target, item: str) -> None:
    """deliver_item - one destination, by its kind."""
    cfg = delivery.cfg
    if item.startswith("|"):
        if not allowed(cfg, "allow_mail_to_commands", target.source):
            delivery.add(bounced("mail to command is restricted", "5.7.1"))
        else:
            delivery.add(command.deliver_command(delivery, target, item[1:].strip()))
    elif item[:9].lower() == ":include:":
        include.deliver_include(delivery, target, item[len(":include:"):].strip())
    elif item.startswith("/"):
        if not allowed(cfg, "allow_mail_to_files", target.source):
            delivery.add(bounced("mail to file is restricted", "5.7.1"))
        else:
            delivery.add(file.deliver_file(delivery, target, item))
    elif item.startswith("\\"):
        recipient.deliver_own_mailbox(delivery, target, item[1:])
    elif is_self(target, item):
        recipient.deliver_own_mailbox(delivery, target, target.user)
    else:
        log.debug(f"{delivery.message.queue_id}: {target.address}: forward to {item}")
        delivery.forward(target, item)


def is_self(target: Target, item: str) -> bool:
    """is_self - whether ITEM names the user being delivered (`user: user`, `user` in .forward)."""
    local, domain = split_address(item)
    if domain and domain.lower() != target.domain:
        return False
    return local.lower() in (target.user, target.local)
