"""The state of one local delivery: the message, the address being delivered, the outcomes.

Postfix's local agent carries two structures down its recursion (alias ->
:include: -> .forward -> mailbox): the message attributes and the user
attributes. Here they are:

  Message   what is delivered: sender, content, arrival time, attributes
  Privs     as whom: uid, gid, and the account fields commands see
            (home, shell, logname)
  Target    what is being delivered now: the original queue recipient it
            descends from, the current address split into user, extension
            and domain, the Delivered-To value, the recursion level, the
            kind of expansion that produced it (alias, include, forward),
            and whose privileges apply
  Delivery  one original recipient's delivery: its outcomes (one per
            mailbox, file, command or forwarding), the addresses to
            forward through cleanup, and whether it is only a sendmail -bv
            verification (.verify)

Interface:
    Outcome(kind, dsn, reason)  and  sent(...), deferred(...), bounced(...)
    Message.from_queue(msg, req)
    Privs.of_user(pw) / Privs.of_uid(uid, default_privs)
    Target.for_recipient(rcpt, cfg) / target.child(address, source, privs)
    Delivery(cfg, message, rcpt): .add(outcome), .forward(address), .failed
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from dataclasses import dataclass, field

from pymaster.mail import records, traceflags, verp
from pymaster.mail.addr import split_address
from pymaster.mail.config import Config
from pymaster.mail.delivery import DeliveryRequest

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"
MAX_LEVEL = 100     # expansion depth: a deeper nest is a loop in the tables


@dataclass(frozen=True)
class Outcome:
    """The result of one delivery attempt (a mailbox, a file, a command, a forward).

    RELAY is the status line's relay= ("" for local); PASSED marks the outcome
    of another agent that local handed the recipient to (transport.py): that
    agent has logged it and written the status log entry already."""
    kind: str
    dsn: str
    reason: str
    relay: str = ""
    passed: bool = False


def sent(reason: str, dsn: str = "2.0.0") -> Outcome:
    return Outcome(SENT, dsn, reason)


def deferred(reason: str, dsn: str = "4.3.0") -> Outcome:
    return Outcome(DEFERRED, dsn, reason)


def bounced(reason: str, dsn: str = "5.0.0") -> Outcome:
    return Outcome(BOUNCED, dsn, reason)


def failed(dsn: str, reason: str) -> Outcome:
    """failed - deferred or bounced, as the status code's class says."""
    return Outcome(DEFERRED if dsn.startswith("4") else BOUNCED, dsn, reason)


@dataclass
class Message:
    """The message being delivered, read once per request."""
    queue_id: str
    sender: str
    content: bytes
    arrival_time: float
    attrs: dict
    # The delivery request (a hand-off to another agent reuses it).
    request: DeliveryRequest | None = None

    @classmethod
    def from_queue(cls, msg, req) -> "Message":
        """from_queue - the content of queue file MSG with the request's envelope."""
        return cls(req.queue_id, verp.request_sender(req), msg.read_content(),
                   req.arrival_time or msg.arrival_time, {**msg.attrs, **req.attrs}, req)


@dataclass(frozen=True)
class Privs:
    """Whose account a delivery runs as; uid None means "this process's own"."""
    uid: int | None
    gid: int | None
    logname: str = ""
    home: str = "/"
    shell: str = "/bin/sh"

    @classmethod
    def of_user(cls, pw: pwd.struct_passwd) -> "Privs":
        return cls(pw.pw_uid, pw.pw_gid, pw.pw_name, pw.pw_dir, pw.pw_shell)

    @classmethod
    def of_uid(cls, uid: int, default_privs: str) -> "Privs":
        """of_uid - the account owning UID; root's files deliver as default_privs."""
        try:
            pw = pwd.getpwuid(uid) if uid != 0 else pwd.getpwnam(default_privs)
        except KeyError:
            return cls(uid, uid)
        return cls.of_user(pw)

    @classmethod
    def current(cls) -> "Privs":
        """current - this process's account (the non-root in-tree instance)."""
        try:
            return cls.of_user(pwd.getpwuid(os.getuid()))
        except KeyError:
            return cls(None, None)

    def for_commands(self, default_privs: str) -> "Privs":
        """for_commands - never run a command as root: default_privs' ids, same account fields."""
        if self.uid == 0:
            nobody = Privs.of_uid(0, default_privs)
            return dataclasses.replace(self, uid=nobody.uid, gid=nobody.gid)
        return self


@dataclass
class Target:
    """The address being delivered at this level of the expansion."""
    rcpt: records.Recipient     # the records.Recipient reported to qmgr
    address: str                # the current address, extension included
    local: str                  # local part, lower case, extension included
    user: str                   # local part without the extension
    extension: str
    domain: str
    level: int = 0
    source: str = "mailbox"     # "alias", "include", "forward" or "mailbox"
    privs: Privs | None = None  # None: not decided yet (the user's own)
    owner: str = ""             # envelope sender for list expansions (owner-NAME)
    expanded_from: str = ""     # the alias or file that produced this address

    @classmethod
    def for_recipient(cls, rcpt, cfg: Config) -> "Target":
        """for_recipient - the top-level target for queue recipient RCPT."""
        return cls.parse(rcpt, rcpt.address, cfg)

    @classmethod
    def parse(cls, rcpt, address: str, cfg: Config, **kw) -> "Target":
        local, domain = split_address(address)
        local = local.lower()
        user, extension = split_extension(local, cfg.get("recipient_delimiter"))
        return cls(rcpt, address, local, user, extension, domain.lower(), **kw)

    def child(self, address: str, cfg: Config, **changes) -> "Target":
        """child - the target one expansion level down, for ADDRESS."""
        kw = {"level": self.level + 1, "source": self.source, "privs": self.privs,
              "owner": self.owner, "expanded_from": self.expanded_from}
        kw.update(changes)
        return Target.parse(self.rcpt, address, cfg, **kw)

    def with_(self, **changes) -> "Target":
        return dataclasses.replace(self, **changes)

    @property
    def orig_address(self) -> str:
        """orig_address - the recipient as the sender wrote it (X-Original-To)."""
        return self.rcpt.orig or self.rcpt.address


def split_extension(local: str, delimiters: str) -> tuple[str, str]:
    """split_extension - ("user", "ext") of "user+ext"; any one delimiter character counts.

    owner-NAME and NAME-request keep their hyphen when "-" is a delimiter, as
    Postfix does with owner_request_special."""
    if not delimiters:
        return local, ""
    if "-" in delimiters and (local.startswith("owner-") or local.endswith("-request")):
        delimiters = delimiters.replace("-", "")
    positions = [local.find(d) for d in delimiters if local.find(d) > 0]
    if not positions:
        return local, ""
    cut = min(positions)
    return local[:cut], local[cut + 1:]


@dataclass
class Delivery:
    """One original recipient's delivery: outcomes and pending forwards."""
    cfg: Config
    message: Message
    rcpt: records.Recipient
    outcomes: list[Outcome] = field(default_factory=list)
    forwards: dict[str, list[str]] = field(default_factory=dict)  # sender -> addresses
    delivered_to: dict[str, str] = field(default_factory=dict)    # sender -> Delivered-To

    def add(self, outcome: Outcome) -> Outcome:
        self.outcomes.append(outcome)
        return outcome

    def forward(self, target: Target, address: str) -> None:
        """forward - resubmit the message to ADDRESS (collected, sent once at the end)."""
        sender = target.owner or self.message.sender
        addresses = self.forwards.setdefault(sender, [])
        if address.lower() not in (a.lower() for a in addresses):
            addresses.append(address)
        self.delivered_to.setdefault(sender, target.address)

    @property
    def verify(self) -> bool:
        """verify - sendmail -bv: every mailbox, file, command and forward only
        says what it would do ("delivers to mailbox"), as local(8) does."""
        return traceflags.is_verify(self.message.attrs)

    @property
    def has_deferral(self) -> bool:
        return any(o.kind == DEFERRED for o in self.outcomes)
