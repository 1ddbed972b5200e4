"""Delivering one request: choose hosts, run sessions, report each recipient.

For a delivery request (a queue file, a next hop, some recipients) the
client first tries a cached session for that next hop, then the next
hop's hosts in order (dns.py), at most smtp_mx_address_limit addresses
and smtp_mx_session_limit established sessions, then smtp_fallback_relay
when recipients are still undelivered. Each session runs a
transaction (transaction.py) for the recipients still pending (and more
after a 452, below):

    2xx                  sent    (status=sent, the server's reply as reason)
    5xx                  bounced (host H[A] said: ... (in reply to X command))
    4xx, lost connection deferred, but first the next host is tried
    connect failure      logged, next host; "connect to H[A]:25: ..." if last
    DNS failure          bounced (not found, nullMX, loop) or deferred (try again)

A server that answers RCPT with 452 (RFC 5321 4.5.3.1.10: too many
recipients) after it accepted others gets the rest in a new transaction
on the same session once the accepted ones are sent, as often as it takes,
as Postfix does; they are not deferred for a later queue run. Without
another accepted recipient a 452 is an ordinary temporary failure.

Recipients left after the last host are deferred with the last reason
they met. When no session got as far as an answer for any recipient the
next hop itself is reported down (status.hop_failed) so qmgr backs off.

The content streams from the queue file to the socket in bounded chunks
(content.py), with the rewritten header block (generic.py) in front;
each transaction, on this host or the next, reads the file again, so no
copy of the message is kept. The one exception: 8-bit content for a
server without 8BITMIME is made quoted-printable (mime7bit.py), which
works on the whole message, so that path holds it (twice, briefly).
A queue file that cannot be read half-way through DATA breaks the session
off without the final dot and defers the recipients.

After EHLO a new session does STARTTLS as the destination's TLS policy
says (tls.py: smtp_tls_security_level, smtp_tls_policy_maps) and then AUTH
when a password is known (sasl.py); a failure of either is a failure of
that host. A failed handshake at `may` reconnects once in plain text.

Verify mode (sendmail -bv, address probes: delivery.is_verify) takes the
same path, hosts, TLS and AUTH included, but the transaction stops after
the RCPT replies (no DATA): a 2xx reply is `deliverable` with the reply as
reason (and the host as Remote-MTA, the reply as an `smtp` Diagnostic-Code,
as Postfix reports them), a 5xx or 4xx one, or a host that cannot be
reached, is `undeliverable` with the reason delivery would have logged
(Status turns the outcomes into verdicts). A probe never reads the
content, so it does not rewrite headers either. A probed session that may be cached is reset
(RSET) and kept, as Postfix does, so a burst of probes to one destination
costs one connection; any other is ended with QUIT, which also ends the
open transaction.

Interface:
    Client(cfg, settings, lookup=None, cache=None).deliver(req, status)
    Client.verify(req, status)      probe every recipient, deliver nothing
    Client.close()
"""

from __future__ import annotations

from typing import Callable, Iterator

from pymaster.mail import delivery, verp
from pymaster.mail.config import Config
from pymaster.mail.scache_client import ScacheClient
from pymaster.util import log
from pymaster.util.tables import TableError
from services.smtp import sasl, tls, transaction
from services.smtp.cache import ConnectionCache, SessionCache
from services.smtp.content import any_8bit, wire_chunks
from services.smtp.dns import DnsError, Host, HostLookup
from services.smtp.generic import UNCHANGED, GenericMaps
from services.smtp.mime7bit import downgrade
from services.smtp.nexthop import Destination, NextHopError, parse_destinations
from services.smtp.reply import HARD, OK, said
from services.smtp.session import Session, SessionError
from services.smtp.settings import Settings
from services.smtp.transaction import RCPT_TO

# DNS outcomes after which a fallback relay would not help.
NO_FALLBACK_DSNS = ("5.1.10", "5.4.6")
# RFC 5321 4.5.3.1.10: the RCPT reply for "too many recipients".
TOO_MANY_RECIPIENTS = 452
# The size of the pieces a whole (converted) message is sent in.
SEND_CHUNK = 65536


class Client:
    """The smtp/lmtp client of one process: settings, lookups, cache."""

    def __init__(self, cfg: Config, settings: Settings, lookup: HostLookup | None = None,
                 cache: ConnectionCache | None = None,
                 shared: ScacheClient | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.lookup = lookup or HostLookup(settings, cfg)
        self.cache = cache or ConnectionCache(settings.cache_time_limit,
                                              settings.reuse_time_limit,
                                              reuse_count=settings.reuse_count_limit)
        self.sessions = SessionCache(settings, self.cache, shared)
        self.generic = GenericMaps(cfg, settings.param("_generic_maps"))
        self.tls = tls.TlsClient(cfg, settings)
        self.tls_level = self.tls.default_level
        self.sasl = sasl.SaslClient(cfg, settings)
        self.cache_destinations = {d.lower() for d in settings.cache_destinations}

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """deliver - one request, every recipient reported through STATUS."""
        Attempt(self, req, status).run()

    def verify(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """verify - probe every recipient of REQ (MAIL, RCPT, no DATA)."""
        Attempt(self, req, status, probe=True).run()

    def listed(self, nexthop: str) -> bool:
        """listed - NEXTHOP is in smtp_connection_cache_destinations."""
        return nexthop.lower() in self.cache_destinations \
            or nexthop.strip("[]").lower() in self.cache_destinations

    def caching(self, req: delivery.DeliveryRequest) -> bool:
        """caching - whether a session that served REQ is kept for reuse: its
        next hop is listed, or on demand when qmgr has more mail waiting for
        it (a request that does not say, as from a test, counts as waiting)."""
        return self.listed(req.nexthop) or \
            (self.settings.cache_on_demand and req.backlog is not False)

    def looking(self, req: delivery.DeliveryRequest) -> bool:
        """looking - whether a cached session may exist for REQ's next hop: it
        is listed, or on demand when qmgr says an earlier request to it may
        have left one (a request that does not say counts as may)."""
        return self.listed(req.nexthop) or \
            (self.settings.cache_on_demand and req.cache_lookup is not False)

    def close(self) -> None:
        self.sessions.close_all()


class Attempt:
    """The state of one delivery request while hosts are tried."""

    def __init__(self, client: Client, req: delivery.DeliveryRequest,
                 status: delivery.Status, probe: bool = False) -> None:
        self.client = client
        self.probe = probe            # verify mode: RCPT replies only, no DATA
        self.settings = client.settings
        self.req = req
        self.status = status
        self.pending = list(req.recipients)
        self.soft: dict[int, tuple[str, str, str]] = {}   # id(rcpt) -> relay, reason, dsn
        self.error: tuple[str, str, str] | None = None    # relay, reason, dsn of the hop
        self.answered = False
        self.connected = False
        self.addresses_tried = 0
        self.sessions = 0
        self.cache_key = f"{req.transport}:{req.nexthop}".lower()
        self._8bit: bool | None = None      # the content, scanned once when it matters
        self._headers = UNCHANGED
        self.envelope: transaction.Envelope | None = None

    # -- the whole attempt -------------------------------------------------
    def run(self) -> None:
        if not self._prepare():
            return
        cached = self.client.sessions.find_dest(self.cache_key) \
            if self.client.looking(self.req) else None
        if cached is not None:
            self._use(cached, reused=True)
        if self.pending:
            self._try_destinations(self.req.nexthop, fallback=False)
        if self.pending and self._fallback_allowed():
            self._try_destinations(" ".join(self.settings.fallback_relay), fallback=True)
        self._finish()

    def _prepare(self) -> bool:
        """_prepare - the envelope, with generic maps applied; False when deferred."""
        try:
            sender = self.client.generic.rewrite(verp.request_sender(self.req))
            addresses = [self.client.generic.rewrite(r.address) for r in self.pending]
            if not self.probe:      # a probe sends no content: nothing to rewrite
                self._headers = self.client.generic.header_block(delivery.open_content(self.req))
        except TableError as e:   # try again later, never bounce
            log.warning(f"{self.req.queue_id}: {self.settings.param('_generic_maps')} "
                        f"lookup error: {e}")
            self._defer_all("none", "generic address mapping lookup failure", "4.3.0")
            return False
        msg = delivery.open_content(self.req)
        attrs = dict(msg.attrs)
        attrs.update(self.req.attrs)
        smtputf8 = str(attrs.get("smtputf8", "")).lower() in ("true", "1", "yes") \
            and not all(a.isascii() for a in [sender, *addresses])
        self.envelope = transaction.Envelope(
            sender=sender, recipients=list(self.pending), addresses=addresses,
            size=msg.content_length, body_8bit=str(attrs.get("body", "")).upper() == "8BITMIME",
            smtputf8=smtputf8, attrs=attrs)
        return True

    def _try_destinations(self, text: str, fallback: bool) -> None:
        try:
            dests = parse_destinations(text, self.settings.port, self.settings.lmtp,
                                       dns=not self.settings.disable_dns)
        except NextHopError as e:
            self._hop_error("none", f"{e}", "4.3.5")
            return
        for dest in dests:
            if not self.pending or self._limits_reached():
                return
            try:
                policy = self.client.tls.policy(dest.text, dest.host)
                hosts = self.client.lookup.hosts(dest)
            except tls.PolicyError as e:
                log.warning(f"{e}")
                self._hop_error("none", f"{e}", "4.7.5")
                continue
            except DnsError as e:
                self._hop_error("none", e.reason, e.dsn)
                continue
            for host in hosts:
                if not self.pending or self._limits_reached():
                    return
                self._try_host(host, dest, policy)

    def _fallback_allowed(self) -> bool:
        if self.settings.lmtp or not self.settings.fallback_relay:
            return False
        if self.error is not None and self.error[2] in NO_FALLBACK_DSNS:
            return False
        listed = {f.lower() for f in self.settings.fallback_relay}
        return self.req.nexthop.lower() not in listed

    def _limits_reached(self) -> bool:
        s = self.settings
        return bool((s.mx_address_limit and self.addresses_tried >= s.mx_address_limit)
                    or (s.mx_session_limit and self.sessions >= s.mx_session_limit))

    # -- one host ----------------------------------------------------------
    def _try_host(self, host: Host, dest: Destination, policy: tls.Policy,
                  retry: bool = False) -> None:
        if not retry:
            self.addresses_tried += 1
        label = self._endp_label(host, policy)
        cached = self._find_endp(label, policy) if not retry else None
        if cached is not None:
            self.sessions += 1
            if not self._use(cached, reused=True):
                return
            self.sessions -= 1          # it had died: connect afresh
        session = Session(host, self.settings)
        session.label = label
        try:
            session.connect()
        except SessionError as e:
            log.info(e.reason)
            self._hop_error("none", e.reason, e.dsn)
            return
        if not retry:
            self.sessions += 1
        try:
            self._use(session, reused=False, dest=dest, policy=policy)
        except tls.PlaintextRetry as e:
            # Postfix's `may`: a failed handshake is retried once without TLS.
            session.close(quit=False)
            log.info(f"{e.reason}; retrying without TLS")
            self._try_host(host, dest, policy.plaintext(), retry=True)

    def _endp_label(self, host: Host, policy: tls.Policy) -> str:
        """_endp_label - the cache's name for a session to HOST under POLICY:
        a session is only found by a client that would have made the same one."""
        where = host.addr if host.unix else f"{host.addr}:{host.port}"
        return f"{self.req.transport}:{where}:{policy.level}:".lower()

    def _find_endp(self, label: str, policy: tls.Policy) -> Session | None:
        """_find_endp - a session another request left open to this address.
        Only plaintext sessions are shared, so none when TLS is required;
        none when AUTH may be needed either (its user is part of the label)."""
        if policy.required or self.client.sasl.enabled \
                or not self.client.looking(self.req):
            return None
        return self.client.sessions.find_endp(label)

    def _use(self, session: Session, reused: bool, dest: Destination | None = None,
             policy: tls.Policy | None = None) -> bool:
        """_use - SESSION's transactions for the pending recipients; True when
        a reused session turned out dead before it carried anything."""
        try:
            if not reused:
                assert dest is not None and policy is not None  # a new session comes with both
                session.handshake()
                tls.check(session, policy, self.client.tls)
                session.sasl_user = self.client.sasl.authenticate(session, self.req.sender,
                                                                  dest.text)
                if session.sasl_user:
                    session.label += session.sasl_user.lower()
            if not self.connected:
                self.connected = True
                self.status.connected()
            if self._refuse_before_mail(session):
                self._release(session)
                return False
            self._transactions(session, reused)
        except transaction.StaleSession:
            session.close(quit=False)
            return True
        except transaction.ContentError as e:
            session.close(quit=False)
            self._content_failed(e)
            return False
        except tls.PlaintextRetry:
            raise
        except SessionError as e:
            session.close(quit=e.site)
            self._session_failed(session.host, e)
            return False
        self._release(session)
        return False

    def _transactions(self, session: Session, reused: bool) -> None:
        """_transactions - the pending recipients on SESSION; those the server
        could not take in one transaction (452) go in the next."""
        rcpts = list(self.pending)
        while rcpts and session.usable:
            answers = transaction.run(session, self._envelope(rcpts), self._wire_for(session),
                                      reset=reused, xforward=self._xforward(session),
                                      probe=self.probe)
            rcpts = self._apply(session.host, answers)
            # A probe's transaction is still open: the next one starts with RSET.
            reused = self.probe

    def _release(self, session: Session) -> None:
        # A session authenticated as one sender is not reused for another.
        sender_bound = session.sasl_user and self.client.sasl.sender_dependent
        keep = session.usable and self.client.caching(self.req) and not sender_bound
        # A probe leaves its transaction open: end it now, not at the next use.
        if keep and self.probe and not transaction.reset(session):
            keep = False
        if keep:
            self.client.sessions.save(session, self.cache_key)
        else:
            session.close()

    def _content_failed(self, e: transaction.ContentError) -> None:
        """_content_failed - the queue file failed under DATA: another host would
        fare no better, so every pending recipient waits for a later try."""
        log.warning(f"{self.req.queue_id}: read queue file {self.req.path}: {e}")
        self.answered = True
        self._defer_all("none", "unreadable mail queue entry", "4.3.0")

    def _session_failed(self, host: Host, e: SessionError) -> None:
        if e.site or e.soft:
            self._hop_error(host.relay, e.reason, e.dsn)
        else:
            # The server refused the mail outright (5xx greeting or HELO).
            self.answered = True
            for rcpt in list(self.pending):
                self._bounce(rcpt, host.relay, e.reason, e.dsn)

    def _refuse_before_mail(self, session: Session) -> bool:
        """_refuse_before_mail - bounce what the server cannot take (SIZE, SMTPUTF8)."""
        env = self.envelope
        assert env is not None  # made before any session
        limit = session.size_limit
        host = session.host
        if limit is not None and env.size > limit:
            reason = f"message size {env.size} exceeds size limit {limit} of server {host.namaddr}"
            return self._bounce_all(host.relay, reason, "5.3.4")
        if env.smtputf8 and not session.has("SMTPUTF8"):
            reason = f"SMTPUTF8 is required, but was not offered by host {host.namaddr}"
            return self._bounce_all(host.relay, reason, "5.6.7")
        return False

    def _bounce_all(self, relay: str, reason: str, dsn: str) -> bool:
        self.answered = True
        for rcpt in list(self.pending):
            self._bounce(rcpt, relay, reason, dsn)
        return True

    def _xforward(self, session: Session) -> bool:
        return self.settings.send_xforward and session.has("XFORWARD")

    # -- results -----------------------------------------------------------
    def _apply(self, host: Host, answers: list[transaction.Answer]) -> list:
        """_apply - each recipient's outcome; the recipients to send again in
        a new transaction (a 452 to RCPT while others went through)."""
        self.answered = True
        progress = any(a.reply.kind == OK for a in answers)
        again = []
        for a in answers:
            if a.reply.kind == OK:
                self.pending.remove(a.rcpt)
                self.soft.pop(id(a.rcpt), None)
                self._sent(host, a)
            elif a.reply.kind == HARD:
                self._bounce(a.rcpt, host.relay, said(host.namaddr, a.reply, a.command),
                             a.reply.dsn)
            else:
                # Kept as a soft failure too: if the session ends before the
                # next transaction, this is the reason it is deferred with.
                self.soft[id(a.rcpt)] = (host.relay, said(host.namaddr, a.reply, a.command),
                                         a.reply.dsn)
                if progress and a.command == RCPT_TO and a.reply.code == TOO_MANY_RECIPIENTS:
                    again.append(a.rcpt)
        return again

    def _sent(self, host: Host, a: transaction.Answer) -> None:
        if self.probe:
            # The report names the server and its reply, as Postfix's does.
            self.status.verify_result(a.rcpt, True, host.relay, a.reply.text, a.reply.dsn,
                                      remote_mta=host.name, diag_type="smtp")
        else:
            self.status.sent(a.rcpt, host.relay, a.reply.text, a.reply.dsn)

    def _bounce(self, rcpt, relay: str, reason: str, dsn: str) -> None:
        self.pending.remove(rcpt)
        self.soft.pop(id(rcpt), None)
        self.status.bounced(rcpt, relay, reason, dsn)

    def _hop_error(self, relay: str, reason: str, dsn: str) -> None:
        # A temporary failure outweighs a permanent one met elsewhere.
        if self.error is None or dsn.startswith("4") or self.error[2].startswith("5"):
            self.error = (relay, reason, dsn)

    def _defer_all(self, relay: str, reason: str, dsn: str) -> None:
        for rcpt in list(self.pending):
            self.status.deferred(rcpt, relay, reason, dsn)
        self.pending.clear()

    def _finish(self) -> None:
        """_finish - every recipient still pending gets its last reason."""
        relay, reason, dsn = self.error or ("none", "no mail host found", "4.4.4")
        if self.pending and not self.answered and dsn.startswith("4"):
            self.status.hop_failed(reason, dsn)
        for rcpt in list(self.pending):
            if id(rcpt) in self.soft:
                self.status.deferred(rcpt, *self.soft[id(rcpt)])
            elif dsn.startswith("5"):
                self.status.bounced(rcpt, relay, reason, dsn)
            else:
                self.status.deferred(rcpt, relay, reason, dsn)
        self.pending.clear()

    # -- the envelope and content ------------------------------------------
    def _envelope(self, rcpts: list) -> transaction.Envelope:
        """_envelope - the envelope narrowed to RCPTS."""
        env = self.envelope
        assert env is not None  # made before any session
        index = {id(r): i for i, r in enumerate(env.recipients)}
        return transaction.Envelope(
            sender=env.sender, recipients=list(rcpts),
            addresses=[env.addresses[index[id(r)]] for r in rcpts],
            size=env.size, body_8bit=env.body_8bit, smtputf8=env.smtputf8, attrs=env.attrs)

    def _wire_for(self, session: Session) -> Callable[[], Iterator[bytes]]:
        """_wire_for - a function giving the content as SESSION should get it,
        read afresh from the queue file each time it is called."""
        def wire() -> Iterator[bytes]:
            limit = self.settings.line_length_limit
            if self._downgrade_for(session):
                return wire_chunks(_pieces(downgrade(b"".join(self._content()))), limit)
            return wire_chunks(self._content(), limit)
        return wire

    def _downgrade_for(self, session: Session) -> bool:
        """_downgrade_for - whether SESSION needs 8-bit content made 7-bit."""
        if session.has("8BITMIME") or not self.settings.mime_output_conversion:
            return False
        if self.envelope is not None and self.envelope.body_8bit:
            return True
        if self._8bit is None:
            self._8bit = any_8bit(self._content())
        return self._8bit

    def _content(self) -> Iterator[bytes]:
        """_content - headers (rewritten) and body, in chunks from the queue file."""
        return self._headers.stream(delivery.open_content(self.req).iter_content())


def _pieces(data: bytes) -> Iterator[bytes]:
    """_pieces - DATA in SEND_CHUNK slices, so that no wire copy of it is made whole."""
    view = memoryview(data)
    for start in range(0, len(data), SEND_CHUNK):
        yield bytes(view[start:start + SEND_CHUNK])
