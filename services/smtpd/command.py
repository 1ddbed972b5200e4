"""Parsing SMTP command lines: the verb, and the arguments of MAIL and RCPT.

RFC 5321 4.1.1 gives the commands; RFC 1870 (SIZE), RFC 6152 (8BITMIME),
RFC 3461 (DSN: RET, ENVID, NOTIFY, ORCPT) and RFC 6531 (SMTPUTF8) their
parameters. Errors carry the exact reply Postfix gives.

Interface:
    split_command(line) -> (VERB, argument)
    parse_path(text, strict=False) -> (address, parameter words)   addr.parse_path's answer
    parse_mail(argument, strict=False, smtputf8=True, verp=None) -> MailArgs
                            verp: (default_verp_delimiters, verp_delimiter_filter)
                            for a client allowed XVERP, else None
    parse_rcpt(argument, strict=False, smtputf8=True) -> RcptArgs
    CommandError(reply)     the reply to send for a malformed command
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pymaster.mail import addr
from pymaster.mail import verp as verp_mod
from pymaster.mail.dsn import xtext_decode
from services.smtpd import replies

# RFC 3461 4: xtext is printable ASCII except "+" and "=", with +XX hex escapes.
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_NOTIFY_WORDS = {"SUCCESS", "FAILURE", "DELAY"}
# A path as nearly every client writes it: `<local@domain>` (or `<>`) with a
# dot-atom local part and a host name, then the parameters. Its address is
# the text between the brackets, which is what addr.parse_path finds after
# tokenizing it; any other path goes to parse_path. (Tokenizing was the
# largest part of parsing MAIL and RCPT.)
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_PATH = re.compile(
    rf"<((?:{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)?)>(?:[ \t]+(.*))?", re.S)


class CommandError(Exception):
    """A malformed command; .reply is what the client is told."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass
class MailArgs:
    sender: str
    size: int | None = None
    body: str = ""
    ret: str = ""
    envid: str = ""
    smtputf8: bool = False
    auth: str = ""              # AUTH=, xtext decoded ("<>": none); used once authenticated
    verp: str = ""              # XVERP: the two VERP delimiters


@dataclass
class RcptArgs:
    address: str
    notify: str = ""
    orcpt: str = ""


def split_command(line: str) -> tuple[str, str]:
    """split_command - "mail FROM:<a>" -> ("MAIL", "FROM:<a>")."""
    verb, _, arg = line.strip(" \t").partition(" ")
    return verb.upper(), arg.strip(" \t")


def _path_argument(arg: str, keyword: str, syntax_reply: str) -> str:
    """_path_argument - what follows "FROM:" or "TO:", spaces after the colon allowed."""
    if arg[:len(keyword)].upper() != keyword:
        raise CommandError(syntax_reply)
    rest = arg[len(keyword):].lstrip(" \t")
    if not rest:
        raise CommandError(syntax_reply)
    return rest


def parse_path(text: str, strict: bool = False) -> tuple[str, tuple[str, ...]]:
    """parse_path - (address, parameter words) of "<a@b> SIZE=10", as
    addr.parse_path gives them; addr.AddressError for a malformed path."""
    m = _SIMPLE_PATH.fullmatch(text.strip(" \t"))
    if m is not None:
        address = m.group(1) or ""
        if not address or addr.valid_envelope_domain(address.rpartition("@")[2]):
            return address, tuple((m.group(2) or "").split())
    path = addr.parse_path(text, strict=strict)
    return path.address, path.words


def is_xtext(value: str) -> bool:
    return _XTEXT_RE.fullmatch(value) is not None


def parse_mail(arg: str, strict: bool = False, smtputf8: bool = True,
               verp: tuple[str, str] | None = None) -> MailArgs:
    """parse_mail - the sender and parameters of `MAIL FROM:<sender> PARAMS`.

    VERP is (default delimiters, delimiter filter) when the client may use
    XVERP (smtpd_authorized_verp_clients); otherwise XVERP is an option
    like any other that Postfix does not know."""
    text = _path_argument(arg, "FROM:", replies.ERR_SYNTAX_MAIL)
    try:
        sender, words = parse_path(text, strict=strict)
    except addr.AddressError:
        raise CommandError(replies.ERR_BAD_SENDER) from None
    mail = MailArgs(sender=sender)
    for word in words:
        key, eq, value = word.partition("=")
        if key.upper() == "XVERP" and verp is not None:
            mail.verp = _xverp(value if eq else None, *verp)
        else:
            _mail_param(mail, key.upper(), value if eq else None, word, smtputf8)
    if mail.verp and not mail.sender:
        raise CommandError(replies.ERR_XVERP_NULL_SENDER)
    if not _domain_allowed(mail.sender, mail.smtputf8):
        raise CommandError(replies.ERR_BAD_SENDER)
    return mail


def _xverp(value: str | None, default: str, filter_chars: str) -> str:
    """_xverp - the delimiters of `XVERP` (the default) or `XVERP=xy`."""
    delims = default if value is None else value
    if verp_mod.verify(delims, filter_chars):
        raise CommandError(replies.ERR_XVERP_DELIMS.format(filter=filter_chars))
    return delims


def _domain_allowed(address: str, smtputf8: bool) -> bool:
    """_domain_allowed - a non-ASCII domain only in an SMTPUTF8 transaction (RFC 6531 3.2)."""
    return smtputf8 or addr.split_address(address)[1].isascii()


def _mail_param(mail: MailArgs, key: str, value: str | None, word: str, smtputf8: bool) -> None:
    """_mail_param - check and store one MAIL FROM parameter (WORD as written)."""
    if key == "SIZE" and value is not None:
        if not value.isdigit() or not value.isascii():
            raise CommandError(replies.ERR_BAD_SIZE)
        mail.size = int(value)
    elif key == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
        mail.body = value.upper()
    elif key == "RET" and value is not None:
        if value.upper() not in ("FULL", "HDRS"):
            raise CommandError(replies.ERR_BAD_RET)
        mail.ret = value.upper()
    elif key == "ENVID" and value is not None:
        # RFC 3461 4.4 caps ENVID at 100 characters; Postfix takes any length.
        if not value or not is_xtext(value):
            raise CommandError(replies.ERR_BAD_ENVID)
        mail.envid = value
    elif key == "SMTPUTF8" and value is None:
        if not smtputf8:
            raise CommandError(replies.ERR_SMTPUTF8_DISABLED)
        mail.smtputf8 = True
    elif key == "AUTH" and value is not None:
        # RFC 4954 5: ignored without an authenticated session (the milter
        # macro {auth_author} is the only user).
        mail.auth = "" if value == "<>" else xtext_decode(value)
    else:
        # Postfix names the parameter as the client wrote it.
        raise CommandError(replies.ERR_UNSUPPORTED_OPTION.format(option=word))


def parse_rcpt(arg: str, strict: bool = False, smtputf8: bool = True) -> RcptArgs:
    """parse_rcpt - the recipient and parameters of `RCPT TO:<recipient> PARAMS`;
    SMTPUTF8: the transaction's MAIL asked for it (a non-ASCII domain is allowed)."""
    text = _path_argument(arg, "TO:", replies.ERR_SYNTAX_RCPT)
    try:
        address, words = parse_path(text, strict=strict)
    except addr.AddressError:
        raise CommandError(replies.ERR_BAD_RECIPIENT) from None
    if not address or not _domain_allowed(address, smtputf8):
        raise CommandError(replies.ERR_BAD_RECIPIENT)
    rcpt = RcptArgs(address=address)
    for word in words:
        key, eq, value = word.partition("=")
        if key.upper() == "NOTIFY" and eq:
            rcpt.notify = _notify(value)
        elif key.upper() == "ORCPT" and eq:
            rcpt.orcpt = _orcpt(value)
        else:
            raise CommandError(replies.ERR_UNSUPPORTED_OPTION.format(option=word))
    return rcpt


def _notify(value: str | None) -> str:
    """_notify - RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY."""
    words = [w.upper() for w in (value or "").split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or any(w not in _NOTIFY_WORDS for w in words) or len(set(words)) != len(words):
        raise CommandError(replies.ERR_BAD_NOTIFY)
    return ",".join(words)


def _orcpt(value: str | None) -> str:
    """_orcpt - RFC 3461 4.2: addr-type ";" xtext, e.g. rfc822;user@example.com."""
    kind, semi, text = (value or "").partition(";")
    if not semi or not kind or not text or not is_xtext(text) \
            or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", kind):
        raise CommandError(replies.ERR_BAD_ORCPT)
    return f"{kind.lower()};{text}"
