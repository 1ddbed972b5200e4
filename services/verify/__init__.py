"""verify: the address verification service, as Postfix's verify(8).

master.cf: `verify unix - - n - 1 verify` (private/verify; one process, so
one writer of the cache). Requests (pymaster/mail/verify_client.py has the client):

    {"op": "query", "address": A}
        -> {"status": "ok", "addr_status": "OK"|"DEFER"|"BOUNCE"|"TODO", "reason": TEXT}
    {"op": "update", "address": A, "addr_status": "OK"|"DEFER"|"BOUNCE", "reason": TEXT}
        -> {"status": "ok", "cached": true|false}

smtpd's reject_unverified_sender/recipient ask; a QUERY for an address
without a fresh answer sends a probe (policy.py decides when, cache.py
keeps the answers in address_verify_map). A probe is a message from
address_verify_sender (default $double_bounce_sender, made
`double-bounce@$myorigin`; with address_verify_sender_ttl a time stamp is
added to its local part, pymaster/mail/verify_sender.py) to the address, submitted to cleanup with
trace_flags `verify,probe` and NOTIFY=NEVER: qmgr routes it as any mail,
the delivery agent only decides what it would do (sendmail -bv's verify
mode) and sends its verdict here as an UPDATE (pymaster.mail.delivery), then
the probe is removed from the queue; nothing is delivered or mailed.

Without an address_verify_map the cache lives in this process only, which
then never exits for max_idle or max_use (as Postfix).

Interface:
    probe_sender(cfg, now=None) -> str        the envelope sender of a probe sent now
    ProbeSender(cfg, client).send(address) -> bool   submit one probe to cleanup
        (raises SenderError for a malformed address_verify_sender)
    make_handler(verifier) -> handler for Service.serve_requests
    unavailable(why) -> handler answering every request with an error
    open_cache(cfg) -> VerifyCache | TableCache   as mail_owner; TableCache when
                                              address_verify_map is an lmdb: or
                                              memcache: table (tablecache.py)
    pre_jail(svc) -> Verifier | str           the verifier, or why the cache cannot open
    run(svc), main()                          the body of libexec/verify
"""

from __future__ import annotations

import os
import time

from pymaster.mail import cleanup_client
from pymaster.mail.config import Config
from pymaster.mail.traceflags import PROBE, VERIFY
from pymaster.mail.verify_client import BOUNCE, DEFER, OK
from pymaster.mail.verify_sender import SenderError, probe_sender
from pymaster.master import cachefile, service
from pymaster.util import ipc, log
from pymaster.util.tables import TableError

from .cache import CacheError, VerifyCache, cache_path
from .policy import Settings, Verifier
from .tablecache import TableCache

PROBE_TIMEOUT = 10.0        # seconds to wait for cleanup to queue a probe
UPDATE_STATUSES = (OK, DEFER, BOUNCE)


class ProbeSender:
    """Submits address probes to cleanup."""

    def __init__(self, cfg: Config, client: ipc.Client | None = None) -> None:
        self.cfg = cfg
        probe_sender(cfg)       # a malformed address_verify_sender stops us now
        self.client = client or cleanup_client.client(cfg, PROBE_TIMEOUT)

    def send(self, address: str) -> bool:
        """send - queue a probe for ADDRESS; False (logged) when cleanup refuses."""
        attrs = {"origin": "verify", "rewrite_context": "local",
                 "trace_flags": f"{VERIFY},{PROBE}"}
        # Asked per probe: with address_verify_sender_ttl the sender changes.
        rcpts = [cleanup_client.recipient(address, orig=address, notify="NEVER")]
        header = cleanup_client.message_request(probe_sender(self.cfg, time.time()), rcpts, attrs)
        try:
            reply, _ = self.client.call(header, [b""])
        except ipc.IpcError as e:
            log.warning(f"probe for {address}: cleanup service: {e}")
            return False
        result = cleanup_client.Reply.of(reply)
        if not result.ok:
            log.warning(f"probe for {address}: cleanup said: {result.text or result.status}")
            return False
        return True


def make_handler(verifier: Verifier):
    """make_handler - answer QUERY and UPDATE requests; run the cache cleanup when due."""
    def handle(header: dict, payload: list) -> tuple[dict, list]:
        try:
            reply = _answer(verifier, header)
            counts = verifier.cleanup_due()
        except CacheError as e:
            # A shared cache that is down: smtpd applies its tempfail action.
            log.warning(str(e))
            return {"status": "error", "reason": f"address verification cache: {e}"}, []
        if counts is not None:
            log.info(f"cache {verifier.cache.path or 'internal:verify'} full cleanup: "
                     f"retained={counts[0]} dropped={counts[1]} entries")
        return reply, []
    return handle


def unavailable(why: str):
    """unavailable - a handler that answers every request with an error (the
    cache cannot be opened): the asking smtpd applies its tempfail action."""
    def handle(header: dict, payload: list) -> tuple[dict, list]:
        return {"status": "error", "reason": f"address verification cache: {why}"}, []
    return handle


def _answer(verifier: Verifier, header: dict) -> dict:
    op, address = header.get("op"), header.get("address")
    if op not in ("query", "update"):
        log.warning(f"unrecognized request: \"{op}\", ignored")
        return {"status": "error", "reason": f"unknown request: {op}"}
    if not isinstance(address, str) or not address.strip():
        return {"status": "error", "reason": "missing address"}
    status: str | None
    reason: str | None
    if op == "query":
        status, reason = verifier.query(address)
        return {"status": "ok", "addr_status": status, "reason": reason}
    status, reason = header.get("addr_status"), header.get("reason")
    if status not in UPDATE_STATUSES:
        log.warning(f"bad recipient status {status} for recipient {address}")
        return {"status": "error", "reason": f"bad address status: {status}"}
    cached = verifier.update(address, status, str(reason or ""))
    return {"status": "ok", "cached": cached}


def open_cache(cfg: Config) -> VerifyCache | TableCache:
    """open_cache - address_verify_map opened (and created)."""
    spec = cfg.get("address_verify_map")
    if cachefile.in_table(spec):
        # Keys as given, as Postfix's verify opens its map: the policy folds
        # addresses itself, and the cleanup time stamp's key is upper case.
        return TableCache(cachefile.open_table(cfg, spec))
    path = cache_path(spec)
    if path is None:
        return VerifyCache(None)
    cachefile.make_data_directory(cfg, os.path.dirname(path))
    with cachefile.as_mail_owner(cfg):
        return VerifyCache(path)


def pre_jail(svc: service.Service) -> Verifier | str:
    """pre_jail - the verifier with its cache opened; why not, when the
    cache cannot be opened. A malformed address_verify_sender is fatal."""
    cfg = svc.cfg
    try:
        cache = open_cache(cfg)
    except (CacheError, TableError, OSError) as e:
        # Not fatal: a restart would fail the same way (a crash loop), while
        # smtpd can turn an error answer into a temporary failure.
        log.warning(f"address_verify_map {cfg.get('address_verify_map')}: {e}: "
                    f"every request fails until the map is repaired and verify restarts")
        return str(e)
    try:
        send_probe = ProbeSender(cfg).send
    except SenderError as e:
        log.fatal(str(e))
    return Verifier(Settings.from_config(cfg), cache, send_probe)


def run(svc: service.Service) -> None:
    """run - open the cache, enter the jail, answer requests."""
    cfg = svc.cfg
    verifier = svc.enter_jail(pre_jail)
    if isinstance(verifier, str):
        svc.serve_requests(unavailable(verifier), many=True)
        return
    cache = verifier.cache
    if cache.path is None:
        # The answers live in this process: it must not exit while idle.
        svc.cfg = cfg.with_overrides({"max_idle": "1000000", "max_use": "0"})
    try:
        svc.serve_requests(make_handler(verifier), many=True)
    finally:
        cache.close()


def main() -> None:
    service.main("verify", run)
