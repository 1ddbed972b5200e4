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

import functools
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from pymaster.mail import queue, records
from pymaster.util import forkjoin, log

LIST_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
STATUS_MARK = {"active": "*", "hold": "!"}
HEADING = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
RCPT_INDENT = " " * 41
LONG_HEADING = "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"
LONG_RCPT_INDENT = " " * 47
SHORT_ID_MAX = 12
REASON_WIDTH = 76
# Below this many files a second process costs more than it saves.
SPLIT_MIN = 2000


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
        """to_dict - what asdict gives, in its field order, without its deep copies."""
        return {"queue_name": self.queue_name, "queue_id": self.queue_id,
                "arrival_time": self.arrival_time, "size": self.size,
                "file_size": self.file_size, "sender": self.sender,
                "forced_expire": self.forced_expire,
                "recipients": [{"address": r.address, "orig": r.orig, "reason": r.reason}
                               for r in self.recipients],
                "unreadable_uid": self.unreadable_uid}

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


def queue_files(queues: Iterable[str] = LIST_QUEUES) -> list[tuple[str, str, str]]:
    """queue_files - (queue name, queue ID, path) of every file iter_queue reads,
    in its order. Raises PermissionError when a queue cannot be read."""
    return [(name, queue_id, path) for name in queues
            for queue_id, path in sorted(queue.scan(name))]


def read_entry(queue_name: str, queue_id: str, path: str) -> Entry | None:
    """read_entry - the listing entry for one file; None when it is not ready.

    One open, fstat and read per file (a listing of 100,000 messages is
    mostly system calls): the envelope is taken from the bytes read by
    _envelope, and any file it does not recognise as a plain, well-formed
    queue file is read again by records.read_message, which says what is
    wrong with it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except PermissionError as e:
        return _unreadable_entry(queue_name, queue_id, path, e)
    try:
        st = os.fstat(fd)
        if not st.st_mode & 0o100:
            return None                 # still being written
        data = os.read(fd, st.st_size) if st.st_size <= records.WHOLE_READ else b""
    finally:
        os.close(fd)
    found = _envelope(data) if len(data) == st.st_size else None
    if found is None:
        return _slow_entry(queue_name, queue_id, path, st)
    arrival, sender, size, forced, rcpts = found
    entry = Entry(queue_name, queue_id, arrival, size or st.st_size, st.st_size, sender,
                  forced_expire=forced)
    _add_recipients(entry, rcpts)
    return entry


def _unreadable_entry(queue_name: str, queue_id: str, path: str,
                      error: PermissionError) -> Entry | None:
    """_unreadable_entry - a file we may not open: another user's maildrop file
    (ERROR raised again for any other queue)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if not st.st_mode & 0o100:
        return None
    if queue_name != "maildrop":
        raise error
    return Entry(queue_name, queue_id, st.st_mtime, st.st_size, st.st_size, "",
                 unreadable_uid=st.st_uid)


def _slow_entry(queue_name: str, queue_id: str, path: str, st: os.stat_result) -> Entry | None:
    """_slow_entry - the entry of a big or unusual file, through the full reader."""
    try:
        msg = records.read_message(path)
    except FileNotFoundError:
        return None                     # delivered while we looked
    except PermissionError as e:
        return _unreadable_entry(queue_name, queue_id, path, e)
    except records.CorruptQueueFile as e:
        log.warning(f"{queue_name}/{queue_id}: {e.reason}")
        return None
    entry = Entry(queue_name, queue_id, msg.arrival_time, msg.size or st.st_size,
                  st.st_size, msg.sender,
                  forced_expire=msg.attrs.get("forced_expire", "") not in ("", "0", "no"))
    _add_recipients(entry, [(r.offset, r.address, r.orig) for r in msg.pending()])
    return entry


def _add_recipients(entry: Entry, rcpts: list[tuple[int, str, str]]) -> None:
    """_add_recipients - ENTRY's pending recipients, each with its deferral reason."""
    reasons = _defer_reasons(entry.queue_id) if entry.queue_name != "maildrop" else {}
    for offset, address, orig in rcpts:
        reason = (reasons.get(offset) or reasons.get(address, "")) if reasons else ""
        entry.recipients.append(Rcpt(address, orig, reason))


_HEADER = records.HEADER
# The three defer log fields the listing uses, each at the start of a line
# as str.splitlines (which read_status_log uses) cuts them: the same line
# breaks, so a value is what the reader of the whole log would see.
_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_LOG_FIELD = re.compile(f"(?:^|(?<=[{_BREAKS}]))(recipient|offset|reason)=([^{_BREAKS}]*)")
_ENVELOPE_TYPES = frozenset(b"TASONQRD")


def _envelope(data: bytes) -> tuple[float, str, int, bool, list] | None:
    """_envelope - (arrival, sender, size, forced_expire, [(offset, rcpt, orig)])
    from a whole queue file's bytes, or None for anything but a plain file.

    Only what the listing shows is decoded. None sends the file to
    records.read_message, so every check it makes on an odd file still holds;
    a file passed here is one it reads the same way."""
    end = len(data)
    if end < 52 or data[0] != 0x43:                 # C, 47 bytes of sizes
        return None
    ctype, clen = _HEADER.unpack_from(data, 0)
    fields = data[5:5 + clen].split()
    if clen != records.SIZE_DATA_LEN or len(fields) != 3 \
            or not all(x.isdigit() for x in fields):
        return None
    arrival, sender, forced, orig = 0.0, b"", b"", b""
    rcpts: list = []
    content_offset = content_length = -1
    pos = 5 + clen
    while pos + 5 <= end:
        rtype, length = _HEADER.unpack_from(data, pos)
        start = pos + 5
        if start + length > end:
            return None
        t = rtype[0]
        if t == 0x4D:                               # M: the content, skipped
            if content_offset >= 0:
                return None
            content_offset, content_length = start, length
        elif t == 0x45:                             # E
            if content_offset < 0 or (int(fields[0]), int(fields[1])) != \
                    (content_length, content_offset):
                return None
            return (arrival, sender.decode("utf-8", "surrogateescape"),
                    content_length, forced not in (b"", b"0", b"no"), rcpts)
        elif t not in _ENVELOPE_TYPES or length > records.MAX_ENVELOPE_RECORD:
            return None
        else:
            value = data[start:start + length]
            if t == 0x52:                           # R: pending recipient
                rcpts.append((pos, value.decode("utf-8", "surrogateescape"),
                              orig.decode("utf-8", "surrogateescape")))
                orig = b""
            elif t == 0x44:                         # D: done
                orig = b""
            elif t == 0x4F:                         # O
                orig = value
            elif t == 0x53:                         # S
                sender = value
            elif t == 0x54:                         # T
                try:
                    arrival = float(value)
                except ValueError:
                    return None
            elif t == 0x41:                         # A
                name, eq, rest = value.partition(b"=")
                if not eq or not name:
                    return None
                if name == b"forced_expire":
                    forced = rest
        pos = start + length
    return None


def _defer_reasons(queue_id: str) -> dict:
    """_defer_reasons - the latest reason per recipient offset and address.

    The defer log is read as read_status_log reads it (blocks of name=value
    lines), with one open and read, and only the three names used here."""
    try:
        fd = os.open(queue.defer_log_path(queue_id), os.O_RDONLY)
    except FileNotFoundError:
        return {}
    try:
        chunks = [os.read(fd, 65536)]
        while len(chunks[-1]) == 65536:         # a log this long is rare
            chunks.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    reasons: dict = {}
    text = b"".join(chunks).decode("utf-8", "surrogateescape")
    if "\r" in text:                   # the text mode reader's universal newlines
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        item = dict(_LOG_FIELD.findall(block))
        offset = item.get("offset", "")
        if offset.lstrip("-").isdigit():
            reasons[int(offset)] = item.get("reason", "")
        if item.get("recipient"):
            reasons[item["recipient"]] = item.get("reason", "")
    return reasons


# -- formatting -------------------------------------------------------------------

def is_long_id(queue_id: str) -> bool:
    return len(queue_id) > SHORT_ID_MAX


def format_entry(e: Entry, empty_sender: str) -> list[str]:
    """format_entry - the lines of one message in the -p listing."""
    mark = STATUS_MARK.get(e.queue_name, " ")
    stamp = _stamp(e.arrival_time)
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


@functools.lru_cache(maxsize=4096)
def _arrival_stamp(second: int) -> str:
    return time.asctime(time.localtime(second))[:19]


def _stamp(arrival_time: float) -> str:
    """_stamp - the arrival time as the listing shows it (a queue's messages
    often share their second: the conversion is cached by second)."""
    return _arrival_stamp(math.floor(arrival_time))


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


def spool_listing(cfg, as_json: bool) -> str:
    """spool_listing - the whole -p listing (or the -j lines) read from the
    spool, the files shared out between two processes where that is faster
    (pymaster.util.forkjoin). Raises PermissionError as iter_queue does."""
    empty_sender = cfg.get("empty_address_recipient")
    parts = [_Part.decode(data) for data in forkjoin.split(
        queue_files(), lambda files: _Part.render(files, as_json, empty_sender).encode(),
        SPLIT_MIN)]
    if as_json:
        return "".join(part.text for part in parts)
    count = sum(part.count for part in parts)
    if not count:
        return "Mail queue is empty\n"
    first = next(part.first_id for part in parts if part.count)
    heading = LONG_HEADING if is_long_id(first) else HEADING
    kbytes = sum(part.size for part in parts) // 1024
    body = "\n\n".join(part.text for part in parts if part.count)
    return (heading + "\n" + body + "\n"
            + f"\n-- {kbytes} Kbytes in {count} Request{'' if count == 1 else 's'}.\n")


@dataclass
class _Part:
    """The listing of a run of files: its text and what the summary needs."""
    count: int
    size: int
    first_id: str
    text: str

    @classmethod
    def render(cls, files: Sequence[tuple[str, str, str]], as_json: bool,
               empty_sender: str) -> "_Part":
        entries = [e for e in (read_entry(*f) for f in files) if e is not None]
        if as_json:
            text = "".join([format_json(e) + "\n" for e in entries])
        else:
            text = "\n\n".join(["\n".join(format_entry(e, empty_sender)) for e in entries])
        return cls(len(entries), sum(e.size for e in entries),
                   entries[0].queue_id if entries else "", text)

    def encode(self) -> bytes:
        head = f"{self.count} {self.size} {self.first_id}\n"
        return (head + self.text).encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, data: bytes) -> "_Part":
        head, _, text = data.decode("utf-8", "surrogateescape").partition("\n")
        count, size, first_id = (head.split(" ") + [""])[:3]
        return cls(int(count), int(size), first_id, text)


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
    return _JSON.encode(obj)            # ", " and ": " as Postfix writes them


# json.dumps builds an encoder per call when given any option.
_JSON = json.JSONEncoder(ensure_ascii=False)


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
