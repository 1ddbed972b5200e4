"""milter_header_checks (postconf(5), Postfix 2.7): header_checks-style
tables over the headers that milters add, insert or change.

Each header a milter's edit would write ("Name: value", the value as the
milter sent it) is looked up as one string in milter_header_checks, before
the edit is applied, whether the milter is one of smtpd_milters (cleanup
applies their edits: services/cleanup/milters.py) or non_smtpd_milters. A
deleted header (a change to an empty value) is not looked up. The actions
are header_checks(5)'s, PREPEND excepted (postconf(5): not implemented):

  REJECT [text]      the message is refused (5.7.1 message content rejected,
                     or the DSN the text starts with; 4.X.X defers)
  DISCARD [text]     accepted and thrown away; later milter headers unchecked
  HOLD [text]        the message goes to the hold queue
  FILTER tr:dest     the content_filter attribute for qmgr
  REDIRECT addr      every recipient replaced by ADDR
  BCC addr           ADDR receives a copy
  WARN, INFO [text]  logged, nothing else
  IGNORE             the milter's edit is dropped (an added header is not
                     added, a changed one keeps its old value)
  REPLACE text       TEXT is written instead of the milter's header
  DUNNO, OK          the edit applies as sent

Every action but DUNNO, OK and IGNORE logs Postfix's line for these
tables, which names the table kind and shows at most 60 characters:
  QUEUEID: milter-header-reject: header X-Spam-Flag: YES from host[addr];
      from=<a@b> to=<c@d> proto=ESMTP helo=<x>: 5.7.1 message content rejected
Mail that did not come by SMTP is from localhost[127.0.0.1], as the
milters are told. Envelope actions (DISCARD, HOLD, FILTER, REDIRECT, BCC)
go into `actions` in the shape of smtpd's access actions (actions.py).

Caveat: smtpd's milters each saw the edits of the ones before them in
smtpd, unchecked; the checks apply when cleanup writes the edits.

Interface:
    header_check(state, actions) -> callable for milter.Envelope.check_header, or None
"""

from __future__ import annotations

from typing import Callable

from pymaster.mail.headers import header_name
from pymaster.util import log

from . import checks
from .checks import ENVELOPE_ACTIONS, checks_for, lookup, reject_reason, split_action
from .state import CleanupState, Defer, Reject

MAP_NAME = "milter_header_checks"
TEXT_LEN = 60                   # how much of the header the log line shows

HeaderCheck = Callable[[str, str], "tuple[str, str] | None"]


def header_check(state: CleanupState, actions: list[dict]) -> HeaderCheck | None:
    """header_check - the check of each milter header for STATE's message, its
    envelope actions appended to ACTIONS; None without milter_header_checks."""
    maps = checks_for(state.cfg).milter
    if maps is None:
        return None
    stopped = False

    def check(name: str, value: str) -> tuple[str, str] | None:
        nonlocal stopped
        if stopped:
            return name, value
        text = f"{name}:{value}"
        found = lookup(state, maps, text, MAP_NAME)
        if found is None:
            return name, value
        action, arg = split_action(found)
        if action == "DISCARD":
            stopped = True
        return _apply(state, actions, action, arg, text, (name, value), found)

    return check


def _apply(state: CleanupState, actions: list[dict], action: str, arg: str, text: str,
           header: tuple[str, str], found: str) -> tuple[str, str] | None:
    """_apply - one action over the milter header TEXT; what to write, None: nothing."""
    if action in ("DUNNO", "OK"):
        return header
    if action == "IGNORE":
        return None
    if action == "REJECT":
        dsn, reason = reject_reason(arg)
        log_action(state, "reject", text, f"{dsn} {reason}")
        raise (Defer if dsn.startswith("4") else Reject)(dsn, reason)
    if action in ("WARN", "INFO"):
        log_action(state, "warning" if action == "WARN" else "info", text, arg)
        return header
    if action == "REPLACE":
        return _replace(state, text, arg, header)
    if action in ENVELOPE_ACTIONS:
        if _envelope_action(state, actions, action, arg, text):
            log_action(state, action.lower(), text, arg)
        return header
    if action == "PREPEND":
        log.warning(f"{state.queue_id}: PREPEND is not implemented for {MAP_NAME}")
        return header
    log.warning(f"unknown command in {MAP_NAME} map: {found.strip()}")
    return header


def _replace(state: CleanupState, text: str, arg: str,
             header: tuple[str, str]) -> tuple[str, str]:
    name = header_name(arg) if arg else None
    if name is None:
        log.warning(f'bad REPLACE header text "{arg}" in {MAP_NAME} map -- '
                    'need "headername: headervalue"')
        return header
    log_action(state, "replace", text, arg)
    return arg[:arg.index(":")], arg[arg.index(":") + 1:]


def _envelope_action(state: CleanupState, actions: list[dict], action: str, arg: str,
                     text: str) -> bool:
    """_envelope_action - queue DISCARD, HOLD, FILTER, REDIRECT or BCC; False
    (with a warning) when its argument is missing or malformed."""
    if action == "FILTER" and ":" not in arg:
        log.warning(f"bad FILTER command {arg!r} in {MAP_NAME} -- need transport:destination")
        return False
    if action in ("REDIRECT", "BCC") and "@" not in arg:
        log.warning(f'bad {action} target "{arg}" in {MAP_NAME} map -- need user@domain')
        return False
    if action == "HOLD" and any(a.get("action") in ("HOLD", "DISCARD") for a in actions):
        return False        # held (or discarded) already: logged once
    actions.append({"action": action, "text": arg, "logged": True})
    return True


def log_action(state: CleanupState, action: str, text: str, arg: str) -> None:
    """log_action - `ID: milter-header-ACTION: header TEXT from host[addr]; from=<> …: ARG`;
    mail that did not come by SMTP shows localhost[127.0.0.1], as Postfix's does."""
    a = state.attrs
    client = f"{a.get('client_name') or 'unknown'}[{a.get('client_address', '')}]" \
        if state.origin == "smtpd" else "localhost[127.0.0.1]"
    checks.log_action(state, f"milter-header-{action}", "header", text, arg,
                      origin=client, shown_len=TEXT_LEN)
