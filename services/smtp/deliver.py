"""Delivering one request: choose hosts, run sessions, report each recipient.

For a delivery request (a queue file, a next hop, some recipients) the
client first tries a cached session for that next hop, then the next
hop's hosts in order (dns.py), at most smtp_mx_address_limit addresses
and smtp_mx_session_limit established sessions, then smtp_fallback_relay
when recipients are still undelivered. Each session runs one
transaction (transaction.py) for the recipients still pending:

    2xx                  sent    (status=sent, the server's reply as reason)
    5xx                  bounced (host H[A] said: ... (in reply to X command))
    4xx, lost connection deferred, but first the next host is tried
    connect failure      logged, next host; "connect to H[A]:25: ..." if last
    DNS failure          bounced (not found, nullMX, loop) or deferred (try again)

Recipients left after the last host are deferred with the last reason
they met. When no session got as far as an answer for any recipient the
next hop itself is reported down (status.hop_failed) so qmgr backs off.
The message is read from the queue file, once per request, never from
the wire; 8-bit content is made quoted-printable for a server without
8BITMIME (mime7bit.py).

After EHLO a new session does STARTTLS as the destination's TLS policy
says (tls.py: smtp_tls_security_level, smtp_tls_policy_maps) and then AUTH
when a password is known (sasl.py); a failure of either is a failure of
that host. A failed handshake at `may` reconnects once in plain text.

Interface:
    Client(cfg, settings, lookup=None, cache=None).deliver(req, status)
    Client.close()
"""

from __future__ import annotations

from pymaster import delivery, log
from pymaster.config import Config
from pymaster.tables import TableError
from services.smtp import sasl, tls, transaction
from services.smtp.cache import ConnectionCache
from services.smtp.content import is_8bit, to_wire
from services.smtp.dns import DnsError, Host, HostLookup
from services.smtp.generic import GenericMaps
from services.smtp.mime7bit import downgrade
from services.smtp.nexthop import Destination, NextHopError, parse_destinations
from services.smtp.reply import HARD, OK, said
from services.smtp.session import Session, SessionError
from services.smtp.settings import Settings

# DNS outcomes after which a fallback relay would not help.
NO_FALLBACK_DSNS = ("5.1.10", "5.4.6")


class Client:
    """The smtp/lmtp client of one process: settings, lookups, cache."""

    def __init__(self, cfg: Config, settings: Settings, lookup: HostLookup | None = None,
                 cache: ConnectionCache | None = None) -> None:
        self.cfg = cfg
        self.settings = settings
        self.lookup = lookup or HostLookup(settings, cfg)
        self.cache = cache or ConnectionCache(settings.cache_time_limit,
                                              settings.reuse_time_limit)
        self.generic = GenericMaps(cfg, settings.param("_generic_maps"))
        self.tls = tls.TlsClient(cfg, settings)
        self.tls_level = self.tls.default_level
        self.sasl = sasl.SaslClient(cfg, settings)
        self.cache_destinations = {d.lower() for d in settings.cache_destinations}

    def deliver(self, req: delivery.DeliveryRequest, status: delivery.Status) -> None:
        """deliver - one request, every recipient reported through STATUS."""
        Attempt(self, req, status).run()

    def caching(self, nexthop: str) -> bool:
        """caching - whether sessions to NEXTHOP are kept for reuse."""
        return self.settings.cache_on_demand or nexthop.lower() in self.cache_destinations \
            or nexthop.strip("[]").lower() in self.cache_destinations

    def close(self) -> None:
        self.cache.close_all()


class Attempt:
    """The state of one delivery request while hosts are tried."""

    def __init__(self, client: Client, req: delivery.DeliveryRequest,
                 status: delivery.Status) -> None:
        self.client = client
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
        self._content: bytes | None = None
        self._wire: dict[bool, bytes] = {}
        self.envelope: transaction.Envelope | None = None

    # -- the whole attempt -------------------------------------------------
    def run(self) -> None:
        if not self._prepare():
            return
        cached = self.client.cache.take(self.cache_key)
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
            sender = self.client.generic.rewrite(self.req.sender)
            addresses = [self.client.generic.rewrite(r.address) for r in self.pending]
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
        session = Session(host, self.settings)
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

    def _use(self, session: Session, reused: bool, dest: Destination | None = None,
             policy: tls.Policy | None = None) -> None:
        """_use - one transaction on SESSION for the pending recipients."""
        try:
            if not reused:
                session.handshake()
                tls.check(session, policy, self.client.tls)
                session.sasl_user = self.client.sasl.authenticate(session, self.req.sender,
                                                                  dest.text)
            if not self.connected:
                self.connected = True
                self.status.connected()
            if self._refuse_before_mail(session):
                return self._release(session)
            answers = transaction.run(session, self._envelope(), self._wire_for(session),
                                      reset=reused, xforward=self._xforward(session))
        except transaction.StaleSession:
            session.close(quit=False)
            return
        except tls.PlaintextRetry:
            raise
        except SessionError as e:
            session.close(quit=e.site)
            self._session_failed(session.host, e)
            return
        self._apply(session.host, answers)
        self._release(session)

    def _release(self, session: Session) -> None:
        # A session authenticated as one sender is not reused for another.
        sender_bound = session.sasl_user and self.client.sasl.sender_dependent
        if session.usable and self.client.caching(self.req.nexthop) and not sender_bound:
            self.client.cache.put(self.cache_key, session)
        else:
            session.close()

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
    def _apply(self, host: Host, answers: list[transaction.Answer]) -> None:
        self.answered = True
        for a in answers:
            if a.reply.kind == OK:
                self.pending.remove(a.rcpt)
                self.soft.pop(id(a.rcpt), None)
                self.status.sent(a.rcpt, host.relay, a.reply.text, a.reply.dsn)
            elif a.reply.kind == HARD:
                self._bounce(a.rcpt, host.relay, said(host.namaddr, a.reply, a.command),
                             a.reply.dsn)
            else:
                self.soft[id(a.rcpt)] = (host.relay, said(host.namaddr, a.reply, a.command),
                                         a.reply.dsn)

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
    def _envelope(self) -> transaction.Envelope:
        """_envelope - the envelope narrowed to the recipients still pending."""
        env = self.envelope
        index = {id(r): i for i, r in enumerate(env.recipients)}
        return transaction.Envelope(
            sender=env.sender, recipients=list(self.pending),
            addresses=[env.addresses[index[id(r)]] for r in self.pending],
            size=env.size, body_8bit=env.body_8bit, smtputf8=env.smtputf8, attrs=env.attrs)

    def _wire_for(self, session: Session):
        """_wire_for - a function giving the content as SESSION should get it."""
        def wire() -> bytes:
            content = self._read_content()
            convert = (not session.has("8BITMIME") and self.settings.mime_output_conversion
                       and (self.envelope.body_8bit or is_8bit(content)))
            if convert not in self._wire:
                data = downgrade(content) if convert else content
                self._wire[convert] = to_wire(data, self.settings.line_length_limit)
            return self._wire[convert]
        return wire

    def _read_content(self) -> bytes:
        if self._content is None:
            self._content = delivery.open_content(self.req).read_content()
        return self._content
