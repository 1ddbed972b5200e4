"""cleanup's milter stage: non_smtpd_milters over a finished message, and the
outcome of smtpd_milters that smtpd ran.

smtpd owns the smtpd_milters sessions (services/smtpd/milters.py): it sends
the SMTP events as they happen, runs the content stage at the end of DATA,
and passes the verdict and the edits in the request attribute
`milter_result` (JSON: action, code, dsn, text, event, reason, and each
milter's edits as [leadspc, [[command, base64 data], …]]). cleanup applies them here, exactly as it
applies a chain it runs itself, and runs no smtpd_milters of its own: mail
from smtpd without that attribute had no milters (none configured, `-o
smtpd_milters=` for that service, smtpd_milter_maps DISABLE). The attribute
is taken out of the attributes, so it never reaches the queue file.

Which list cleanup runs itself: bounces and notices get non_smtpd_milters
only when internal_mail_filter_classes names "bounce" or "notify"; forwarded
mail (local) and address probes get none (they passed the milters when they
arrived); everything else but smtpd's mail (pickup: sendmail) gets
non_smtpd_milters, shown as a client localhost[127.0.0.1].
receive_override_options=no_milters turns them off.

Results: reject and tempfail raise Reject/Defer with the milter's reply
(the client gets it, nothing is queued); discard and quarantine add a
DISCARD or HOLD action; edits change the headers, the body, the sender
(canonicalised again) and the recipients (added ones go through the
recipient pipeline) before they are written. milter_header_checks
(milter_checks.py) sees each header a milter adds, inserts or changes
before the edit applies.

Interface:
    run_milters(state, actions, headers, body, content, body_offset) -> (headers, body)
    decode_result(text) -> (Outcome, [(edits, leadspc)])     the milter_result attribute
"""

from __future__ import annotations

import base64
import json

from pymaster.mail import milter, records
from pymaster.util import log

from .actions import apply_envelope_actions
from .envelope import process_recipients, process_sender
from .milter_checks import header_check
from .state import CleanupState, Defer, Reject

INTERNAL_ORIGINS = {"bounce": "bounce", "notify": "notify"}
UNFILTERED_ORIGINS = {"local", "verify"}

_parsed: dict[str, list[milter.Spec]] = {}      # list text -> specs, parsed once


def milters_for(state: CleanupState) -> list[milter.Spec]:
    """milters_for - the milters this message passes, by its origin."""
    cfg = state.cfg
    if state.override("no_milters") or state.origin in UNFILTERED_ORIGINS or \
            state.origin == "smtpd":        # smtpd runs smtpd_milters itself
        return []
    if state.origin in INTERNAL_ORIGINS and \
            INTERNAL_ORIGINS[state.origin] not in cfg.list("internal_mail_filter_classes"):
        return []
    text = cfg.get("smtpd_milters" if state.origin == "smtpd" else "non_smtpd_milters")
    if not text.strip():
        return []
    if text not in _parsed:
        _parsed[text] = milter.parse_milters(cfg, text)
    return _parsed[text]


def run_milters(state: CleanupState, actions: list[dict], headers: list[str],
                body: bytes | None, content: bytes, body_offset: int
                ) -> tuple[list[str], bytes | None]:
    """run_milters - the milter chain over the message; the headers and body to
    write (BODY None: the body is content[body_offset:] unchanged)."""
    given = state.attrs.pop("milter_result", "")
    if given:
        return _apply_result(state, actions, headers, body, content[body_offset:], given)
    try:
        specs = milters_for(state)
    except ValueError as e:
        # A broken milter list is the administrator's error: keep the mail.
        log.warning(f"{state.queue_id}: milter configuration: {e}")
        raise Defer("4.3.5", "Server configuration error") from None
    if not specs or not state.recipients:
        return headers, body
    env = _envelope(state, headers, content[body_offset:] if body is None else body)
    checked: list[dict] = []
    env.check_header = header_check(state, checked)
    outcome = milter.run_chain(specs, env, _macros(state), milter.macro_names(state.cfg))
    _dispose(state, actions, outcome)
    _apply_envelope(state, env, actions, checked)
    new_headers = [f"{name}:{value}\n" for name, value in env.headers]
    return new_headers, env.body if env.body_replaced else body


def _apply_result(state: CleanupState, actions: list[dict], headers: list[str],
                  body: bytes | None, original: bytes, given: str
                  ) -> tuple[list[str], bytes | None]:
    """_apply_result - smtpd's milter verdict and edits (milter_result), applied
    as a chain run here would have been."""
    try:
        outcome, edits = decode_result(given)
    except (ValueError, TypeError, KeyError) as e:
        # Not the client's fault, and the edits may matter (a signature): defer.
        log.warning(f"{state.queue_id}: malformed milter_result from smtpd: {e}")
        raise Defer("4.3.0", "Error: internal error") from None
    _dispose(state, actions, outcome)
    if not edits:
        return headers, body
    env = _envelope(state, headers, original if body is None else body)
    checked: list[dict] = []
    env.check_header = header_check(state, checked)
    try:
        for got, leadspc in edits:
            milter.apply_edits(env, got, leadspc)     # a quarantine is in OUTCOME already
    except milter.MilterError as e:
        log.warning(f"{state.queue_id}: milter edit: {e}")
        raise Defer("4.3.0", "Error: internal error") from None
    _apply_envelope(state, env, actions, checked)
    new_headers = [f"{name}:{value}\n" for name, value in env.headers]
    return new_headers, env.body if env.body_replaced else body


def decode_result(text: str) -> tuple[milter.Outcome, list[tuple[list, int]]]:
    """decode_result - the Outcome and the edits of a milter_result attribute."""
    raw = json.loads(text)
    outcome = milter.Outcome(*(str(raw[k]) for k in
                               ("action", "code", "dsn", "text", "event", "reason")))
    if outcome.action not in ("accept", "reject", "tempfail", "discard", "hold"):
        raise ValueError(f"unknown action {outcome.action!r}")
    edits = [([(str(c).encode("latin-1"), base64.b64decode(d, validate=True)) for c, d in got],
              int(lead)) for lead, got in raw["edits"]]
    return outcome, edits


def _envelope(state: CleanupState, headers: list[str], body: bytes) -> milter.Envelope:
    a = state.attrs
    smtp = state.origin == "smtpd"
    return milter.Envelope(
        sender=state.sender, recipients=[r.address for r in state.recipients],
        headers=[_split_header(h) for h in headers], body=bytes(body),
        client_name=(a.get("client_name") or "unknown") if smtp else "localhost",
        client_address=a.get("client_address", "") if smtp else "127.0.0.1",
        client_port=_port(a.get("client_port", "")) if smtp else 0,
        helo=a.get("helo_name", "") if smtp else "localhost")


def _split_header(text: str) -> list[str]:
    name, _, value = text.partition(":")
    return [name, value[:-1] if value.endswith("\n") else value]


def _port(text: str) -> int:
    return int(text) if text.isdigit() and int(text) < 65536 else 0


def _macros(state: CleanupState) -> dict[str, str]:
    """_macros - the Sendmail macro values cleanup knows for this message."""
    cfg, a = state.cfg, state.attrs
    smtp = state.origin == "smtpd"
    name = (a.get("client_name") or "unknown") if smtp else "localhost"
    addr = a.get("client_address", "") if smtp else "127.0.0.1"
    values = dict(_macro_defaults(cfg.get("milter_macro_defaults")))
    values.update({
        "j": cfg.get("myhostname"), "{daemon_name}": cfg.get("milter_macro_daemon_name"),
        "v": cfg.get("milter_macro_v"), "_": f"{name} [{addr}]", "i": state.queue_id,
        "{client_name}": name, "{client_addr}": addr, "{client_ptr}": name,
        "{client_port}": a.get("client_port", "") if smtp else "",
        "{auth_type}": a.get("sasl_method", ""), "{auth_authen}": a.get("sasl_username", "")})
    return values


def _macro_defaults(text: str) -> list[tuple[str, str]]:
    pairs = []
    for word in text.replace(",", " ").split():
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


def _dispose(state: CleanupState, actions: list[dict], outcome: milter.Outcome) -> None:
    """_dispose - refuse the message, or mark it for discard or hold, with Postfix's log line."""
    if outcome.action in ("reject", "tempfail"):
        _log(state, "milter-reject", outcome.event, f"{outcome.dsn} {outcome.text}")
        code = int(outcome.code) if outcome.code.isdigit() else None
        raise (Reject if outcome.action == "reject" else Defer)(outcome.dsn, outcome.text, code)
    if outcome.action == "discard":
        _log(state, "milter-discard", outcome.event, "milter triggers DISCARD action")
        actions.append({"action": "DISCARD", "text": "milter", "logged": True})
    elif outcome.action == "hold":
        _log(state, "milter-hold", outcome.event, outcome.reason or "milter triggers HOLD action")
        actions.append({"action": "HOLD", "text": outcome.reason, "logged": True})


def _log(state: CleanupState, what: str, event: str, text: str) -> None:
    a = state.attrs
    smtp = state.origin == "smtpd"
    client = f"{a.get('client_name') or 'unknown'}[{a.get('client_address', '')}]" \
        if smtp else "localhost[127.0.0.1]"
    rcpt = state.recipients[0].address if state.recipients else ""
    tail = f"; from=<{state.sender}> to=<{rcpt}>"
    if smtp:
        tail += f" proto={a.get('protocol', '')} helo=<{a.get('helo_name', '')}>"
    log.info(f"{state.queue_id}: {what}: {event} from {client}: {text}{tail}")


def _apply_envelope(state: CleanupState, env: milter.Envelope, actions: list[dict],
                    checked: list[dict]) -> None:
    """_apply_envelope - the milters' sender and recipient edits, into the state,
    then the envelope actions of milter_header_checks (CHECKED), which join ACTIONS."""
    if env.sender != state.sender:
        state.sender = env.sender
        process_sender(state)
    wanted = {a.lower() for a in env.recipients}
    had = {r.address.lower() for r in state.recipients}
    state.recipients = [r for r in state.recipients if r.address.lower() in wanted]
    added = [records.Recipient(a) for a in env.recipients if a.lower() not in had]
    if added:
        process_recipients(state, added, copies=False)
    if checked:
        apply_envelope_actions(state, checked)
        actions.extend(checked)
