"""showq: the mail queue listing for users who may not read the spool, as
Postfix's showq(8).

master.cf: `showq unix n - n - - showq` (public/showq). It runs as the
mail_owner and takes no input but the request's op: `{"op": "list"}` is
answered with `{"status": "ok", "count": N}` and the entries as payload
frames, one JSON object per line (pymaster.mail.queuelist.Entry.to_dict), a
frame per FRAME_ENTRIES messages. postqueue -p / -j / mailq format them
exactly as they format a listing read from the spool directly. Who may ask
is postqueue's business (authorized_mailq_users, checked with the real uid
in the set-group-ID command): the service cannot know the caller.

Interface: main() (libexec/showq), pre_jail(svc) -> handler, run(svc),
handle(header, payload)
"""

from __future__ import annotations

import json

from pymaster.mail import queuelist
from pymaster.master import service
from pymaster.util import log

FRAME_ENTRIES = 1000


def handle(header: dict, payload: list) -> tuple[dict, list]:
    """handle - answer one listing request."""
    if header.get("op") != "list":
        return {"status": "error", "reason": f"unknown request: {header.get('op')}"}, []
    frames, lines, count = [], [], 0
    try:
        for entry in queuelist.iter_queue():
            lines.append(json.dumps(entry.to_dict(), separators=(",", ":")))
            count += 1
            if len(lines) >= FRAME_ENTRIES:
                frames.append("\n".join(lines).encode())
                lines = []
    except PermissionError as e:
        log.warning(f"cannot read the queue: {e}")
        return {"status": "error", "reason": "no permission to read the queue"}, []
    if lines:
        frames.append("\n".join(lines).encode())
    return {"status": "ok", "count": count}, frames


def pre_jail(svc: service.Service) -> service.Handler:
    """pre_jail - the request handler: showq opens nothing before it lists."""
    return handle


def run(svc: service.Service) -> None:
    """run - enter the jail, answer listing requests."""
    svc.serve_requests(svc.enter_jail(pre_jail))


def main() -> None:
    service.main("showq", run)
