"""The envelope sender of address verification probes, fixed or time-dependent.

address_verify_sender (default $double_bounce_sender) is the probe sender;
empty or `<>` means the null sender. An unqualified value gets @$myorigin.
With address_verify_sender_ttl above zero (postconf(5); Postfix 2.9 and
later) a stamp is appended to the local part: the current time divided by
the ttl, written in base 31 with the digits 0-9 and the consonants B-Z, so
that it never spells a word. The stamp changes every ttl seconds, so a
remote server that greylists or caches the probe sender does not keep
answering the same way for ever, and spam lists that harvested one probe
sender soon hold a dead address. No delimiter separates base and stamp:
a recipient_delimiter could otherwise make old stamps valid again. The
null sender never gets a stamp.

valid_probe_sender() recognises our own probe sender, with a stamp up to
one ttl period off either way (clocks of several MTAs differ), and gives
it back without the stamp: a server may let mail to it through unchecked,
as Postfix's smtpd does, so that a callout from a remote site that verifies
our probe sender in turn never ends in mutual negative caching.

Interface:
    SenderError                        address_verify_sender is malformed
    probe_sender(cfg, now=None) -> str     the sender for a probe sent NOW
    valid_probe_sender(cfg, address, now=None) -> str | None
        the time-independent probe sender when ADDRESS is one of ours, else None
    stamp(number) -> str / unstamp(text) -> int | None    the base-31 encoding
"""

from __future__ import annotations

import time

from pymaster.mail.config import Config

DIGITS = "0123456789BCDFGHJKLMNPQRSTVWXYZ"     # base 31: no vowels, so no words
BASE = len(DIGITS)
PARAM = "address_verify_sender"


class SenderError(ValueError):
    """address_verify_sender cannot be used as a probe sender."""


def stamp(number: int) -> str:
    """stamp - NUMBER (>= 0) in base 31."""
    out = ""
    while True:
        number, digit = divmod(number, BASE)
        out = DIGITS[digit] + out
        if not number:
            return out


def unstamp(text: str) -> int | None:
    """unstamp - the number TEXT spells in base 31 (case-insensitive), None if it does not."""
    if not text:
        return None
    number = 0
    for c in text.upper():
        digit = DIGITS.find(c)
        if digit < 0:
            return None
        number = number * BASE + digit
    return number


def _base(cfg: Config) -> tuple[str, str] | None:
    """_base - (local part, "@domain" or "") of address_verify_sender; None: null sender."""
    value = cfg.get(PARAM).strip()
    if value in ("", "<>"):
        return None
    if value.startswith("@"):
        raise SenderError(f'parameter {PARAM}: value "{value}" must not start with \'@\'')
    if value.endswith("@"):
        raise SenderError(f'parameter {PARAM}: value "{value}" must not end with \'@\'')
    local, at, domain = value.partition("@")
    return local, "@" + domain if at else ""


def _epoch(cfg: Config, now: float | None) -> int | None:
    ttl = cfg.time("address_verify_sender_ttl")
    if ttl <= 0:
        return None
    return int((time.time() if now is None else now) // ttl)


def _qualify(cfg: Config, local: str, at_domain: str) -> str:
    return local + (at_domain or "@" + cfg.get("myorigin"))


def probe_sender(cfg: Config, now: float | None = None) -> str:
    """probe_sender - the envelope sender of a probe sent at NOW; "" is the
    null sender. Raises SenderError for a malformed address_verify_sender."""
    base = _base(cfg)
    if base is None:
        return ""
    local, at_domain = base
    epoch = _epoch(cfg, now)
    if epoch is not None:
        local += stamp(epoch)
    return _qualify(cfg, local, at_domain)


def valid_probe_sender(cfg: Config, address: str, now: float | None = None) -> str | None:
    """valid_probe_sender - our probe sender without its stamp when ADDRESS
    is one (stamp within one ttl period of NOW), else None."""
    try:
        base = _base(cfg)
    except SenderError:
        return None
    if base is None:
        return "" if not address else None
    fixed = _qualify(cfg, *base)
    local, _, domain = fixed.rpartition("@")
    their_local, at, their_domain = address.rpartition("@")
    if not at or their_domain.lower() != domain.lower() \
            or not their_local.lower().startswith(local.lower()):
        return None
    rest = their_local[len(local):]
    epoch = _epoch(cfg, now)
    if epoch is None:
        return fixed if not rest else None
    theirs = unstamp(rest)
    if theirs is None or abs(theirs - epoch) > 1:
        return None
    return fixed
