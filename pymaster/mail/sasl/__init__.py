"""SASL for pymaster: the server side of SMTP AUTH and the client's mechanisms.

    steps.py      what every server shares: Step, its kinds, SaslError
    server.py     open_server: the server smtpd_sasl_type names
    passwd.py     the built-in password store (salted scrypt hashes)
    mechanisms.py mechanism properties and the security-option filter
    builtin.py    the built-in server (PLAIN, LOGIN) on the password store
    dovecot.py    the Dovecot authentication protocol client (smtpd_sasl_type = dovecot)
    client.py     the SMTP client's mechanisms (PLAIN, LOGIN, CRAM-MD5)

A server gives conversations; a conversation answers each client message
with a Step: a challenge to send, success with the user name, or failure
with a reason. smtpd (services/smtpd/auth.py) speaks the SMTP side.

Interface:
    open_server(cfg) -> Server        by smtpd_sasl_type (cyrus: the built-in store)
    Server.mechanisms(options: set[str]) -> list[str]
    Server.conversation(mech, info: dict) -> Conversation
    Conversation: await .start(initial: bytes | None) -> Step; await .respond(data) -> Step
    Step(kind="challenge"|"ok"|"fail", data=b"", user="", reason="")
    SaslError
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pymaster.mail.sasl.steps import CHALLENGE, FAIL, FAILURE_REASON, OK, SaslError, Step

if TYPE_CHECKING:
    from pymaster.mail.sasl.server import open_server

__all__ = ["CHALLENGE", "FAIL", "FAILURE_REASON", "OK", "SaslError", "Step", "open_server"]


def __getattr__(name: str) -> Any:
    """open_server is imported on first use (PEP 562): the servers import
    asyncio (with ssl, about 4 MB), which the smtp client, importing only
    mechanisms.py through this package, never needs. smtpd imports
    pymaster.mail.sasl.server itself, before its jail."""
    if name == "open_server":
        from pymaster.mail.sasl.server import open_server
        return open_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
