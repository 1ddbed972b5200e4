"""postcat: show the contents of queue files, as Postfix's postcat(1).

    postcat [-bdehoqv] [-c config_dir] [files ...]
    postcat -q queue_id ...

With no part selected, everything is shown, in sections:

    *** ENVELOPE RECORDS deferred/X/ID ***
    message_size:              18             143               2
    message_arrival_time: Sat Nov 28 20:03:44 2026
    named_attribute: rewrite_context=local
    sender: a@example.com
    original_recipient: B@example.org
    recipient: b@example.org
    *** MESSAGE CONTENTS deferred/X/ID ***
    Subject: …
    *** HEADER EXTRACTED deferred/X/ID ***
    *** MESSAGE FILE END deferred/X/ID ***

-e the envelope, -h the headers (up to the first line that is not a header),
-b the body (from that line on); -h and -b alone print the content without
section markers. -o prefixes each line with its file offset. -q takes queue
IDs and searches the queues; otherwise arguments are paths (relative to the
current directory), and with none, standard input is read. A damaged file is
shown as far as it is readable, then `postcat: fatal: …` and exit 1.

Interface: main(argv=None) -> exit status; show(path, label, parts, offsets, out)
"""

from __future__ import annotations

import getopt
import io
import os
import sys
import time
from typing import BinaryIO, TextIO

from pymaster.commands import getopt_message
from pymaster import log, queue, records
from pymaster.config import ConfigError, load_config

USAGE = "usage: postcat [-b (body)] [-c config_dir] [-d (decimal record type)] " \
        "[-e (envelope)] [-h (header)] [-o (offsets)] [-q (access queue)] [-v] [file(s)...]"
SEARCH_QUEUES = ("incoming", "active", "deferred", "hold", "maildrop", "corrupt")
# What postcat calls each envelope record type.
LABELS = {
    records.REC_SENDER: "sender",
    records.REC_ORIG: "original_recipient",
    records.REC_RCPT: "recipient",
    records.REC_DONE: "done_recipient",
}


def asctime(when: float) -> str:
    return time.asctime(time.localtime(when))


def _envelope_line(rtype: bytes, data: bytes) -> str:
    text = data.decode("utf-8", "surrogateescape")
    if rtype == records.REC_SIZE:
        return "message_size: " + text
    if rtype == records.REC_TIME:
        try:
            return "message_arrival_time: " + asctime(float(text))
        except ValueError:
            return "message_arrival_time: " + text
    if rtype == records.REC_ATTR:
        return "named_attribute: " + text
    if rtype == records.REC_NOTIFY:
        return "named_attribute: notify_flags=" + text
    if rtype == records.REC_ORCPT:
        return "named_attribute: dsn_orig_rcpt=" + text
    return f"{LABELS.get(rtype, 'record')}: {text}"


def _content_lines(content: bytes, base: int) -> list[tuple[int, bytes, bool]]:
    """_content_lines - (offset, line, is_header) for every content line."""
    out = []
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


class Printer:
    """Writes postcat's lines, with or without offsets."""

    def __init__(self, out: TextIO, offsets: bool) -> None:
        self.out = out
        self.offsets = offsets

    def line(self, text: str, offset: int | None = None) -> None:
        if self.offsets and offset is not None:
            self.out.write(f"{offset:9d} {text}\n")
        else:
            self.out.write(text + "\n")

    def raw(self, line: bytes, offset: int) -> None:
        text = line.decode("utf-8", "surrogateescape").rstrip("\n")
        self.line(text, offset)


def show(path: str, label: str, parts: set[str], offsets: bool, out: TextIO) -> None:
    """show - print PATH's selected PARTS ("e", "h", "b"); raises CorruptQueueFile."""
    with open(path, "rb") as f:
        show_file(f, os.fstat(f.fileno()).st_size, path, label, parts, offsets, out)


def show_file(f: BinaryIO, size: int, path: str, label: str, parts: set[str],
              offsets: bool, out: TextIO) -> None:
    """show_file - show() for an open file of SIZE bytes."""
    p = Printer(out, offsets)
    markers = "e" in parts
    extracted = False
    if markers:
        p.line(f"*** ENVELOPE RECORDS {label} ***")
    for offset, rtype, data, length in records.walk_records(path, f, size):
        if rtype == records.REC_CONTENT:
            here = f.tell()
            f.seek(offset + records.HEADER_SIZE)
            content = f.read(length)
            f.seek(here)
            _show_content(p, content, offset + records.HEADER_SIZE, parts, label)
            extracted = True
            if markers:
                p.line(f"*** HEADER EXTRACTED {label} ***")
        elif rtype == records.REC_END:
            if markers:
                p.line(f"*** MESSAGE FILE END {label} ***")
            return
        elif markers:
            p.line(_envelope_line(rtype, data), offset)
    raise records.CorruptQueueFile(path, "truncated: no end record" if extracted
                                   else "no message content record")


def _show_content(p: Printer, content: bytes, base: int, parts: set[str], label: str) -> None:
    if "e" in parts:
        p.line(f"*** MESSAGE CONTENTS {label} ***")
    if "h" not in parts and "b" not in parts:
        return
    for offset, line, is_header in _content_lines(content, base):
        if (is_header and "h" in parts) or (not is_header and "b" in parts):
            p.raw(line, offset)


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
        opts, args = getopt.getopt(argv, "bc:dehoqv")
    except getopt.GetoptError as e:
        log.setup("postcat", stderr=True)
        sys.stderr.write(f"postcat: {getopt_message(e)}\n")
        log.fatal(USAGE)
    settings = {"parts": set(), "offsets": False, "by_id": False, "config_dir": None}
    for opt, value in opts:
        if opt in ("-b", "-e", "-h"):
            settings["parts"].add(opt[1])
        elif opt == "-o":
            settings["offsets"] = True
        elif opt == "-q":
            settings["by_id"] = True
        elif opt == "-c":
            settings["config_dir"] = value
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = _parse(sys.argv[1:] if argv is None else argv)
    parts = settings["parts"] or {"e", "h", "b"}
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
        return _show_stdin(parts, settings["offsets"])
    for arg in args:
        path, label = _locate(arg, settings["by_id"])
        _show_one(path, label, parts, settings["offsets"])
    return 0


def _show_one(path: str, label: str, parts: set[str], offsets: bool,
              data: bytes | None = None) -> None:
    try:
        if data is None:
            show(path, label, parts, offsets, sys.stdout)
        else:
            show_file(io.BytesIO(data), len(data), path, label, parts, offsets, sys.stdout)
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


def _show_stdin(parts: set[str], offsets: bool) -> int:
    """_show_stdin - postcat with no file arguments reads a queue file on stdin."""
    _show_one("-", "-", parts, offsets, sys.stdin.buffer.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
