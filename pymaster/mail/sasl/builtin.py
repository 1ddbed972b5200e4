"""The built-in SASL server: PLAIN and LOGIN checked against the password store.

CRAM-MD5 and DIGEST-MD5 need the plain password on the server side; the
store keeps only slow salted hashes (pymaster/mail/sasl/passwd.py), so they are
not offered. Checking a password takes scrypt time, so it runs in a worker
thread and the other sessions of the smtpd process go on meanwhile.

User names: `user@realm` is looked up as given; a bare `user` gets
smtpd_sasl_local_domain as its realm (empty by default), as Cyrus does.

Interface:
    BuiltinServer(path, local_domain)
    .mechanisms(options) -> ["PLAIN", "LOGIN"] minus what OPTIONS exclude
    .conversation(mech, info) -> Conversation
"""

from __future__ import annotations

import asyncio

from pymaster.mail.sasl.mechanisms import filter_mechanisms
from pymaster.mail.sasl.passwd import PasswordFile, PasswordFileError
from pymaster.mail.sasl.steps import CHALLENGE, FAIL, FAILURE_REASON, OK, SaslError, Step

MECHANISMS = ["PLAIN", "LOGIN"]


class BuiltinServer:
    def __init__(self, path: str, local_domain: str = "") -> None:
        self.store = PasswordFile(path)
        self.local_domain = local_domain.strip()
        try:
            self.store.load()
        except PasswordFileError as e:
            raise SaslError(str(e)) from None

    def mechanisms(self, options: set[str]) -> list[str]:
        return filter_mechanisms(MECHANISMS, options)

    def conversation(self, mech: str, info: dict | None = None):
        mech = mech.upper()
        if mech == "PLAIN":
            return PlainConversation(self)
        if mech == "LOGIN":
            return LoginConversation(self)
        raise SaslError(f"unsupported mechanism {mech}")

    async def check(self, user: str, password: str) -> Step:
        """check - verify USER's PASSWORD in a thread; an ok or fail Step."""
        self.store.reload_if_changed()
        name, _, realm = user.rpartition("@") if "@" in user else (user, "", self.local_domain)
        loop = asyncio.get_running_loop()
        good = await loop.run_in_executor(None, self.store.verify, name, realm, password)
        return Step(OK, user=user) if good else Step(FAIL, reason=FAILURE_REASON)


class PlainConversation:
    """RFC 4616: one message `authzid NUL authcid NUL password`."""

    def __init__(self, server: BuiltinServer) -> None:
        self.server = server

    async def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Step(CHALLENGE, b"")
        return await self.respond(initial)

    async def respond(self, data: bytes) -> Step:
        parts = data.split(b"\0")
        if len(parts) != 3:
            return Step(FAIL, reason=FAILURE_REASON)
        try:
            authz, authc, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            return Step(FAIL, reason=FAILURE_REASON)
        # Acting for another user needs an authorization policy we do not have.
        if not authc or (authz and authz != authc):
            return Step(FAIL, reason=FAILURE_REASON)
        return await self.server.check(authc, password)


class LoginConversation:
    """The LOGIN mechanism: "Username:" then "Password:" (the draft most clients follow)."""

    def __init__(self, server: BuiltinServer) -> None:
        self.server = server
        self.user: str | None = None

    async def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Step(CHALLENGE, b"Username:")
        return await self.respond(initial)

    async def respond(self, data: bytes) -> Step:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Step(FAIL, reason=FAILURE_REASON)
        if self.user is None:
            self.user = text
            return Step(CHALLENGE, b"Password:")
        if not self.user:
            return Step(FAIL, reason=FAILURE_REASON)
        return await self.server.check(self.user, text)
