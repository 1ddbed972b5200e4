"""SASL for pymaster: the server side of SMTP AUTH and the client's mechanisms.

    passwd.py     the built-in password store (salted scrypt hashes)
    mechanisms.py mechanism properties and the security-option filter
    builtin.py    the built-in server (PLAIN, LOGIN) on the password store
    dovecot.py    the Dovecot authentication protocol client (smtpd_sasl_type = dovecot)
    client.py     the SMTP client's mechanisms (PLAIN, LOGIN, CRAM-MD5)

A server gives conversations; a conversation answers each client message
with a Step: a challenge to send, success with the user name, or failure
with a reason. smtpd (services/smtpd/auth.py) speaks the SMTP side.

Interface:
    open_server(cfg) -> Server        by smtpd_sasl_type (cyrus maps to the built-in store)
    Server.mechanisms(options: set[str]) -> list[str]
    Server.conversation(mech, info: dict) -> Conversation
    Conversation: await .start(initial: bytes | None) -> Step; await .respond(data) -> Step
    Step(kind="challenge"|"ok"|"fail", data=b"", user="", reason="")
    SaslError
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


def open_server(cfg):
    """open_server - the SASL server smtpd_sasl_type names.

    `cyrus` (Postfix's default) has no Cyrus library behind it here: it
    means the built-in store, with a note in the log, so a main.cf written
    for Postfix works once saslpasswd2 has created the users."""
    from pymaster.util import log
    kind = cfg.get("smtpd_sasl_type").strip().lower() or "cyrus"
    if kind == "dovecot":
        from pymaster.mail.sasl.dovecot import DovecotServer
        return DovecotServer(cfg.get("smtpd_sasl_path"), cfg.get("smtpd_sasl_service"))
    if kind not in ("pymaster", "cyrus"):
        raise SaslError(f"unsupported SASL server implementation: {kind}")
    from pymaster.mail.sasl.builtin import BuiltinServer
    if kind == "cyrus":
        log.info(f"smtpd_sasl_type = cyrus: using the built-in password store "
                 f"{cfg.get('smtpd_sasl_db')}")
    return BuiltinServer(cfg.get("smtpd_sasl_db"), cfg.get("smtpd_sasl_local_domain"))
