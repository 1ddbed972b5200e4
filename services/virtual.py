"""virtual(8): the virtual mailbox delivery agent.

Delivers to mailboxes of virtual_mailbox_domains, which need no system
account. For each recipient (lookups in virtual(5) order: user+ext@domain,
user@domain, @domain):

  virtual_mailbox_maps  the mailbox path relative to virtual_mailbox_base;
                        a path ending in `/` is a Maildir, else an mbox
                        (locked per virtual_mailbox_lock)
  virtual_uid_maps      the owner uid (`static:5000` or per user), at least
  virtual_gid_maps      virtual_minimum_uid, and the group

An address with no mailbox bounces `unknown user: "ADDRESS"` (5.1.1); a
message that already has `Delivered-To: ADDRESS` bounces as a mail loop;
a table that cannot be read defers. Each delivered message gets Return-Path:,
X-Original-To: and Delivered-To:, and is limited to virtual_mailbox_limit.

Run as root it writes as the mailbox's uid/gid. Run as another user (the
in-tree instance) it ignores virtual_uid_maps, virtual_gid_maps and
virtual_minimum_uid, says so once in the log, and writes as itself.

Interface:
    main()                                     the libexec/virtual program
    pre_jail(svc) -> VirtualAgent, run(svc)
    VirtualAgent(cfg).deliver(req, status)     one delivery request
    VirtualAgent(cfg).verify(req, status)      sendmail -bv: verdicts, nothing written
    VirtualAgent(cfg).deliver_one(message, rcpt) -> (kind, dsn, reason)
"""

from __future__ import annotations

import os

from pymaster.mail import delivery
from pymaster.mail.config import Config
from pymaster.mail.mailbox import (
    MailboxError,
    as_user,
    deliver_maildir,
    deliver_mbox,
    envelope_headers,
    has_delivered_to,
    parse_lock_styles,
)
from pymaster.mail.maps import Maps, virtual_lookup
from pymaster.master import service
from pymaster.util import log
from pymaster.util.tables import TableError

RELAY = "virtual"
NO_PROPAGATION = "none"   # a mailbox path never gets the address extension appended
CONFIG_ERROR = ("deferred", "4.3.5", "mail system configuration error")


class VirtualAgent:
    """Delivers the recipients of delivery requests into virtual mailboxes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.mailbox_maps = Maps(cfg, "virtual_mailbox_maps")
        self.uid_maps = Maps(cfg, "virtual_uid_maps")
        self.gid_maps = Maps(cfg, "virtual_gid_maps")
        self.privileged = os.geteuid() == 0
        if not self.privileged:
            log.info("not running as root: virtual_uid_maps, virtual_gid_maps and "
                     "virtual_minimum_uid are not used; mailboxes are written as "
                     f"uid {os.geteuid()}")

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """deliver - deliver every recipient of REQ and report each through STATUS."""
        msg = delivery.open_content(req)
        message = (req.sender, msg.read_content())
        for rcpt in req.recipients:
            kind, dsn, reason = self.deliver_one(message, rcpt)
            getattr(status, kind)(rcpt, RELAY, reason, dsn)

    def verify(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """verify - sendmail -bv: every lookup and check, no mailbox written."""
        msg = delivery.open_content(req)
        message = (req.sender, msg.read_content())
        for rcpt in req.recipients:
            kind, dsn, reason = self.deliver_one(message, rcpt, verify=True)
            getattr(status, kind)(rcpt, RELAY, reason, dsn)

    def deliver_one(self, message: tuple[str, bytes], rcpt,
                    verify: bool = False) -> tuple[str, str, str]:
        """deliver_one - (outcome, dsn, reason) of delivering MESSAGE to RCPT
        (VERIFY: what it would do, as virtual(8) says for sendmail -bv)."""
        sender, content = message
        address = rcpt.address
        if has_delivered_to(content, address):
            return "bounced", "5.4.6", f"mail forwarding loop for {address}"
        try:
            mailbox = self.lookup(self.mailbox_maps, address)
            if mailbox is None:
                return "bounced", "5.1.1", f'unknown user: "{address}"'
            owner = self.owner(address)
        except TableError as e:
            log.warning(f"table lookup for {address}: {e}")
            return "deferred", "4.3.0", "virtual mailbox table lookup failure"
        if owner is None:
            return CONFIG_ERROR
        if verify:
            return "sent", "2.0.0", "delivers to " + ("maildir" if mailbox.endswith("/")
                                                      else "mailbox")
        prefix = envelope_headers(sender, rcpt.orig or address, address)
        return self.write(mailbox, prefix, content, sender, owner)

    def lookup(self, maps: Maps, address: str) -> str | None:
        value = virtual_lookup(maps, address, self.cfg, propagate=NO_PROPAGATION)
        return value.strip() if value is not None else None

    def owner(self, address: str) -> tuple[int | None, int | None] | None:
        """owner - (uid, gid) to write as; (None, None) when not root; None on a bad table entry."""
        if not self.privileged:
            return None, None
        ids = []
        for maps, name in ((self.uid_maps, "virtual_uid_maps"),
                           (self.gid_maps, "virtual_gid_maps")):
            value = self.lookup(maps, address)
            if value is None:
                log.warning(f"recipient {address}: not found in {name}")
                return None
            if not value.isdigit() or int(value) <= 0:
                log.warning(f"recipient {address}: bad {name[8:11]} {value} in {name}")
                return None
            ids.append(int(value))
        if ids[0] < self.cfg.int("virtual_minimum_uid"):
            log.warning(f"recipient {address}: bad uid {ids[0]} in virtual_uid_maps")
            return None
        return ids[0], ids[1]

    def write(self, mailbox: str, prefix: bytes, content: bytes, sender: str,
              owner: tuple[int | None, int | None]) -> tuple[str, str, str]:
        """write - put the message into MAILBOX (relative to virtual_mailbox_base)."""
        cfg = self.cfg
        path = os.path.join(cfg.get("virtual_mailbox_base"), mailbox)
        limit = cfg.size("virtual_mailbox_limit")
        try:
            with as_user(*owner):
                if mailbox.endswith("/"):
                    deliver_maildir(path, prefix, content, limit)
                    return "sent", "2.0.0", "delivered to maildir"
                deliver_mbox(path, prefix, content, sender,
                             parse_lock_styles(cfg.list("virtual_mailbox_lock")), limit,
                             cfg.int("deliver_lock_attempts"), cfg.time("deliver_lock_delay"),
                             cfg.time("stale_lock_time"))
                return "sent", "2.0.0", "delivered to mailbox"
        except MailboxError as e:
            kind = "deferred" if e.temporary else "bounced"
            if mailbox.endswith("/"):
                return kind, e.dsn, f"maildir delivery failed: {e.reason}"
            return kind, e.dsn, f"delivery failed to mailbox {path}: {e.reason}"


def check_config(cfg: Config) -> None:
    """check_config - refuse to start with a relative virtual_mailbox_base."""
    base = cfg.get("virtual_mailbox_base")
    if not base.startswith("/"):
        log.fatal(f"do not specify relative pathname: virtual_mailbox_base = {base}")


def pre_jail(svc: service.Service) -> VirtualAgent:
    """pre_jail - the configuration checked, the agent with its tables opened."""
    check_config(svc.cfg)
    return VirtualAgent(svc.cfg)


def run(svc: service.Service) -> None:
    agent = svc.enter_jail(pre_jail)
    svc.serve_requests(delivery.request_handler(agent.deliver, svc.cfg, verify=agent.verify))


def main() -> None:
    service.main("virtual", run)
