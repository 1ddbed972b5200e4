"""cleanup's message actions: what access(5) (and later header_checks) asked for.

smtpd collects HOLD, DISCARD, FILTER, REDIRECT and BCC results of its
access checks and hands them to cleanup as `"actions": [{"action", "text"}]`
in the `message` request; header_checks will add to the same list.

  HOLD text             the queue file goes to hold/ instead of incoming/
  DISCARD text          the message is accepted, then thrown away
  FILTER transport:dest the content_filter attribute for qmgr
  REDIRECT addr         every recipient replaced by ADDR (orig kept)
  BCC addr              one more recipient

Interface:
    apply_envelope_actions(state, actions)   FILTER, REDIRECT, BCC (before writing)
    final_disposition(actions) -> INCOMING | HOLD | DISCARD
"""

from __future__ import annotations

from pymaster.mail import records
from pymaster.mail.rewrite import rewriter_for
from pymaster.util import log

from .envelope import remove_duplicates
from .state import CleanupState

# Where a message goes once every verdict is in (queue names, and "discard").
INCOMING, HOLD, DISCARD = "incoming", "hold", "discard"


def _action(item: dict) -> tuple[str, str]:
    return str(item.get("action", "")).upper(), str(item.get("text", "") or "").strip()


def apply_envelope_actions(state: CleanupState, actions: list[dict]) -> None:
    """apply_envelope_actions - FILTER, REDIRECT and BCC change the envelope."""
    rewriter = rewriter_for(state.cfg)
    for item in actions:
        action, text = _action(item)
        if action == "FILTER" and text:
            state.attrs["content_filter"] = text
        elif action == "REDIRECT" and text:
            target = rewriter.canonicalize(text, "local")
            if not item.get("logged"):      # header/body checks logged their own line
                log.info(f"{state.queue_id}: redirect: {target}")
            state.recipients = [records.Recipient(target, r.orig or r.address, r.notify, r.orcpt)
                                for r in state.recipients]
        elif action == "BCC" and text:
            state.recipients.append(records.Recipient(rewriter.canonicalize(text, "local")))
    state.recipients = remove_duplicates(state.recipients,
                                         state.cfg.int("duplicate_filter_limit"))


def final_disposition(actions: list[dict]) -> str:
    """final_disposition - where the committed file goes; DISCARD beats HOLD."""
    kinds = {_action(item)[0] for item in actions}
    if "DISCARD" in kinds:
        return DISCARD
    if "HOLD" in kinds:
        return HOLD
    return INCOMING
