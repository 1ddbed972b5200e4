"""One postscreen session: from the accepted connection to smtpd or goodbye.

    1. the PROXY header, when postscreen_upstream_proxy_protocol = haproxy;
    2. postscreen_access_list: permit (ALLOWLISTED) hands the client to
       smtpd at once; reject (DENYLISTED) applies postscreen_denylist_action;
    3. the cache: a client whose every enabled test passed recently is
       PASS OLD and goes to smtpd at once;
    4. the tests before the greeting, together: the pregreet test (send
       `220-$postscreen_greet_banner`, then wait postscreen_greet_wait for
       a client that talks before its turn) and the DNSBL test (dnsblog
       answers scored against postscreen_dnsbl_threshold);
    5. either the client goes to smtpd (pymaster.master.handoff; PASS NEW
       when it completed every test due), or postscreen's own SMTP engine
       (smtp.py) talks to it: for the deep protocol tests, after which a
       client must reconnect, and for a client that failed a test whose
       action is enforce (its RCPT commands are rejected and logged).

An action is `ignore` (log, carry on, repeat the test next time), `enforce`
(carry on, then reject in postscreen's engine) or `drop` (a 521 reply and
the connection closed).

Interface:
    Context(settings, cache, access, dnsblog_endpoint, zmq_context)
    Session(ctx, conn, client_addr, client_port, server_addr, server_port).run()
    TESTS, EARLY, DEEP
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import zmq.asyncio

from pymaster.master import handoff
from pymaster.util import log

from . import proxy, replies
from .access import AccessList
from .cache import DISABLED, ClientCache, Stamps
from .conn import Conn
from .dnsbl import Query
from .load import Load
from .settings import Settings
from .smtp import Engine

TESTS = ("pregr", "dnsbl", "pipel", "nsmtp", "barlf")
EARLY = {"pregr", "dnsbl"}
DEEP = {"pipel", "nsmtp", "barlf"}
HANDOFF_TIMEOUT = 10.0
PEEK_PAUSE = 0.05      # seconds between looks at a PROXY line that is not complete
BUSY = "421 4.3.2 All server ports are busy"


@dataclass
class Context:
    settings: Settings
    stress_settings: Settings       # main.cf read with stress = yes
    cache: ClientCache
    access: AccessList
    dnsblog: str
    zmq_context: zmq.asyncio.Context
    load: Load

    def enabled(self) -> set[str]:
        s = self.settings
        on = {"pregr"}
        if s.sites:
            on.add("dnsbl")
        for name, flag in (("pipel", s.pipelining_enable), ("nsmtp", s.non_smtp_enable),
                           ("barlf", s.bare_newline_enable)):
            if flag:
                on.add(name)
        return on

    def ttl(self, test: str) -> int:
        s = self.settings
        return {"pregr": s.greet_ttl, "dnsbl": s.dnsbl_ttl, "pipel": s.pipelining_ttl,
                "nsmtp": s.non_smtp_ttl, "barlf": s.bare_newline_ttl}[test]


@dataclass
class Session:
    ctx: Context
    conn: Conn
    addr: str
    port: str
    saddr: str
    sport: str
    start: float = field(default_factory=time.monotonic)
    stamps: Stamps = field(default_factory=Stamps)
    new: bool = True
    todo: set[str] = field(default_factory=set)
    passed: set[str] = field(default_factory=set)
    failed: bool = False
    final_reply: str = ""        # the reply of the first enforced failure
    banner_sent: bool = False    # "220-" went out in the pregreet test
    pregreeted: bool = False     # the client spoke before its turn
    updated: bool = False        # stamps changed: write them back
    stressed: bool = False       # the session began in stress mode

    @property
    def settings(self) -> Settings:
        return self.ctx.stress_settings if self.stressed else self.ctx.settings

    # -- the session -------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.conn.close()

    async def _run(self) -> None:
        if self.settings.proxy_protocol == "haproxy" and not await self._read_proxy():
            return
        replies.connect(self.addr, self.port, self.saddr, self.sport)
        try:
            refusal = self.ctx.load.admit(self.addr)
            self.stressed = self.ctx.load.stress
            if refusal is not None:
                await self._refuse(refusal)
                return
            await self._screen()
        finally:
            self.ctx.load.release(self.addr)

    async def _refuse(self, why: str) -> None:
        """_refuse - too many connections (all of them, or this client's)."""
        if why == "busy":
            log.info(f"reject: connect from {replies.client(self.addr, self.port)}: "
                     f"all screening ports busy")
            await self.conn.send(replies.ALL_BUSY)
        else:
            log.info(f"NOQUEUE: reject: CONNECT from {replies.client(self.addr, self.port)}: "
                     f"too many connections")
            await self.conn.send(replies.TOO_MANY_CONNECTIONS)
        replies.disconnect(self.addr, self.port)

    async def _screen(self) -> None:
        """_screen - the access list, the cache and the tests."""
        verdict = self.ctx.access.check(self.addr)
        if verdict == "permit":
            word = "ALLOWLISTED" if self.settings.respectful else "WHITELISTED"
            replies.allowlisted(word, self.addr, self.port)
            await self.hand_off()
            return
        if verdict == "reject":
            word = "DENYLISTED" if self.settings.respectful else "BLACKLISTED"
            replies.allowlisted(word, self.addr, self.port)
            if not await self.act(self.settings.denylist_action, replies.DENYLIST_DROP,
                                  replies.DENYLIST_ENFORCE):
                return
        self._load_stamps()
        if not self.todo and not self.failed:
            replies.passed(False, self.addr, self.port)
            await self.hand_off()
            return
        if self.todo & EARLY and not await self._early_tests():
            return
        if self.failed or self.todo & DEEP - self.passed:
            await Engine(self).run()
            self.conclude()
            return
        self.conclude(forward=True)
        await self.hand_off()

    def _load_stamps(self) -> None:
        cached = self.ctx.cache.get(self.addr)
        if cached is not None:
            self.stamps, self.new = cached, False
        now = time.time()
        enabled = self.ctx.enabled()
        for test in TESTS:
            if test not in enabled:
                if getattr(self.stamps, test) == 0:
                    setattr(self.stamps, test, DISABLED)
            elif getattr(self.stamps, test) <= now:
                self.todo.add(test)

    async def _read_proxy(self) -> bool:
        """_read_proxy - the client's real addresses from the PROXY line
        (taken off the socket, and nothing after it)."""
        deadline = time.monotonic() + self.settings.proxy_timeout
        try:
            data = await self.conn.peek(deadline - time.monotonic())
            while b"\n" not in data[:proxy.MAX_LINE + 2]:
                if not data:
                    raise proxy.ProxyError("lost connection")
                if len(data) > proxy.MAX_LINE:
                    raise proxy.ProxyError("protocol header too long")
                await asyncio.sleep(PEEK_PAUSE)   # the rest of the line is on its way
                data = await self.conn.peek(deadline - time.monotonic())
            end = data.index(b"\n") + 1
            self.conn.consume(end)
            addrs = proxy.parse(data[:end].rstrip(b"\r\n"))
        except TimeoutError:
            log.warning(f"haproxy read: timeout error from [{self.addr}]:{self.port}")
            return False
        except (proxy.ProxyError, OSError) as e:
            log.warning(f"haproxy read: {e} from [{self.addr}]:{self.port}")
            return False
        if addrs is not None:
            self.addr, self.port, self.saddr, self.sport = addrs
        return True

    # -- the tests before the greeting -------------------------------------
    async def _early_tests(self) -> bool:
        """_early_tests - pregreet and DNSBL; False when the session ended."""
        query = None
        if "dnsbl" in self.todo:
            query = Query(self.settings, self.ctx.dnsblog, self.ctx.zmq_context)
            query.start(self.addr)
        try:
            if "pregr" in self.todo:
                if not await self._pregreet():
                    return False
            if query is not None:
                # The answers get what is left of the greet wait (all of the
                # DNSBL timeout when the pregreet test is not due).
                wait = self.settings.dnsbl_timeout
                if "pregr" in self.todo:
                    wait = self.start + self.settings.greet_wait - time.monotonic()
                await query.wait(wait)
                return await self._dnsbl(query)
            return True
        finally:
            if query is not None:
                query.cancel()

    async def _pregreet(self) -> bool:
        """_pregreet - wait postscreen_greet_wait for input before our turn.

        Input is only peeked at: a client that goes on to smtpd (action
        ignore) or to our engine (enforce) keeps its command."""
        banner = self.settings.greet_banner
        if banner:
            self.banner_sent = True
            if not await self.conn.send(f"220-{banner}"):
                return self.hangup(False)
        deadline = self.start + self.settings.greet_wait
        try:
            data = await self.conn.peek(deadline - time.monotonic())
        except TimeoutError:
            self.pass_test("pregr")
            return True
        if not data:
            return self.hangup(False)
        self.pregreeted = True
        replies.pregreet(len(data), time.monotonic() - self.start, self.addr, self.port, data)
        return await self.act(self.settings.greet_action, replies.PREGREET_DROP,
                              replies.PREGREET_ENFORCE)

    async def _dnsbl(self, query: Query) -> bool:
        s = self.settings
        score, name = query.score()
        if score >= s.dnsbl_threshold:
            replies.dnsbl_rank(score, self.addr, self.port)
            fill = {"addr": self.addr, "name": name}
            return await self.act(s.dnsbl_action, replies.DNSBL_DROP.format(**fill),
                                  replies.DNSBL_ENFORCE.format(**fill))
        if s.dnsbl_allowlist_threshold < 0 and score <= s.dnsbl_allowlist_threshold:
            # A client on enough allow lists skips the other tests too.
            for test in list(self.todo):
                self.pass_test(test)
            return True
        self.pass_test("dnsbl", query.ttl())
        return True

    # -- outcomes ----------------------------------------------------------
    def pass_test(self, test: str, ttl: int | None = None) -> None:
        """pass_test - TEST passed: skip it for TTL seconds (its _ttl parameter)."""
        self.passed.add(test)
        setattr(self.stamps, test, int(time.time()) + (ttl or self.ctx.ttl(test)))
        self.updated = True

    async def act(self, action: str, drop_reply: str, enforce_reply: str) -> bool:
        """act - a failed test's action; False when the session ended (drop)."""
        if action == "drop":
            await self.conn.send(drop_reply)
            self.conclude()
            return False
        if action == "enforce":
            self.failed = True
            self.final_reply = self.final_reply or enforce_reply
        return True

    def hangup(self, handshake: bool) -> bool:
        """hangup - the client went away during the tests."""
        replies.hangup(time.monotonic() - self.start, self.addr, self.port, handshake)
        self.conclude()
        return False

    def conclude(self, forward: bool = False) -> None:
        """conclude - log the blessing when every due test passed, remember
        the results, and say goodbye unless the client goes on to smtpd."""
        if not self.failed and self.todo and self.todo <= self.passed:
            replies.passed(self.new, self.addr, self.port)
        if self.updated:
            self.ctx.cache.put(self.addr, self.stamps)
            self.updated = False
        if not forward:
            replies.disconnect(self.addr, self.port)

    async def hand_off(self) -> None:
        """hand_off - give the connection to smtpd (the pass service)."""
        path = f"private/{self.settings.smtpd_service}"
        attrs = {"client_address": self.addr, "client_port": self.port,
                 "server_address": self.saddr, "server_port": self.sport}
        try:
            await handoff.send_async(path, self.conn.sock, attrs, HANDOFF_TIMEOUT)
            self.conn.release()
        except OSError as e:
            log.warning(f"cannot connect to service {path}: {e.strerror or e}")
            await self.conn.send(BUSY)
