"""The mail queue as mailq shows it: reading entries, formatting, selecting.

One library for everything that lists or picks queued messages, so that
`postqueue -p`/`-j` reading the spool directly, the showq service answering
unprivileged users, and qmgr's site flush all read and print the same way.

Reading is cheap per file: the envelope records only (the content is
skipped by a seek), plus the defer log when there is one.

-p layout (the Sendmail mailq shape Postfix keeps; pymaster's IDs are
always in Postfix's long form, so this is Postfix's enable_long_queue_ids
layout, the ID and its mark in 17 columns; short IDs of 12 characters or
less, from an old Postfix spool, get the classic 10-column layout):

    ----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------
    4jcNtb0Nd2zJF6N*      1234 Sat Nov 28 20:03:44 sender@example.com
                                                   rcpt@example.org

    -- 2 Kbytes in 1 Request.

`*` marks a message in the active queue, `!` one on hold; a recipient that
was deferred is listed under its `(reason)` from the defer log.

Interface:
    Entry, Rcpt; entry.to_dict() / Entry.from_dict(d)     (the showq wire form)
    list_queue(queues=LIST_QUEUES) -> [Entry]     cwd = the queue directory
    iter_queue(queues=LIST_QUEUES) -> Iterator[Entry]
    read_entry(queue_name, queue_id, path) -> Entry | None
    format_entry(entry, empty_sender) -> [line]
    format_listing(entries, cfg) -> str;  format_json(entry) -> str
    deferred_for_site(site) -> [queue_id];  flush_ids(queue_ids) -> moved count
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from pymaster.mail import queue, records
from pymaster.mail.delivery import read_status_log
from pymaster.util import log

LIST_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
STATUS_MARK = {"active": "*", "hold": "!"}
HEADING = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
RCPT_INDENT = " " * 41
LONG_HEADING = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"
LONG_RCPT_INDENT = " " * 47
SHORT_ID_MAX = 12
REASON_WIDTH = 76


@dataclass
class Rcpt:
    address: str
    orig: str = ""
    reason: str = ""


@dataclass
class Entry:
    """One message as the listing shows it."""
    queue_name: str
    queue_id: str
    arrival_time: float
    size: int
    file_size: int
    sender: str
    forced_expire: bool = False
    recipients: list[Rcpt] = field(default_factory=list)
    unreadable_uid: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        d = dict(d)
        d["recipients"] = [Rcpt(**r) for r in d.get("recipients", [])]
        return cls(**d)


# -- reading the queue ----------------------------------------------------------

def iter_queue(queues: Iterable[str] = LIST_QUEUES) -> Iterator[Entry]:
    """iter_queue - every complete, readable message in QUEUES, each queue in
    arrival order. Raises PermissionError when a queue cannot be read."""
    for name in queues:
        for queue_id, path in sorted(queue.scan(name)):
            entry = read_entry(name, queue_id, path)
            if entry is not None:
                yield entry


def list_queue(queues: Iterable[str] = LIST_QUEUES) -> list[Entry]:
    """list_queue - iter_queue as a list."""
    return list(iter_queue(queues))


def read_entry(queue_name: str, queue_id: str, path: str) -> Entry | None:
    """read_entry - the listing entry for one file; None when it is not ready."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not st.st_mode & 0o100:
        return None                     # still being written
    try:
        msg = records.read_message(path)
    except FileNotFoundError:
        return None                     # delivered while we looked
    except PermissionError:
        if queue_name != "maildrop":
            raise
        return Entry(queue_name, queue_id, st.st_mtime, st.st_size, st.st_size, "",
                     unreadable_uid=st.st_uid)
    except records.CorruptQueueFile as e:
        log.warning(f"{queue_name}/{queue_id}: {e.reason}")
        return None
    entry = Entry(queue_name, queue_id, msg.arrival_time, msg.size or st.st_size,
                  st.st_size, msg.sender,
                  forced_expire=msg.attrs.get("forced_expire", "") not in ("", "0", "no"))
    reasons = _defer_reasons(queue_id) if queue_name != "maildrop" else {}
    for r in msg.pending():
        reason = reasons.get(r.offset) or reasons.get(r.address, "")
        entry.recipients.append(Rcpt(r.address, r.orig, reason))
    return entry


def _defer_reasons(queue_id: str) -> dict:
    """_defer_reasons - the latest reason per recipient offset and address."""
    reasons: dict = {}
    for item in read_status_log(queue.defer_log_path(queue_id)):
        reason = item.get("reason", "")
        if item.get("offset", "").lstrip("-").isdigit():
            reasons[int(item["offset"])] = reason
        if item.get("recipient"):
            reasons[item["recipient"]] = reason
    return reasons


# -- formatting -------------------------------------------------------------------

def is_long_id(queue_id: str) -> bool:
    return len(queue_id) > SHORT_ID_MAX


def format_entry(e: Entry, empty_sender: str) -> list[str]:
    """format_entry - the lines of one message in the -p listing."""
    mark = STATUS_MARK.get(e.queue_name, " ")
    stamp = time.asctime(time.localtime(e.arrival_time))[:19]
    if is_long_id(e.queue_id):
        head, indent = f"{e.queue_id + mark:<17} {e.size:>8} {stamp}", LONG_RCPT_INDENT
    else:
        head, indent = f"{e.queue_id:<10}{mark}{e.size:>8} {stamp} ", RCPT_INDENT
    if e.unreadable_uid is not None:
        return [f"{head} (maildrop queue, sender UID {e.unreadable_uid})"]
    lines = [f"{head} {e.sender or empty_sender}"]
    # Deferred recipients first, each group under its reason, then the rest.
    groups: dict[str, list[str]] = {}
    for r in e.recipients:
        if r.reason:
            groups.setdefault(r.reason, []).append(r.address)
    for reason, addresses in groups.items():
        pad = max(0, REASON_WIDTH - len(reason))
        lines.append(" " * pad + f"({reason})")
        lines.extend(indent + a for a in addresses)
    lines.extend(indent + r.address for r in e.recipients if not r.reason)
    return lines


def format_listing(entries: list[Entry], cfg) -> str:
    """format_listing - the whole mailq output (the heading follows the
    first message's ID form)."""
    if not entries:
        return "Mail queue is empty\n"
    empty_sender = cfg.get("empty_address_recipient")
    heading = LONG_HEADING if is_long_id(entries[0].queue_id) else HEADING
    blocks = ["\n".join(format_entry(e, empty_sender)) for e in entries]
    kbytes = sum(e.size for e in entries) // 1024
    n = len(entries)
    return (heading + "\n" + "\n\n".join(blocks) + "\n"
            + f"\n-- {kbytes} Kbytes in {n} Request{'' if n == 1 else 's'}.\n")


def format_json(e: Entry) -> str:
    """format_json - one message as postqueue -j prints it."""
    rcpts = []
    for r in e.recipients:
        item = {"address": r.address}
        if r.orig and r.orig != r.address:
            item["orig_address"] = r.orig
        if r.reason:
            item["delay_reason"] = r.reason
        rcpts.append(item)
    obj = {"queue_name": e.queue_name, "queue_id": e.queue_id,
           "arrival_time": int(e.arrival_time), "message_size": e.size,
           "forced_expire": e.forced_expire, "sender": e.sender, "recipients": rcpts}
    return json.dumps(obj, ensure_ascii=False)     # ", " and ": " as Postfix writes them


# -- selecting messages to flush ------------------------------------------------------

def deferred_for_site(site: str) -> list[str]:
    """deferred_for_site - deferred messages with a pending recipient at SITE."""
    site = site.lower().strip("[]")
    found = []
    for queue_id, path in queue.scan("deferred"):
        try:
            msg = records.read_message(path)
        except (OSError, records.CorruptQueueFile):
            continue
        domains = {r.address.rpartition("@")[2].lower().strip("[]") for r in msg.pending()}
        if site in domains:
            found.append(queue_id)
    return found


def flush_ids(queue_ids: Iterable[str]) -> int:
    """flush_ids - move deferred QUEUE_IDS to incoming; how many moved."""
    moved = 0
    for queue_id in queue_ids:
        try:
            queue.move(queue_id, "deferred", "incoming")
            moved += 1
        except FileNotFoundError:
            pass
    return moved
