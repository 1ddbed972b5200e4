"""Policy delegation: check_policy_service (Postfix's SMTPD_POLICY_README protocol).

smtpd sends the policy server one request per check, as `name=value` lines
ended by an empty line:
    request=smtpd_access_policy
    protocol_state=RCPT
    protocol_name=ESMTP
    client_address=192.0.2.1
    ...
and reads `action=WHATEVER` and an empty line back. The action is an
access(5) answer (OK, DUNNO, REJECT text, DEFER_IF_PERMIT text, PREPEND
header, a restriction …), evaluated by access.py.

Endpoints: `inet:host:port` and `unix:/path` (a path without a leading
slash is relative to the queue directory, like Postfix's `unix:private/
policy`). The connection is kept between requests and closed after
smtpd_policy_service_max_idle idle seconds, smtpd_policy_service_max_ttl
seconds of life or smtpd_policy_service_request_limit requests. A request
that fails is tried smtpd_policy_service_try_limit times,
smtpd_policy_service_retry_delay apart; when every try fails the answer is
smtpd_policy_service_default_action (451 4.3.5 Server configuration problem).

Interface:
    PolicyClient.from_config(cfg, endpoint).query(attrs: dict) -> str | None
    RESTRICTIONS   the check_policy_service entry for check.py's table
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, BinaryIO

from pymaster.util import log
from services.smtpd.access import access_action
from services.smtpd.verdict import Context, Verdict

if TYPE_CHECKING:       # check.py imports this module to build its table
    from services.smtpd.check import Checker

MAX_REPLY = 100_000


class PolicyError(Exception):
    """The policy server could not be reached or answered nonsense."""


class PolicyClient:
    """One policy server: a kept-alive connection shared by this process's sessions."""

    def __init__(self, endpoint: str, timeout: float, max_idle: float, max_ttl: float,
                 request_limit: int, try_limit: int, retry_delay: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_ttl = max_ttl
        self.request_limit = request_limit
        self.try_limit = max(1, try_limit)
        self.retry_delay = retry_delay
        self.sock: socket.socket | None = None
        self.rfile: BinaryIO | None = None
        self.opened = self.used = 0.0
        self.requests = 0
        self.lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg, endpoint: str) -> "PolicyClient":
        return cls(endpoint, float(cfg.time("smtpd_policy_service_timeout")),
                   float(cfg.time("smtpd_policy_service_max_idle")),
                   float(cfg.time("smtpd_policy_service_max_ttl")),
                   cfg.int("smtpd_policy_service_request_limit"),
                   cfg.int("smtpd_policy_service_try_limit"),
                   float(cfg.time("smtpd_policy_service_retry_delay")))

    # -- the connection ------------------------------------------------------
    def _connect(self) -> None:
        kind, _, where = self.endpoint.partition(":")
        if kind == "inet":
            host, _, port = where.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), self.timeout)
        elif kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(where)
        else:
            raise PolicyError(f"unsupported policy service endpoint: {self.endpoint}")
        sock.settimeout(self.timeout)
        self.sock, self.rfile = sock, sock.makefile("rb")
        self.opened = time.monotonic()
        self.requests = 0

    def close(self) -> None:
        if self.sock is not None:
            assert self.rfile is not None  # opened with sock
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = self.rfile = None

    def _expired(self) -> bool:
        now = time.monotonic()
        return (now - self.used > self.max_idle or now - self.opened > self.max_ttl or
                (self.request_limit > 0 and self.requests >= self.request_limit))

    # -- one request -----------------------------------------------------------
    def query(self, attrs: dict[str, str]) -> str:
        """query - the server's action for ATTRS; raises PolicyError when every try failed."""
        request = "".join(f"{k}={_clean(v)}\n" for k, v in attrs.items()) + "\n"
        with self.lock:
            error = None
            for attempt in range(self.try_limit):
                if attempt:
                    time.sleep(self.retry_delay)
                try:
                    return self._exchange(request.encode("utf-8", "surrogateescape"))
                except (OSError, PolicyError, ValueError) as e:
                    error = e
                    self.close()
            raise PolicyError(f"{self.endpoint}: {error}")

    def _exchange(self, request: bytes) -> str:
        if self.sock is not None and self._expired():
            self.close()
        if self.sock is None:
            self._connect()
        assert self.sock is not None and self.rfile is not None  # _connect opened them
        self.sock.sendall(request)
        action = None
        total = 0
        while True:
            line = self.rfile.readline(MAX_REPLY)
            if not line:
                raise PolicyError("connection closed by policy server")
            total += len(line)
            if total > MAX_REPLY:
                raise PolicyError("policy server reply too long")
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                break
            name, _, value = text.partition("=")
            if name == "action":
                action = value
        self.requests += 1
        self.used = time.monotonic()
        if action is None:
            raise PolicyError("policy server reply has no action")
        return action


def _clean(value) -> str:
    """_clean - a value on one line: the protocol has no escapes."""
    return str(value if value is not None else "").replace("\n", " ").replace("\r", " ")


def request_attributes(checker: Checker, ctx: Context) -> dict[str, str]:
    """request_attributes - the Postfix policy request for this moment of the session."""
    return {
        "request": "smtpd_access_policy",
        "protocol_state": ctx.verb,
        "protocol_name": ctx.protocol,
        "helo_name": ctx.helo or "",
        "queue_id": ctx.queue_id,
        "sender": ctx.sender or "",
        "recipient": ctx.recipient or "",
        "recipient_count": str(ctx.recipient_count),
        "client_address": ctx.client_addr,
        "client_name": ctx.client_name,
        "client_port": ctx.client_port,
        "reverse_client_name": ctx.reverse_client_name,
        "server_address": ctx.server_addr,
        "server_port": ctx.server_port,
        "instance": ctx.instance,
        "sasl_method": ctx.sasl_method,
        "sasl_username": ctx.sasl_username,
        "sasl_sender": ctx.sasl_sender,
        "size": str(ctx.size),
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": ctx.ccert_fingerprint,
        "ccert_pubkey_fingerprint": ctx.ccert_pubkey_fingerprint,
        "encryption_protocol": "",
        "encryption_cipher": "",
        "encryption_keysize": "0",
        "etrn_domain": ctx.etrn_domain,
        "stress": "",
        "policy_context": checker.cfg.get("smtpd_policy_service_policy_context"),
        "compatibility_level": checker.cfg.get("compatibility_level"),
        "mail_version": checker.cfg.get("mail_version"),
    }


def check_policy_service(checker: Checker, ctx: Context, endpoint: str) -> Verdict | None:
    client = checker.policy_client(endpoint)
    try:
        action = client.query(request_attributes(checker, ctx))
    except PolicyError as e:
        log.warning(f"problem talking to server {endpoint}: {e}")
        action = checker.cfg.get("smtpd_policy_service_default_action")
    return access_action(checker, ctx, action.strip(), endpoint)


RESTRICTIONS: dict[str, tuple] = {
    "check_policy_service": (check_policy_service, "service"),
}
