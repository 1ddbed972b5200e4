"""Per-client limits enforced with the anvil service (Postfix's smtpd_client_*_limit).

smtpd tells anvil about each connection, message, recipient, TLS session
and AUTH of a client ("smtp:192.0.2.1"); anvil answers with the client's
current count and its rate in the current anvil_rate_time_unit. A client
over a limit gets Postfix's reply and warning; a client in
smtpd_client_event_limit_exceptions (default $mynetworks) is never limited.
When anvil does not answer, nobody is limited (Postfix does the same: a
missing anvil must not stop mail).

As in Postfix, anvil hears nothing when every limit is 0 (no Limits at
all), nor about an exempt client; a connection costs one round trip
(connect answers count and rate together), and its end is a one-way
`disconnect` that nobody waits for.

Replies and warnings:
    421 4.7.0 HOST Error: too many connections from ADDR
        warning: Connection concurrency limit exceeded: N from NAME[ADDR] for service smtp
        warning: Connection rate limit exceeded: N from NAME[ADDR] for service smtp
    450 4.7.1 Error: too many messages from ADDR
        warning: Message delivery request rate limit exceeded: N from NAME[ADDR] for service smtp
    450 4.7.1 Error: too many recipients from ADDR
        warning: Recipient address rate limit exceeded: N from NAME[ADDR] for service smtp

Interface:
    Limits.from_config(cfg, service_name) (None without anvil or without any limit)
    await limits.connect(peer) -> reply | None;  await limits.disconnect(peer)
    await limits.message(peer) / recipient(peer) / auth(peer) / newtls(peer) -> reply | None
    limits.close()      at exit: waits (briefly) until anvil has every disconnect
"""

from __future__ import annotations

import os
import time

from pymaster.mail.config import Config
from pymaster.util import ipc, log
from services.smtpd import replies
from services.smtpd.netlist import NetList
from services.smtpd.peer import Peer

ANVIL_TIMEOUT = 5.0
# the middle of each smtpd_client_NAME_rate_limit
RATE_PARAMETERS = ("connection", "message", "recipient", "new_tls_session", "auth")
RETRY_AFTER_FAILURE = 60.0


class Limits:
    def __init__(self, cfg: Config, service: str, endpoint: str) -> None:
        self.service = service
        self.hostname = cfg.get("myhostname")
        self.exceptions = NetList.from_param(cfg, "smtpd_client_event_limit_exceptions")
        self.count_limit = cfg.int("smtpd_client_connection_count_limit")
        self.rate_limits = {
            "connect": cfg.int("smtpd_client_connection_rate_limit"),
            "message": cfg.int("smtpd_client_message_rate_limit"),
            "recipient": cfg.int("smtpd_client_recipient_rate_limit"),
            "newtls": cfg.int("smtpd_client_new_tls_session_rate_limit"),
            "auth": cfg.int("smtpd_client_auth_rate_limit"),
        }
        self.client = ipc.AioClient(endpoint, ANVIL_TIMEOUT)
        self.down_until = 0.0

    @classmethod
    def from_config(cls, cfg: Config, service: str) -> "Limits | None":
        """from_config - limits for this smtpd, or None when master.cf has no anvil
        or no limit is set (then there is nothing to count)."""
        if cfg.int("smtpd_client_connection_count_limit") <= 0 and \
                all(cfg.int(f"smtpd_client_{name}_rate_limit") <= 0
                    for name in RATE_PARAMETERS):
            return None
        for visibility in ("private", "public"):
            if os.path.exists(os.path.join(visibility, "anvil")):
                return cls(cfg, service, ipc.endpoint(visibility, "anvil"))
        return None

    def _ident(self, peer: Peer) -> str:
        return f"{self.service}:{peer.addr}"

    def _exempt(self, peer: Peer) -> bool:
        return self.exceptions.match(peer.addr, peer.name)

    async def _tell(self, op: str, peer: Peer) -> dict | None:
        if time.monotonic() < self.down_until:
            return None
        try:
            answer = await self.client.request({"op": op, "ident": self._ident(peer)})
        except ipc.IpcError as e:
            log.warning(f"problem talking to service anvil: {e}")
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            return None
        return answer if answer.get("status") == "ok" else None

    def _warn(self, what: str, n: int, peer: Peer) -> None:
        log.warning(f"{what} limit exceeded: {n} from {peer.namaddr} for service {self.service}")

    # -- events --------------------------------------------------------------
    async def connect(self, peer: Peer) -> str | None:
        """connect - register a connection; the 421 reply when the client has too many.
        An exempt client is not registered at all (disconnect() knows it too)."""
        if self._exempt(peer):
            return None
        answer = await self._tell("connect", peer)
        if answer is None:
            return None
        count, rate = int(answer.get("count", 0)), int(answer.get("rate", 0))
        refusal = replies.ERR_TOO_MANY_CONNECTIONS.format(
            hostname=self.hostname, addr=peer.addr)
        if self.count_limit > 0 and count > self.count_limit:
            self._warn("Connection concurrency", count, peer)
            return refusal
        if self.rate_limits["connect"] > 0 and rate > self.rate_limits["connect"]:
            self._warn("Connection rate", rate, peer)
            return refusal
        return None

    async def disconnect(self, peer: Peer) -> None:
        """disconnect - one-way: nothing waits for anvil's answer."""
        if self._exempt(peer) or time.monotonic() < self.down_until:
            return
        try:
            self.client.notify({"op": "disconnect", "ident": self._ident(peer)})
        except ipc.IpcError as e:
            log.warning(f"problem talking to service anvil: {e}")

    def close(self) -> None:
        self.client.close()

    async def _rate(self, op: str, peer: Peer, what: str, reply: str) -> str | None:
        if self.rate_limits[op] <= 0 or self._exempt(peer):
            return None
        answer = await self._tell(op, peer)
        if answer is None:
            return None
        rate = int(answer.get("rate", 0))
        if rate > self.rate_limits[op]:
            self._warn(what, rate, peer)
            return reply
        return None

    async def message(self, peer: Peer) -> str | None:
        return await self._rate("message", peer, "Message delivery request rate",
                                replies.ERR_TOO_MANY_MESSAGES.format(addr=peer.addr))

    async def recipient(self, peer: Peer) -> str | None:
        return await self._rate("recipient", peer, "Recipient address rate",
                                replies.ERR_TOO_MANY_RECIPIENTS_FROM.format(addr=peer.addr))

    async def newtls(self, peer: Peer) -> str | None:
        return await self._rate("newtls", peer, "New TLS session rate",
                                replies.ERR_TOO_MANY_NEW_TLS.format(
                                    hostname=self.hostname, addr=peer.addr))

    async def auth(self, peer: Peer) -> str | None:
        return await self._rate("auth", peer, "AUTH command rate",
                                replies.ERR_TOO_MANY_AUTH.format(addr=peer.addr))
