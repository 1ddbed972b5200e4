"""Shared settings of the property-based (hypothesis) fuzz tests.

In `make test` every fuzz test runs a fixed, modest number of examples with
no per-example deadline (the machine is shared; tests never assert a time),
derandomized: the same inputs every run, so a CI run fails only for a change.
PYMASTER_SOAK=1 (`make soak`) draws new inputs each run and multiplies the
examples, and the e2e fuzzers' session and connection counts, by SOAK_FACTOR.

Interface:
    SOAK                       whether PYMASTER_SOAK asks for a long run
    scaled(n) -> int           N, or N * SOAK_FACTOR under PYMASTER_SOAK=1
    fuzz_settings(n)           hypothesis settings for a test of N examples
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

SOAK = os.environ.get("PYMASTER_SOAK", "") not in ("", "0")
SOAK_FACTOR = 20


def scaled(n: int) -> int:
    """scaled - N, or N * SOAK_FACTOR under PYMASTER_SOAK=1."""
    return n * SOAK_FACTOR if SOAK else n


def fuzz_settings(n: int = 200) -> settings:
    """fuzz_settings - N examples (scaled), no deadline, no example database
    written into the checkout."""
    return settings(max_examples=scaled(n), deadline=None, database=None, derandomize=not SOAK,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
