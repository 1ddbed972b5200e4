"""What every SASL server shares: the steps of a conversation and its error.

Interface:
    Step(kind, data=b"", user="", reason="");  CHALLENGE, OK, FAIL
    FAILURE_REASON                the reason a failed login gives the client
    SaslError                     the authentication service is unusable
"""

from __future__ import annotations

from typing import NamedTuple


class SaslError(Exception):
    """The authentication service is unusable (configuration, socket, protocol)."""


class Step(NamedTuple):
    kind: str               # "challenge", "ok" or "fail"
    data: bytes = b""       # the challenge
    user: str = ""          # the authenticated user name (ok)
    reason: str = ""        # why it failed (fail)


CHALLENGE, OK, FAIL = "challenge", "ok", "fail"
FAILURE_REASON = "authentication failure"
