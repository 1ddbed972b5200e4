"""cleanup's request handler: one `message` request in, one queue file out.

    header  {"op": "message", "sender", "recipients": [...], "attrs": {...},
             "flags": [...]}          (docs/architecture.md)
    payload the content frames: headers and body, LF line ends

Order of work, so that "ok" is never said for mail that is not safe:
  1. create the queue file in incoming/ (this fixes the queue ID, which
     the Message-Id: header and every log line carry), or, when the request
     names a `queue_id` that smtpd reserved (reservation.py), take over that
     file; a reservation that is gone (swept, postsuper -d) gets a new file
  2. the envelope stage (envelope.py): sender and recipients canonical,
     mapped, expanded, de-duplicated
  3. the header pipeline (headers.py), which may reject (too many hops,
     header_checks), the body checks (checks.py, MIME walk), then the
     recipients extracted for `sendmail -t` (flag "extract"), then the
     automatic copies (sender_bcc_maps, always_bcc)
  4. the disposition, decided before anything is visible to qmgr: DISCARD
     removes the file unwritten (the client still gets its queue ID), HOLD
     moves the incomplete file to hold/ before the completion mark
  5. write envelope and content, commit: fsync and the completion mark
  6. reply {"status": "ok", "queue_id"}, then wake qmgr: the wakeup waits
     until the reply has gone out (svc.after_reply), because a crash between
     the commit and the reply makes the client retry a message that will be
     delivered anyway ("451 and delivered anyway"), so that window holds
     nothing that can wait
Anything that goes wrong before the commit removes the file; a disk error
answers "defer" (the client keeps the mail and tries again).

Flags: "extract" (recipients from To:/Cc:/Bcc:, Bcc: removed).
Actions (smtpd's access results, actions.py): HOLD, DISCARD, FILTER,
REDIRECT, BCC as `"actions": [{"action": "HOLD", "text": "..."}]`.
Flags may also carry receive_override_options values (no_address_mappings).
Attributes the handler reads: origin, rewrite_context (local | remote;
default local), full_name (From: for local submissions). Top-level keys
besides the contract's: arrival_time (pickup: the maildrop file's time) and
uid (pickup: the submitter, for `Received: by HOST (Postfix, from userid N)`),
queue_id (smtpd: the reserved queue file), queue_id_placeholder (a client
without a reservation, sendmail -bs: the text in its Received: header that
stands for the queue ID).

Interface:
    handle_message(cfg, header, payload) -> (reply_header, reply_payload)
    make_handler(cfg, wake=True, later=None) -> handler for Service.serve_requests
                                     (also the `reserve` and `abandon` requests);
                                     LATER(fn) runs FN after the reply (svc.after_reply)
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

from pymaster.mail import endpoints, queue, records
from pymaster.mail.config import Config
from pymaster.mail.headers import encode, split_header_block
from pymaster.util import ipc, log

from .actions import DISCARD, HOLD, INCOMING, apply_envelope_actions, final_disposition
from .checks import check_body
from .envelope import process_copies, process_recipients, process_sender
from .headers import process_headers
from .milters import run_milters
from .reservation import handle_abandon, handle_reserve
from .state import NO_RECIPIENTS, TOO_BIG, WRITE_ERROR, CleanupError, CleanupState, Reject


def _recipients(items: Iterable[dict | str] | None) -> list[records.Recipient]:
    out = []
    for r in items or ():
        if isinstance(r, str):
            out.append(records.Recipient(r))
        else:
            out.append(records.Recipient(r.get("address", ""), r.get("orig", "") or "",
                                         r.get("notify", "") or "", r.get("orcpt", "") or ""))
    return out


def _attrs(raw: dict) -> dict[str, str]:
    """_attrs - request attributes as queue file strings (booleans as yes/no)."""
    out: dict[str, str] = {}
    for k, v in (raw or {}).items():
        if isinstance(v, bool):
            v = "yes" if v else "no"
        out[str(k)] = "" if v is None else str(v)
    return out


def handle_message(cfg: Config, header: dict, payload: list) -> tuple[dict, list]:
    """handle_message - queue one message; the reply for the client."""
    if header.get("op") != "message":
        return {"status": "error", "reason": f"unknown request: {header.get('op')}"}, []
    content = b"".join(bytes(f) for f in payload)
    limit = cfg.int("message_size_limit")
    if limit and len(content) > limit:
        return _refuse(Reject(*TOO_BIG))
    try:
        writer = _writer(str(header.get("queue_id") or ""))
    except OSError as e:
        log.warning(f"{INCOMING}: create queue file: {e.strerror or e}")
        return _refuse(CleanupError(*WRITE_ERROR), "defer")
    try:
        queue_id = _queue(cfg, writer, header, content)
    except CleanupError as e:
        writer.abort()
        return _refuse(e)
    except OSError as e:
        writer.abort()
        log.warning(f"{writer.queue_id}: queue file write error: {e.strerror or e}")
        return _refuse(CleanupError(*WRITE_ERROR), "defer")
    except BaseException:
        writer.abort()
        raise
    return {"status": "ok", "queue_id": queue_id}, []


def _writer(reserved: str) -> queue.QueueWriter:
    """_writer - the file smtpd reserved, else a new one."""
    if reserved:
        try:
            return queue.open_reserved(INCOMING, reserved)
        except FileNotFoundError:
            writer = queue.create(INCOMING)
            # The client logged the reserved ID: tie the two together.
            log.warning(f"{reserved}: reserved queue file is gone; "
                        f"the message is queued as {writer.queue_id}")
            return writer
    return queue.create(INCOMING)


def _refuse(err: CleanupError, status: str | None = None) -> tuple[dict, list]:
    answer: dict[str, object] = {"status": status or err.status, "dsn": err.dsn,
                                 "reason": err.reason}
    if err.code is not None:
        answer["code"] = err.code
    return answer, []


def _queue(cfg: Config, writer: queue.QueueWriter, header: dict, content: bytes) -> str:
    """_queue - process and write one message; the committed queue ID."""
    attrs = _attrs(header.get("attrs", {}))
    arrival = float(header.get("arrival_time") or attrs.pop("arrival_time", 0) or time.time())
    state = CleanupState(cfg, writer.queue_id, header.get("sender") or "", [], attrs,
                         set(header.get("flags") or ()), arrival)
    state.queue_id_placeholder = str(header.get("queue_id_placeholder") or "")
    if header.get("uid") is not None:
        state.submit_uid = int(header["uid"])
    process_sender(state)
    process_recipients(state, _recipients(header.get("recipients")))
    headers, body_offset = split_header_block(content)
    new_headers = process_headers(state, headers)
    body = check_body(state, headers, content[body_offset:])
    process_recipients(state, _extracted(state))
    if state.recipients:
        process_copies(state)
    actions = [a for a in header.get("actions") or () if isinstance(a, dict)]
    actions += state.check_actions
    apply_envelope_actions(state, actions)
    new_headers, body = run_milters(state, actions, new_headers, body, content, body_offset)
    if not state.recipients:
        raise Reject(*NO_RECIPIENTS)
    # Every verdict is in: decide where the file goes before qmgr can see it.
    where = final_disposition(actions)
    if where == DISCARD:
        writer.abort()              # accepted, and never queued
        return writer.queue_id
    writer.write_envelope(arrival, state.sender, state.recipients, state.attrs)
    if body is not None:
        content, body_offset = content[:body_offset] + body, body_offset
    writer.write_content(_content_chunks(new_headers, content, body_offset))
    return writer.commit(HOLD if where == HOLD else None)


def _extracted(state: CleanupState) -> list[records.Recipient]:
    """_extracted - recipients from headers (the Resent- ones win when present)."""
    use_resent = any(resent for resent, _ in state.extracted)
    return [records.Recipient(addr) for resent, addr in state.extracted
            if resent == use_resent and addr]


def _content_chunks(headers: list[str], content: bytes, body_offset: int) -> Iterable[bytes]:
    """_content_chunks - new header block, the empty line, the body untouched.

    A body that followed the headers without an empty line gets one, so
    the header/body boundary cannot move when headers are added; content
    without any header stays exactly as it came."""
    yield encode("".join(headers))
    head = content[:body_offset]
    separator = head in (b"\n", b"\r\n") or head.endswith((b"\n\n", b"\n\r\n"))
    if separator or (headers and body_offset < len(content)):
        yield b"\n"
    if body_offset < len(content):
        yield bytes(memoryview(content)[body_offset:])


def make_handler(cfg: Config, wake: bool = True,
                 later: Callable[[Callable[[], None]], None] | None = None
                 ) -> Callable[[dict, list], tuple[dict, list]]:
    """make_handler - the service's request handler; wakes qmgr after each
    queued message, through LATER (after the reply) when given."""
    # One kept socket: a new connection per message cost more than the wakeup.
    qmgr = ipc.OneWay(endpoints.endpoint(cfg, "qmgr"))
    others = {"reserve": handle_reserve, "abandon": handle_abandon}

    def wakeup() -> None:
        qmgr.send({"op": "wakeup"})

    def handler(header: dict, payload: list) -> tuple[dict, list]:
        if header.get("op") in others:
            return others[header["op"]](cfg, header)
        reply, reply_payload = handle_message(cfg, header, payload)
        if wake and reply.get("status") == "ok":
            if later is not None:
                later(wakeup)
            else:
                wakeup()
        return reply, reply_payload
    return handler
