"""Handing a local recipient to another delivery agent: mailbox_transport, fallback_transport.

Instead of delivering a recipient itself, local(8) may delegate it, in this
place of its order (recipient.py, mailbox.py):

  mailbox_transport_maps, mailbox_transport
      the mailbox of every local recipient, whether or not it has a passwd
      entry (Cyrus or Dovecot over LMTP); before mailbox_command,
      home_mailbox and the mail spool
  fallback_transport_maps, fallback_transport
      recipients with neither an alias nor a passwd entry; before
      luser_relay and the `unknown user` bounce

The maps are searched with the user name (the local part without its
address extension). A value is `transport:nexthop` as in transport(5):
the delivery request goes to the service private/TRANSPORT, with that next
hop, or the request's own when it is omitted. It names the same queue file
and the one address being delivered, as qmgr would send it; local waits for
the answer (at most ipc_timeout) and takes the other agent's outcome as the
recipient's. The other agent logs the status line and writes the defer or
bounce log entry; local logs only `QUEUEID: passing <ADDRESS> to
transport=NAME`, as Postfix's local does.

The recipient goes out with offset -1 (Postfix's hint for the same case):
the other agent does not mark it done in the queue file, local does,
exactly once, when the recipient's final outcome is known. One recipient
may be passed on more than once (an alias `\\alice, \\bob`), or passed on
and also forwarded (`\\alice, alice@elsewhere`): had the first hand-off
marked the recipient done, a later copy that failed would be lost.

When the hand-off itself fails (no such service, no answer in time, an
answer that is not a delivery status) the recipient is deferred with
4.3.0 and relay=none, local's own outcome.

Interface:
    mailbox_handoff(delivery, target) -> Outcome | None    None: local delivers the mailbox
    fallback_handoff(delivery, target) -> Outcome | None   None: no fallback transport
    pass_recipient(delivery, target, service) -> Outcome
    split_service("lmtp:inet:host:24", default_nexthop) -> ("lmtp", "inet:host:24")
"""

from __future__ import annotations

import os

from pymaster.mail import delivery as agent
from pymaster.mail import records
from pymaster.mail.maps import Maps
from pymaster.util import ipc, log
from pymaster.util.tables import TableError
from services.local.context import DEFERRED, Delivery, Outcome, Target, deferred

RESULT_KINDS = (agent.SENT, agent.DEFERRED, agent.BOUNCED, *agent.VERDICTS)


def mailbox_handoff(delivery: Delivery, target: Target) -> Outcome | None:
    """mailbox_handoff - pass TARGET's mailbox delivery on, if mailbox_transport(_maps) says so."""
    return _handoff(delivery, target, "mailbox_transport_maps", "mailbox_transport")


def fallback_handoff(delivery: Delivery, target: Target) -> Outcome | None:
    """fallback_handoff - pass an unknown TARGET on, if fallback_transport(_maps) says so."""
    return _handoff(delivery, target, "fallback_transport_maps", "fallback_transport")


def _handoff(delivery: Delivery, target: Target, maps_param: str, param: str) -> Outcome | None:
    try:
        service = find_service(delivery.cfg, maps_param, param, target.user)
    except TableError as e:
        return deferred(f"{maps_param} lookup failed: {e}", "4.3.0")
    if not service:
        return None
    return pass_recipient(delivery, target, service)


def find_service(cfg, maps_param: str, param: str, user: str) -> str:
    """find_service - the `transport:nexthop` for USER: MAPS_PARAM's tables, else PARAM.

    Raises TableError when a table fails (the caller defers)."""
    if cfg.get(maps_param):
        value = Maps(cfg, maps_param).lookup(user)
        if value and value.strip():
            return value.strip()
    return cfg.get(param).strip()


def split_service(service: str, default_nexthop: str) -> tuple[str, str]:
    """split_service - (transport, nexthop) of `transport:nexthop`; no next hop: DEFAULT_NEXTHOP."""
    transport, _, nexthop = service.partition(":")
    return transport.strip(), nexthop.strip() or default_nexthop


def pass_recipient(delivery: Delivery, target: Target, service: str) -> Outcome:
    """pass_recipient - have the agent of SERVICE deliver TARGET; its outcome, as local's."""
    req = delivery.message.request
    assert req is not None  # the local agent's own request
    transport, nexthop = split_service(service, req.nexthop)
    if not transport:
        log.warning(f"missing transport name in \"{service}\"")
        return unavailable()
    log.info(f"{req.queue_id}: passing <{target.address}> to transport={transport}")
    if not os.path.exists(os.path.join("private", transport)):
        log.warning(f"connect to transport private/{transport}: No such file or directory")
        return unavailable()
    request = handoff_request(req, target, transport, nexthop)
    try:
        reply = call_agent(transport, request, delivery.cfg.time("ipc_timeout"))
    except ipc.IpcError as e:
        log.warning(f"{req.queue_id}: {e}")
        return unavailable()
    return outcome_of(reply, transport)


def handoff_request(req: agent.DeliveryRequest, target: Target, transport: str,
                    nexthop: str) -> agent.DeliveryRequest:
    """handoff_request - REQ's queue file and envelope, for TARGET alone, offset -1."""
    rcpt = target.rcpt
    one = records.Recipient(target.address, orig=rcpt.orig or rcpt.address,
                            notify=rcpt.notify, orcpt=rcpt.orcpt, offset=-1)
    return agent.DeliveryRequest(
        queue_id=req.queue_id, path=req.path, transport=transport, nexthop=nexthop,
        sender=req.sender, recipients=[one], queue_name=req.queue_name,
        arrival_time=req.arrival_time, active_time=req.active_time, attrs=dict(req.attrs))


def call_agent(transport: str, request: agent.DeliveryRequest, timeout: float) -> dict:
    """call_agent - send REQUEST to private/TRANSPORT and wait for the answer header."""
    client = ipc.Client(ipc.endpoint("private", transport), timeout=max(1, timeout))
    try:
        header, _ = client.call(request.to_header())
    finally:
        client.close()
    return header


def outcome_of(reply: dict, transport: str) -> Outcome:
    """outcome_of - the other agent's answer as this recipient's outcome (already logged there)."""
    results = reply.get("results") or []
    result = results[0] if reply.get("status") == "ok" and results else None
    if not isinstance(result, dict) or result.get("status") not in RESULT_KINDS:
        why = reply.get("reason") or "no recipient status"
        log.warning(f"private/{transport}: unexpected answer: {why}")
        return Outcome(DEFERRED, "4.3.0", "unknown mail transport error", relay="none")
    default_dsn = {agent.SENT: "2.0.0", agent.DEFERRED: "4.0.0"}.get(result["status"], "5.0.0")
    return Outcome(result["status"], str(result.get("dsn") or default_dsn),
                   str(result.get("reason", "")), passed=True)


def unavailable() -> Outcome:
    """unavailable - the hand-off could not be made: defer, as local's own outcome."""
    return Outcome(DEFERRED, "4.3.0", "mail transport unavailable", relay="none")
