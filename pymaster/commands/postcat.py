"""postcat: show the contents of queue files, as Postfix's postcat(1).

    postcat [-bdehoqrv] [-c config_dir] [-s offset] [files ...]
    postcat -q queue_id ...

With no part selected, everything is shown, in sections, line for line in
the shape Postfix 3.7 prints (administrators' scripts parse it):

    *** ENVELOPE RECORDS deferred/X/ID ***
    message_size:              18             143               2
    message_arrival_time: Sat Nov 28 20:03:44 2026
    named_attribute: rewrite_context=local
    named_attribute: log_client_name=localhost
    sender: a@example.com
    named_attribute: notify_flags=6
    named_attribute: dsn_orig_rcpt=rfc822;B@example.org
    original_recipient: B@example.org
    recipient: b@example.org
    *** MESSAGE CONTENTS deferred/X/ID ***
    Subject: ...
    *** HEADER EXTRACTED deferred/X/ID ***
    *** MESSAGE FILE END deferred/X/ID ***

pymaster's queue file keeps its own attribute names and values (the format
belongs to pymaster/mail/records.py); they are shown under Postfix's names
(POSTFIX_ATTRS: envid as envelope_id, ret as ret_flags=1|2, NOTIFY as the
numeric notify_flags, the client attributes as both log_client_name and
client_name ...), content_filter and full_name as the records Postfix keeps
them in, and an empty attribute (which Postfix would not write) not at all.

-e the envelope (with every section marker), -h the headers (up to the
first line that is not a header), -b the body (from that line on); -h and
-b without -e print the content without markers. -o prefixes each line with
its file offset, -d with Postfix's decimal record type, -v names the record
type of content lines (regular_text:). -s OFFSET shows only what starts at
or after OFFSET (no ENVELOPE RECORDS banner then). -r (records in file
order) is accepted: pymaster's files have no pointer records. -q takes
queue IDs and searches the queues; otherwise arguments are paths (relative
to the current directory), and with none, standard input is read. A damaged
file is shown as far as it is readable, then `postcat: fatal: ...`, exit 1.

Interface: main(argv=None) -> exit status;
           show(path, label, parts, offsets, out, view=None)
           View(offsets, decimal, symbolic, start)   how lines are printed
"""

from __future__ import annotations

import getopt
import io
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

from pymaster.commands import getopt_message
from pymaster.mail import queue, records
from pymaster.mail.config import ConfigError, load_config
from pymaster.util import log

USAGE = ("usage: postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] "
         "[-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]")
SEARCH_QUEUES = ("incoming", "active", "deferred", "hold", "maildrop", "corrupt")

# Postfix's record types (rec_type.h): what -d prints for each line.
T_SIZE, T_TIME, T_ATTR, T_FROM, T_ORCP, T_RCPT, T_DONE = b"C", b"T", b"A", b"S", b"O", b"R", b"D"
T_FULL, T_FILT, T_MESG, T_NORM, T_XTRA, T_END = b"F", b"L", b"M", b"N", b"X", b"E"
# Our envelope records that Postfix has too: its type and postcat's label.
RECORD_LABELS = {
    records.REC_SENDER: (T_FROM, "sender"),
    records.REC_ORIG: (T_ORCP, "original_recipient"),
    records.REC_RCPT: (T_RCPT, "recipient"),
    records.REC_DONE: (T_DONE, "done_recipient"),
}
# Our attribute names -> the names Postfix's queue files use (mail_proto.h).
# Postfix keeps the client twice, as logged (log_*) and as seen (client_*);
# pymaster has one set, the logged one (XFORWARD applied), shown as both.
POSTFIX_ATTRS = {
    "log_queue_id": ("log_ident",),
    "envid": ("envelope_id",),
    "ret": ("ret_flags",),
    "body": ("encoding",),
    "client_name": ("log_client_name", "client_name"),
    "client_address": ("log_client_address", "client_address"),
    "client_port": ("log_client_port", "client_port"),
    "helo_name": ("log_helo_name", "helo_name"),
    "protocol": ("log_protocol_name", "protocol_name"),
}
POSTFIX_VALUES = {
    "ret": {"FULL": "1", "HDRS": "2"},              # DSN_RET_FULL, DSN_RET_HDRS
    "body": {"8BITMIME": "8bit", "7BIT": "7bit"},
}
# Attributes that Postfix keeps in records of their own.
RECORD_ATTRS = {"content_filter": (T_FILT, "content_filter"),
                "full_name": (T_FULL, "sender_fullname")}
NOTIFY_BITS = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}   # dsn_mask.h


def asctime(when: float) -> str:
    return time.asctime(time.localtime(when))


def envelope_lines(rtype: bytes, data: bytes) -> list[tuple[bytes, str]]:
    """envelope_lines - (Postfix record type, text) for one envelope record."""
    text = data.decode("utf-8", "surrogateescape")
    if rtype == records.REC_SIZE:
        return [(T_SIZE, "message_size: " + text)]
    if rtype == records.REC_TIME:
        try:
            return [(T_TIME, "message_arrival_time: " + asctime(float(text)))]
        except ValueError:
            return [(T_TIME, "message_arrival_time: " + text)]
    if rtype == records.REC_ATTR:
        name, _, value = text.partition("=")
        return attribute_lines(name, value)
    if rtype == records.REC_NOTIFY:
        return [(T_ATTR, "named_attribute: notify_flags=" + notify_flags(text))]
    if rtype == records.REC_ORCPT:
        return [(T_ATTR, "named_attribute: dsn_orig_rcpt=" + text)]
    code, label = RECORD_LABELS.get(rtype, (rtype, "record"))
    return [(code, f"{label}: {text}")]


def attribute_lines(name: str, value: str) -> list[tuple[bytes, str]]:
    """attribute_lines - one of our attributes as Postfix's postcat shows it."""
    if not value:       # Postfix writes no empty attribute
        return []
    if name in RECORD_ATTRS:
        code, label = RECORD_ATTRS[name]
        return [(code, f"{label}: {value}")]
    value = POSTFIX_VALUES.get(name, {}).get(value.upper(), value)
    return [(T_ATTR, f"named_attribute: {n}={value}") for n in POSTFIX_ATTRS.get(name, (name,))]


def notify_flags(text: str) -> str:
    """notify_flags - "SUCCESS,FAILURE" as Postfix's bit mask ("6")."""
    words = [w.strip().upper() for w in text.split(",") if w.strip()]
    if not words or any(w not in NOTIFY_BITS for w in words):
        return text
    return str(sum(NOTIFY_BITS[w] for w in set(words)))


def _content_lines(content: bytes, base: int) -> list[tuple[int, bytes, bool]]:
    """_content_lines - (offset, line, is_header) for every content line."""
    out: list[tuple[int, bytes, bool]] = []
    in_header = True
    pos = 0
    for line in content.splitlines(keepends=True):
        if in_header and not _is_header_line(line, bool(out)):
            in_header = False
        out.append((base + pos, line, in_header))
        pos += len(line)
    return out


def _is_header_line(line: bytes, have_previous: bool) -> bool:
    """_is_header_line - a `Name:` line, or a continuation of the previous one."""
    stripped = line.rstrip(b"\r\n")
    if not stripped:
        return False
    if stripped[:1] in (b" ", b"\t"):
        return have_previous
    name, colon, _ = stripped.partition(b":")
    return bool(colon) and bool(name) and all(33 <= c <= 126 for c in name)


@dataclass
class View:
    """How lines are printed: -o offsets, -d decimal record types, -v record
    type names on content lines, -s the first offset shown."""
    offsets: bool = False
    decimal: bool = False
    symbolic: bool = False
    start: int = 0


class Printer:
    """Writes postcat's lines as the View says."""

    def __init__(self, out: TextIO, view: View) -> None:
        self.out = out
        self.view = view

    def banner(self, text: str) -> None:
        """banner - the ENVELOPE RECORDS line: no offset, no type, not with -s."""
        if not self.view.start:
            self.out.write(text + "\n")

    def line(self, text: str, offset: int, rtype: bytes) -> None:
        if offset < self.view.start:
            return
        prefix = f"{offset:9d} " if self.view.offsets else ""
        if self.view.decimal:
            prefix += f"{rtype[0]:3d} "
        self.out.write(prefix + text + "\n")

    def content(self, line: bytes, offset: int) -> None:
        text = line.decode("utf-8", "surrogateescape").rstrip("\n")
        self.line(f"regular_text: {text}" if self.view.symbolic else text, offset, T_NORM)


def show(path: str, label: str, parts: set[str], offsets: bool, out: TextIO,
         view: View | None = None) -> None:
    """show - print PATH's selected PARTS ("e", "h", "b"); raises CorruptQueueFile."""
    with open(path, "rb") as f:
        show_file(f, os.fstat(f.fileno()).st_size, path, label, parts,
                  view or View(offsets=offsets), out)


def show_file(f: BinaryIO, size: int, path: str, label: str, parts: set[str],
              view: View, out: TextIO) -> None:
    """show_file - show() for an open file of SIZE bytes."""
    p = Printer(out, view)
    markers = "e" in parts
    extracted = False
    held: list[tuple[int, bytes]] = []      # original_recipient, shown next to its recipient
    if markers:
        p.banner(f"*** ENVELOPE RECORDS {label} ***")
    for offset, rtype, data, length in records.walk_records(path, f, size):
        if rtype == records.REC_ORIG:
            # Postfix writes a recipient's DSN attributes before its
            # original_recipient, which the recipient follows at once.
            held.append((offset, data))
            continue
        if rtype not in (records.REC_NOTIFY, records.REC_ORCPT):
            for orig_offset, orig in held if markers else ():
                p.line(envelope_lines(records.REC_ORIG, orig)[0][1], orig_offset, T_ORCP)
            held.clear()
        if rtype == records.REC_CONTENT:
            here = f.tell()
            f.seek(offset + records.HEADER_SIZE)
            content = f.read(length)
            f.seek(here)
            if markers:
                p.line(f"*** MESSAGE CONTENTS {label} ***", offset, T_MESG)
            _show_content(p, content, offset + records.HEADER_SIZE, parts)
            extracted = True
            if markers:
                p.line(f"*** HEADER EXTRACTED {label} ***",
                       offset + records.HEADER_SIZE + length, T_XTRA)
        elif rtype == records.REC_END:
            if markers:
                p.line(f"*** MESSAGE FILE END {label} ***", offset, T_END)
            return
        elif markers:
            for code, text in envelope_lines(rtype, data):
                p.line(text, offset, code)
    raise records.CorruptQueueFile(path, "truncated: no end record" if extracted
                                   else "no message content record")


def _show_content(p: Printer, content: bytes, base: int, parts: set[str]) -> None:
    if "h" not in parts and "b" not in parts:
        return
    for offset, line, is_header in _content_lines(content, base):
        if (is_header and "h" in parts) or (not is_header and "b" in parts):
            p.content(line, offset)


def _locate(arg: str, by_id: bool) -> tuple[str, str]:
    """_locate - (path, label) for a queue ID (-q) or a path argument."""
    if not by_id:
        return arg, arg
    if not queue.is_queue_id(arg):
        log.fatal(f"open queue file {arg}: bad queue ID")
    found = queue.find(arg, SEARCH_QUEUES)
    if found is None:
        log.fatal(f"open queue file {arg}: No such file or directory")
    return found[1], found[1]


def _parse(argv: list[str]) -> tuple[dict, list[str]]:
    try:
        opts, args = getopt.getopt(argv, "bc:dehoqrs:v")
    except getopt.GetoptError as e:
        log.setup("postcat", stderr=True)
        sys.stderr.write(f"postcat: {getopt_message(e)}\n")
        log.fatal(USAGE)
    settings: dict[str, Any] = {"parts": set(), "view": View(), "by_id": False,
                                "config_dir": None}
    view = settings["view"]
    for opt, value in opts:
        if opt in ("-b", "-e", "-h"):
            settings["parts"].add(opt[1])
        elif opt == "-o":
            view.offsets = True
        elif opt == "-d":
            view.decimal = True
        elif opt == "-v":
            view.symbolic = True
        elif opt == "-s":
            view.start = _offset(value)
        elif opt == "-q":
            settings["by_id"] = True
        elif opt == "-c":
            settings["config_dir"] = value
    return settings, args


def _offset(text: str) -> int:
    """_offset - the -s argument: a file offset, 0 or more."""
    if not text.isdigit():
        log.setup("postcat", stderr=True)
        log.fatal(f"bad offset: {text}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    settings, args = _parse(sys.argv[1:] if argv is None else argv)
    parts = settings["parts"] or {"e", "h", "b"}
    view = settings["view"]
    log.setup("postcat", stderr=True)
    if settings["by_id"]:
        try:
            cfg = load_config(settings["config_dir"])
        except ConfigError as e:
            log.fatal(str(e))
        log.setup("postcat", cfg, stderr=True)
        queue.enter_spool(cfg)
        if not args:
            log.fatal("no queue ID specified")
    elif not args:
        return _show_stdin(parts, view)
    for arg in args:
        path, label = _locate(arg, settings["by_id"])
        _show_one(path, label, parts, view)
    return 0


def _show_one(path: str, label: str, parts: set[str], view: View,
              data: bytes | None = None) -> None:
    try:
        if data is None:
            show(path, label, parts, view.offsets, sys.stdout, view)
        else:
            show_file(io.BytesIO(data), len(data), path, label, parts, view, sys.stdout)
    except FileNotFoundError:
        sys.stdout.flush()
        log.fatal(f"open {path}: No such file or directory")
    except OSError as e:
        sys.stdout.flush()
        log.fatal(f"open {path}: {e.strerror}")
    except records.CorruptQueueFile as e:
        sys.stdout.flush()
        log.fatal(f"{label}: {e.reason}")
    sys.stdout.flush()


def _show_stdin(parts: set[str], view: View) -> int:
    """_show_stdin - postcat with no file arguments reads a queue file on stdin."""
    _show_one("-", "-", parts, view, sys.stdin.buffer.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
