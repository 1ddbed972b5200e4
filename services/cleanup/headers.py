"""cleanup's header pipeline: each primary header through a list of steps.

HEADER_STEPS run, in order, on every header of the primary header block;
a step returns the header (changed or not) or None to drop it, and may
raise Reject/Defer. DONE_STEPS run once after the last header and return
headers to append (the missing Message-Id:, Date:, From:, To:).

Steps now (Postfix cleanup(8) behaviour):
  fill_queue_id       smtpd's Received: gets the queue ID for its placeholder
  truncate_long       header_size_limit: the excess of one header is discarded
  count_hops          hopcount_limit Received: headers -> reject 5.4.6 too many hops
  drop_unwanted       Return-Path: and Content-Length: never enter the queue
  note_seen           which headers are present, Message-Id:, Resent-*
  rewrite_addresses   canonicalise (and canonical-map) addresses in From:, To: ...
  remove_bcc          Bcc: removed when recipients are extracted (sendmail -t)
  extract_recipients  To:/Cc:/Bcc: (or their Resent- forms) become recipients
Before the first header, received_by_uid puts pickup's `Received: by HOST
(Postfix, from userid N)`, or a bounce notice's `Received: by HOST (Postfix)`
(they carry the queue ID, which only cleanup knows).
header_checks (checks.py) runs right after truncate_long, on the header as
received; a PREPEND from it lands in state.prepended, written before the
header. Masquerading happens inside rewrite_addresses (envelope.Mapper).

Interface:
    process_headers(state, headers: list[str]) -> list[str]
    HEADER_STEPS, DONE_STEPS
"""

from __future__ import annotations

import re
from typing import Callable

from pymaster.mail.addr import Mailbox, format_mailbox, parse_address_list, quote_phrase
from pymaster.mail.headers import header_name, header_value, make_header, rfc2822_date
from pymaster.mail.rewrite import rewriter_for
from pymaster.util import log

from .checks import checks_for, header_checks
from .envelope import mapper_for
from .state import TOO_MANY_HOPS, CleanupState, Header, Reject

HeaderStep = Callable[[CleanupState, Header], "Header | None"]
DoneStep = Callable[[CleanupState], list[str]]

SENDER_HEADERS = {"from", "sender", "reply-to", "resent-from", "resent-sender",
                  "resent-reply-to", "return-receipt-to", "errors-to"}
RECIPIENT_HEADERS = {"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc",
                     "apparently-to"}
DROPPED_HEADERS = {"return-path", "content-length"}


# -- per-header steps ---------------------------------------------------------

def fill_queue_id(state: CleanupState, h: Header) -> Header:
    """fill_queue_id - put the queue ID into smtpd's Received: header; smtpd
    wrote a placeholder there, because only cleanup knows the ID."""
    mark = state.queue_id_placeholder
    if mark and mark in h.text:
        state.queue_id_placeholder = ""     # once: the client's text is not ours to touch
        return Header(h.name, h.text.replace(mark, state.queue_id, 1))
    return h


def truncate_long(state: CleanupState, h: Header) -> Header:
    """truncate_long - keep at most header_size_limit bytes of one header."""
    limit = state.settings.header_size_limit
    # At most 4 bytes a character: most headers need no encoding to tell.
    if limit <= 0 or len(h.text) * 4 <= limit \
            or len(h.text.encode("utf-8", "surrogateescape")) <= limit:
        return h
    kept: list[str] = []
    size = 0
    for line in h.text.splitlines(keepends=True):
        n = len(line.encode("utf-8", "surrogateescape"))
        if size + n > limit:
            if not kept:
                kept.append(line.encode("utf-8", "surrogateescape")[:limit]
                            .decode("utf-8", "surrogateescape").rstrip("\n") + "\n")
            break
        kept.append(line)
        size += n
    log.warning(f"{state.queue_id}: message header length exceeds safety limit: "
                f"{h.name}: {header_value(h.text)[:60]}")
    return Header(h.name, "".join(kept))


def count_hops(state: CleanupState, h: Header) -> Header:
    """count_hops - too many Received: headers means a mail loop."""
    if h.key == "received":
        state.hop_count += 1
        if state.hop_count >= state.settings.hopcount_limit:
            log.warning(f"{state.queue_id}: message rejected: hopcount exceeded")
            raise Reject(*TOO_MANY_HOPS)
    return h


def drop_unwanted(state: CleanupState, h: Header) -> Header | None:
    """drop_unwanted - Return-Path: is the delivery agent's to add, not the client's."""
    return None if h.key in DROPPED_HEADERS else h


def note_seen(state: CleanupState, h: Header) -> Header:
    """note_seen - remember what is present, for the missing-header step and the log."""
    state.headers_seen.add(h.key)
    if h.key.startswith("resent-"):
        state.resent = True
    if h.key == "message-id" and not state.message_id:
        state.message_id = header_value(h.text)
    elif h.key == "resent-message-id" and not state.resent_message_id:
        state.resent_message_id = header_value(h.text)
    return h


def _header_context(state: CleanupState) -> str | None:
    """_header_context - the rewrite context for headers, None: leave them alone."""
    ctx = state.header_context
    if ctx == "remote" and not state.settings.remote_header_rewrite:
        return None
    return ctx


# A header value that is one plain address, `a.b@c.d` or `<a.b@c.d>`: atoms
# (the tokenizer's, pymaster.mail.addr) joined by dots, one @, nothing else.
# parse_address_list would return exactly the address this matches.
_ATOM = r'[^\s"()<>@,;:\\.\[\]]+'
_PLAIN_ADDRESS_RE = re.compile(rf"(<?)({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)(>?)")


def _plain_address(value: str) -> str | None:
    """_plain_address - the address of a header VALUE that is a plain
    address, None when the value needs the full parse."""
    m = _PLAIN_ADDRESS_RE.fullmatch(value)
    if m is None or (m.group(1) == "") != (m.group(3) == ""):
        return None
    return m.group(2)


def rewrite_addresses(state: CleanupState, h: Header) -> Header:
    """rewrite_addresses - complete the addresses of sender and recipient headers.

    The header is rebuilt only when an address actually changed, so a
    header that needs nothing keeps its exact original bytes."""
    if h.key not in SENDER_HEADERS and h.key not in RECIPIENT_HEADERS:
        return h
    ctx = _header_context(state)
    if ctx is None:
        return h
    klass = "header_sender" if h.key in SENDER_HEADERS else "header_recipient"
    rewriter = rewriter_for(state.cfg)
    mapper = None if state.override("no_address_mappings") else mapper_for(state.cfg)
    value = header_value(h.text)
    limit = state.settings.header_address_token_limit
    # No more tokens than characters: a short value is never cut by LIMIT.
    plain = _plain_address(value) if len(value) <= limit else None
    known: dict[str, str] = {}      # the plain address, rewritten: no second lookup
    if plain is not None:
        known[plain] = _rewritten(rewriter, mapper, plain, ctx, klass)
        if known[plain] == plain:
            # The usual From:/To: of one address that needs nothing: no
            # tokenizing (a third of the header pipeline's time).
            return h
    boxes = parse_address_list(value, limit)
    changed = False
    for box in boxes:
        new = known.get(box.address)
        if new is None:
            new = _rewritten(rewriter, mapper, box.address, ctx, klass)
        if new != box.address:
            box.address, changed = new, True
    if not changed:
        return h
    assert h.name is not None  # primary header block: every line is a header
    return Header(h.name, make_header(h.name, _format_list(boxes)))


def _rewritten(rewriter, mapper, address: str, ctx: str, klass: str) -> str:
    """_rewritten - ADDRESS canonical, then canonical-mapped and masqueraded."""
    new = rewriter.canonicalize(address, ctx)
    return mapper.canonical_address(new, klass) if mapper else new


def _format_list(boxes: list[Mailbox]) -> str:
    """_format_list - mailboxes back into a header value, groups kept."""
    parts: list[str] = []
    group = None
    for box in boxes:
        if box.group != group:
            if group is not None:
                parts[-1] += ";"
            group = box.group
            if group is not None:
                parts.append(f"{quote_phrase(group)}: {format_mailbox(box)}")
                continue
        parts.append(format_mailbox(box))
    if group is not None and parts:
        parts[-1] += ";"
    return ", ".join(parts)


def remove_bcc(state: CleanupState, h: Header) -> Header | None:
    """remove_bcc - blind copies stay blind: the header goes once it was read."""
    if "extract" in state.flags and h.key in ("bcc", "resent-bcc"):
        _collect_recipients(state, h)
        return None
    return h


def extract_recipients(state: CleanupState, h: Header) -> Header:
    """extract_recipients - sendmail -t: To:, Cc: (and Bcc:, via remove_bcc)."""
    if "extract" in state.flags and h.key in ("to", "cc", "resent-to", "resent-cc"):
        _collect_recipients(state, h)
    return h


def _collect_recipients(state: CleanupState, h: Header) -> None:
    for box in parse_address_list(header_value(h.text)):
        state.extracted.append((h.key.startswith("resent-"), box.address))


HEADER_STEPS: list[HeaderStep] = [
    fill_queue_id,
    truncate_long,
    header_checks,          # checks.py: header_checks / mime_header_checks
    count_hops,
    drop_unwanted,
    note_seen,
    rewrite_addresses,
    extract_recipients,
    remove_bcc,
]


# -- after the last header ------------------------------------------------------

def add_missing(state: CleanupState) -> list[str]:
    """add_missing - Message-Id:, Date:, From: for local submissions (or always
    with always_add_missing_headers); Resent- forms when Resent- headers exist."""
    if not state.local_submission:
        return []
    prefix = "Resent-" if state.resent else ""
    seen = state.headers_seen
    out: list[str] = []
    if f"{prefix}message-id".lower() not in seen:
        # Postfix with long queue IDs (pymaster's only form) writes <ID@myhostname>;
        # the date prefix is for short IDs, which repeat over time.
        value = f"<{state.queue_id}@{state.cfg.get('myhostname')}>"
        out.append(make_header(f"{prefix}Message-Id", value))
        if state.resent:
            state.resent_message_id = value
        else:
            state.message_id = value
    if f"{prefix}date".lower() not in seen:
        out.append(make_header(f"{prefix}Date", rfc2822_date(state.arrival_time)))
    if f"{prefix}from".lower() not in seen:
        out.append(make_header(f"{prefix}From", _from_value(state)))
    return out


def _from_value(state: CleanupState) -> str:
    if not state.sender:
        return "MAILER-DAEMON"
    name = state.attrs.get("full_name", "")
    return format_mailbox(Mailbox(name, state.sender))


def add_undisclosed(state: CleanupState) -> list[str]:
    """add_undisclosed - undisclosed_recipients_header when no To: or Cc: is visible."""
    text = state.cfg.get("undisclosed_recipients_header").strip()
    visible = {"resent-to", "resent-cc"} if state.resent else {"to", "cc"}
    if not text or not state.local_submission or state.headers_seen & visible:
        return []
    return [text + "\n"]


def log_message_id(state: CleanupState) -> list[str]:
    """log_message_id - `QUEUEID: message-id=<...>`, the line pflogsumm joins on."""
    log.info(f"{state.queue_id}: message-id={state.message_id or '<>'}")
    if state.resent_message_id:
        log.info(f"{state.queue_id}: resent-message-id={state.resent_message_id}")
    return []


DONE_STEPS: list[DoneStep] = [add_missing, add_undisclosed, log_message_id]


# -- the pipeline -------------------------------------------------------------

def received_by_uid(state: CleanupState) -> list[str]:
    """received_by_uid - `Received: by HOST (Postfix, from userid N)` for mail
    from pickup (sendmail, postdrop), `Received: by HOST (Postfix)` for a
    bounce notice: the submitter cannot write it because it names the queue
    ID, which only cleanup knows."""
    if state.submit_uid is not None:
        by = f"{state.cfg.get('mail_name')}, from userid {state.submit_uid}"
    elif state.origin == "bounce":
        by = state.cfg.get("mail_name")
    else:
        return []
    return [f"Received: by {state.cfg.get('myhostname')} ({by})\n\tid {state.queue_id}; "
            f"{rfc2822_date(state.arrival_time)}\n"]


def _active_steps(state: CleanupState) -> list[HeaderStep]:
    """_active_steps - HEADER_STEPS without those that can do nothing to
    this message: a message's few headers each met all nine steps, and
    the calls were a fifth of the pipeline's time."""
    idle: set[HeaderStep] = set()
    if not state.queue_id_placeholder:
        idle.add(fill_queue_id)
    if not checks_for(state.cfg).any_header:
        idle.add(header_checks)
    if _header_context(state) is None:
        idle.add(rewrite_addresses)
    if "extract" not in state.flags:
        idle.update((extract_recipients, remove_bcc))
    return [step for step in HEADER_STEPS if step not in idle]


def process_headers(state: CleanupState, headers: list[str]) -> list[str]:
    """process_headers - the primary header block after every step."""
    out: list[str] = received_by_uid(state)
    steps = _active_steps(state)
    for text in headers:
        h: Header | None = Header(header_name(text), text)
        for step in steps:
            assert h is not None  # a step that drops the header breaks the loop
            h = step(state, h)
            if h is None:
                break
        if state.prepended:     # PREPEND from header_checks goes first
            out.extend(state.prepended)
            state.prepended.clear()
        if h is not None:
            out.append(h.text)
    for done in DONE_STEPS:
        out.extend(done(state))
    return out
