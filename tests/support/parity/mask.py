"""Masking what legitimately differs between two mail systems' output.

Queue IDs (Postfix's short hex or long form, pymaster's long form), process
IDs, timestamps, delays and sizes differ between any two runs; what remains
is the shape that administrators and log parsers depend on.

Interface:
    log_shapes(text, programs) -> set[str]   masked "postfix/smtpd[N]: ..." lines
    queue_ids(text) -> set[str]              the queue IDs a text mentions
    mask_ids(text, ids) -> str               each ID replaced by QUEUEID
    mask_reply(lines) -> list[str]           "queued as ID" masked
"""

from __future__ import annotations

import re

# "Nov 28 22:09:53 mx postfix/smtpd[6254]: text"
LOG_LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ (?P<tag>[\w./-]+)\[\d+\]: (?P<text>.*)$",
                      re.M)
# An ID where Postfix puts one: at the start of the text, before ": ".
ID_AT_START = re.compile(r"^([0-9A-Za-z]{10,16}): ")
QUEUED_AS = re.compile(r"queued as [0-9A-Za-z]+")
NUMBERS = [
    (re.compile(r"\bdelay=[\d.]+"), "delay=D"),
    (re.compile(r"\bdelays=[\d./]+"), "delays=D"),
    (re.compile(r"\bsize=\d+"), "size=S"),
    (re.compile(r"<\d{14}\.QUEUEID@"), "<DATE.QUEUEID@"),
]


def queue_ids(text: str) -> set[str]:
    """queue_ids - every ID that starts a log text or follows "queued as "."""
    ids = set()
    for m in LOG_LINE.finditer(text):
        found = ID_AT_START.match(m.group("text"))
        if found and found.group(1) != "NOQUEUE":
            ids.add(found.group(1))
    ids.update(m.group(0).split()[-1] for m in QUEUED_AS.finditer(text))
    return ids


def mask_ids(text: str, ids: set[str]) -> str:
    for qid in sorted(ids, key=len, reverse=True):
        text = text.replace(qid, "QUEUEID")
    return text


def log_shapes(text: str, programs: tuple[str, ...]) -> set[str]:
    """log_shapes - the masked lines of PROGRAMS ("smtpd", "qmgr" ...) in a log."""
    ids = queue_ids(text)
    shapes = set()
    for m in LOG_LINE.finditer(text):
        tag = m.group("tag")
        if tag.rsplit("/", 1)[-1] not in programs:
            continue
        line = f"{tag}[N]: {mask_ids(m.group('text'), ids)}"
        for regex, replacement in NUMBERS:
            line = regex.sub(replacement, line)
        shapes.add(line)
    return shapes


def mask_reply(lines: list[str]) -> list[str]:
    return [QUEUED_AS.sub("queued as QUEUEID", line) for line in lines]
