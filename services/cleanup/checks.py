"""cleanup's content inspection: header_checks, mime_header_checks,
nested_header_checks and body_checks (header_checks(5)).

Each logical header, and each body line, is looked up as one string in the
tables of its kind (regexp:, pcre: … through pymaster.mail.maps); the first
table's answer is an action:

  REJECT [text]      the message is refused (5.7.1, or the DSN the text starts with)
  WARN [text]        logged, nothing else
  INFO [text]        logged, nothing else
  HOLD [text]        the message goes to the hold queue
  DISCARD [text]     accepted and thrown away; no further checks
  IGNORE             the header or line is deleted
  PREPEND text       TEXT goes before the header or line
  REPLACE text       TEXT takes the place of the header or line
  REDIRECT addr      every recipient replaced by ADDR
  BCC addr           ADDR receives a copy
  FILTER tr:dest     the content_filter attribute for qmgr
  DUNNO, OK          nothing happens
Which tables see what (the MIME walk is pymaster.mail.mime): the message's own
headers go to header_checks, except its MIME headers (Content-*,
MIME-Version) which go to mime_header_checks, as do the headers of MIME
parts; headers of an attached message/rfc822 go to nested_header_checks;
body lines (boundaries included) go to body_checks, at most
body_checks_size_limit bytes of each MIME segment. disable_mime_input_
processing makes the body one plain text and every header a header_checks
header. receive_override_options=no_header_body_checks turns it all off.
The strict MIME options (strict.py) inspect the same walk; with all of them
off the walk is what it was without them.

Every action but DUNNO, OK and IGNORE logs Postfix's line:
  QUEUEID: warning: header Subject: make money fast from unknown[192.0.2.1];
      from=<a@b> to=<c@d> proto=ESMTP helo=<x>: optional text
Envelope actions (HOLD, DISCARD, REDIRECT, BCC, FILTER) are queued in
state.check_actions, in the shape of smtpd's access actions (actions.py).

Interface:
    ContentChecks(cfg) / checks_for(cfg)    the tables, opened once
    header_checks(state, h) -> Header | None        a HEADER_STEPS step
    check_body(state, headers, body) -> bytes | None  the new body, None: unchanged
"""

from __future__ import annotations

import re

from pymaster.mail.config import Config
from pymaster.mail.headers import decode, encode, header_name
from pymaster.mail.maps import Maps
from pymaster.mail.mime import (
    NESTING_ERROR,
    MimeWalker,
    Part,
    is_mime_header,
    split_lines,
    worst_error,
)
from pymaster.util import log
from pymaster.util.tables import TableError

from .state import CleanupState, Defer, Header, Reject
from .strict import StrictMime

TEXT_LEN = 200                  # how much of a header or line a log line shows
CONTENT_REJECTED = ("5.7.1", "Message content rejected")
_DSN = re.compile(r"^([45]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
ENVELOPE_ACTIONS = ("HOLD", "DISCARD", "REDIRECT", "BCC", "FILTER")


class ContentChecks:
    """The table lists of one configuration (milter_header_checks too:
    services/cleanup/milter_checks.py)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.header = self._maps("header_checks")
        self.mime = self._maps("mime_header_checks")
        self.nested = self._maps("nested_header_checks")
        self.body = self._maps("body_checks")
        self.milter = self._maps("milter_header_checks")
        # No header table at all (the usual case): a header needs no parsing.
        self.any_header = bool(self.header or self.mime or self.nested)
        self.mime_disabled = cfg.bool("disable_mime_input_processing")
        self.size_limit = cfg.int("body_checks_size_limit")
        self.strict = StrictMime.from_config(cfg)

    def _maps(self, name: str):
        if not self.cfg.get(name).strip():
            return None
        return Maps(self.cfg, name)

    def for_header(self, context: str, name: str | None):
        """for_header - (tables, parameter name) for a header in CONTEXT
        ("primary", "multipart", "nested")."""
        if self.mime_disabled:
            return self.header, "header_checks"
        if is_mime_header(name) or context == "multipart":
            return self.mime, "mime_header_checks"
        if context == "nested":
            return self.nested, "nested_header_checks"
        return self.header, "header_checks"

    @property
    def walks_body(self) -> bool:
        """walks_body - whether the body needs reading at all."""
        return bool(self.body or self.strict or
                    (not self.mime_disabled and (self.mime or self.nested)))


def checks_for(cfg: Config) -> ContentChecks:
    return cfg.derived(ContentChecks)


def _enabled(state: CleanupState) -> bool:
    return not state.override("no_header_body_checks") and not state.checks_stopped


# -- the log line ---------------------------------------------------------------

def log_action(state: CleanupState, action: str, where: str, content: str, text: str,
               origin: str | None = None, shown_len: int = TEXT_LEN) -> None:
    """log_action - `ID: ACTION: header|body CONTENT from ORIGIN; from=<> to=<> …: TEXT`
    (ORIGIN: the client, or "local"; SHOWN_LEN: how much of CONTENT)."""
    shown = content.replace("\n", "")[:shown_len]
    attrs = state.attrs
    line = f"{state.queue_id}: {action}: {where} {shown} from {origin or _origin(state)};"
    line += f" from=<{state.sender}>"
    if state.recipients:
        first = state.recipients[0]
        line += f" to=<{first.orig or first.address}>"
    if attrs.get("protocol"):
        line += f" proto={attrs['protocol']}"
    if attrs.get("helo_name"):
        line += f" helo=<{attrs['helo_name']}>"
    if text:
        line += f": {text}"
    log.info(line)


# -- actions --------------------------------------------------------------------

def split_action(value: str) -> tuple[str, str]:
    """split_action - "REJECT some text" -> ("REJECT", "some text")."""
    words = value.strip().split(None, 1) or [""]
    return words[0].upper(), words[1].strip() if len(words) > 1 else ""


def apply_action(state: CleanupState, where: str, content: str, value: str,
                 map_name: str) -> list[str] | None:
    """apply_action - what replaces CONTENT (a header or a body line, "\\n" kept):
    None keeps it unchanged, a list is the text that goes out instead."""
    action, text = split_action(value)
    if action in ("DUNNO", "OK"):
        return None
    if action == "REJECT":
        return _reject(state, where, content, text)
    if action in ("WARN", "INFO"):
        log_action(state, "warning" if action == "WARN" else "info", where, content, text)
        return None
    if action == "IGNORE":
        return []
    if action in ("PREPEND", "REPLACE"):
        return _edit(state, action, where, content, text, map_name)
    if action in ENVELOPE_ACTIONS:
        _envelope_action(state, action, where, content, text, map_name)
        return None
    log.warning(f"unknown command in {map_name} map: {value.strip()}")
    return None


def reject_reason(text: str) -> tuple[str, str]:
    """reject_reason - (dsn, reason) of a REJECT action's optional text."""
    m = _DSN.match(text)
    dsn, reason = (m.group(1), text[m.end():]) if m else (CONTENT_REJECTED[0], text)
    return dsn, reason or CONTENT_REJECTED[1]


def _reject(state: CleanupState, where: str, content: str, text: str) -> list[str]:
    dsn, reason = reject_reason(text)
    log_action(state, "reject", where, content, f"{dsn} {reason}")
    raise (Defer if dsn.startswith("4") else Reject)(dsn, reason)


def _edit(state: CleanupState, action: str, where: str, content: str, text: str,
          map_name: str) -> list[str] | None:
    """_edit - PREPEND and REPLACE; a header's new text must be a header."""
    if not text:
        log.warning(f"{action} action without text in {map_name} map")
        return None
    if where == "header" and header_name(text) is None:
        log.warning(f'bad {action} header text "{text}" in {map_name} map -- '
                    'need "headername: headervalue"')
        return None
    log_action(state, action.lower(), where, content, text)
    new = text.rstrip("\n") + "\n"
    return [new, content] if action == "PREPEND" else [new]


def _envelope_action(state: CleanupState, action: str, where: str, content: str,
                     text: str, map_name: str) -> None:
    if action in ("REDIRECT", "BCC", "FILTER") and not text:
        log.warning(f"{action} action without text in {map_name} map")
        return None
    log_action(state, action.lower(), where, content, text)
    state.check_actions.append({"action": action, "text": text, "logged": True})
    if action == "DISCARD":
        state.checks_stopped = True     # header_checks(5): no further inspection
    return None


def lookup(state: CleanupState, maps, key: str, map_name: str) -> str | None:
    try:
        return maps.lookup(key)
    except TableError as e:
        log.warning(f"{state.queue_id}: {map_name} map lookup problem: {e}"
                    " -- message not accepted, try again later")
        raise Defer("4.3.0", "queue file write error") from None


# -- headers --------------------------------------------------------------------

def check_header(state: CleanupState, context: str, text: str) -> list[str] | None:
    """check_header - one logical header of CONTEXT through its tables."""
    checks = checks_for(state.cfg)
    if not checks.any_header or not _enabled(state):
        return None
    maps, map_name = checks.for_header(context, header_name(text))
    if not maps:
        return None
    value = lookup(state, maps, text.rstrip("\n"), map_name)
    if value is None:
        return None
    return apply_action(state, "header", text, value, map_name)


def header_checks(state: CleanupState, h: Header) -> Header | None:
    """header_checks - the HEADER_STEPS step for the message's own headers.

    A PREPEND puts its header into state.prepended, which the pipeline
    writes before this one."""
    result = check_header(state, "primary", h.text)
    if result is None:
        return h
    if not result:
        return None
    *before, last = result
    state.prepended.extend(before)
    if last is h.text:
        return h
    return Header(header_name(last), last)


# -- the body -------------------------------------------------------------------

def check_body(state: CleanupState, headers: list[str], data: bytes) -> bytes | None:
    """check_body - the body DATA after the MIME header and body checks; None
    when nothing changed (the caller then writes the original bytes)."""
    checks = checks_for(state.cfg)
    if not _enabled(state) or not checks.walks_body:
        return None
    body = decode(data)
    out: list[str] = []
    changed = False
    segment = 0
    limits = (state.cfg.int("mime_nesting_limit"), state.cfg.int("mime_boundary_length_limit"))
    strict = checks.strict if checks.strict and checks.strict.applies(state) else None
    walker = strict.walker(*limits) if strict else MimeWalker(*limits)
    parts = _plain_lines(body) if checks.mime_disabled else walker.walk(headers, body)
    if strict:
        parts = strict.inspect(parts, walker, headers)
    for part in parts:
        result = None
        if part.kind == "header":
            segment = 0
            result = check_header(state, part.context, part.text)
        elif part.kind == "body":
            if part.text.startswith("--"):
                segment = 0
            result, segment = _check_line(state, checks, part.text, segment)
        if result is None:
            out.append(part.text)
        else:
            out.extend(result)
            changed = True
    _mime_errors(state, checks, walker, strict is not None)
    return encode("".join(out)) if changed else None


def _plain_lines(body: str):
    return (Part("body", "", line) for line in split_lines(body))


def _check_line(state: CleanupState, checks: ContentChecks, line: str,
                segment: int) -> tuple[list[str] | None, int]:
    """_check_line - one body line through body_checks, within the size limit."""
    size = len(line)
    if not checks.body or not _enabled(state) or (checks.size_limit and
                                                  segment >= checks.size_limit):
        return None, segment + size
    value = lookup(state, checks.body, line.rstrip("\r\n"), "body_checks")
    if value is None:
        return None, segment + size
    return apply_action(state, "body", line, value, "body_checks"), segment + size


def _mime_errors(state: CleanupState, checks: ContentChecks, walker: MimeWalker,
                 strict: bool) -> None:
    """_mime_errors - log each MIME error once and refuse the message with the
    most serious; over-nested MIME counts only with header or strict checks."""
    errors = walker.errors
    if not (strict or checks.header or checks.mime or checks.nested):
        errors = [e for e in errors if e != NESTING_ERROR]
    if not errors:
        return
    first = state.recipients[0] if state.recipients else None
    to = (first.orig or first.address) if first else "unknown"
    for error in errors:
        shown = walker.details.get(error, "").rstrip("\n").replace("\n", "")[:100]
        log.info(f"{state.queue_id}: reject: mime-error {error}: {shown} from "
                 f"{_origin(state)}; from=<{state.sender}> to=<{to}>")
    raise Reject("5.6.0", worst_error(errors))


def _origin(state: CleanupState) -> str:
    attrs = state.attrs
    if attrs.get("client_address"):
        return f"{attrs.get('client_name') or 'unknown'}[{attrs['client_address']}]"
    return "local"
