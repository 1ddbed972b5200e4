"""The trace_flags attribute: what a message asks of its delivery, besides delivery.

A queue file's (and a delivery request's) `trace_flags` attribute holds words
separated by commas or white space:

    verify    sendmail -bv: every agent decides and reports, delivering nothing
    record    sendmail -v: every outcome is reported to the sender
    probe     with verify: an address probe of the verify service, whose
              verdicts go to that service instead of a report

A user's own submission may carry verify and record only (USER_FLAGS); probe
is the system's.

Interface:
    VERIFY, RECORD, PROBE, USER_FLAGS
    of(attrs) -> set[str]            the flags of ATTRS
    is_verify(attrs) / is_probe(attrs) / is_record(attrs) -> bool
    user_flags(value) -> str         VALUE without the flags only the system sets
"""

from __future__ import annotations

VERIFY = "verify"
RECORD = "record"
PROBE = "probe"
USER_FLAGS = (VERIFY, RECORD)


def of(attrs: dict) -> set[str]:
    """of - the trace flags of ATTRS (a queue file's or a request's attributes)."""
    return set(_words(attrs.get("trace_flags", "")))


def is_verify(attrs: dict) -> bool:
    """is_verify - sendmail -bv or an address probe: decide, never deliver."""
    return VERIFY in of(attrs)


def is_probe(attrs: dict) -> bool:
    """is_probe - an address probe of the verify service (verify and probe)."""
    return {VERIFY, PROBE} <= of(attrs)


def is_record(attrs: dict) -> bool:
    """is_record - sendmail -v: every outcome is reported."""
    return RECORD in of(attrs)


def user_flags(value: str) -> str:
    """user_flags - VALUE without the flags only the system may set."""
    return ",".join(f for f in _words(value) if f in USER_FLAGS)


def _words(value: str) -> list[str]:
    return value.replace(",", " ").split()
