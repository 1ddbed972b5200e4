"""qmgr retry timing: Postfix's backoff doubles with the message's age."""

from __future__ import annotations

import pytest

from pymaster.mail.config import Config
from services.qmgr.backoff import Backoff

B = Backoff(minimal=300, maximal=4000, max_lifetime=5 * 86400, bounce_lifetime=86400)


@pytest.mark.parametrize("age, delay", [
    (0, 300), (10, 300), (300, 300), (700, 700), (2000, 2000), (4000, 4000), (99999, 4000),
])
def test_the_wait_is_the_age_clamped_to_the_backoff_range(age, delay):
    assert B.retry_delay(1000.0, 1000.0 + age) == delay


def test_waits_roughly_double_from_attempt_to_attempt():
    now, arrival, waits = 1000.0, 1000.0, []
    for _ in range(5):
        wait = B.retry_delay(arrival, now)
        waits.append(wait)
        now += wait
    assert waits == [300, 300, 600, 1200, 2400]


def test_lifetime_depends_on_the_sender():
    assert not B.expired(0.0, "a@example.com", 86400 * 2)
    assert B.expired(0.0, "a@example.com", 86400 * 5)
    assert B.expired(0.0, "", 86400 * 2)


def test_zero_lifetime_means_a_single_attempt():
    b = Backoff(300, 4000, 0, 0)
    assert b.expired(1000.0, "a@example.com", 1000.0)


def test_from_config_reads_times_with_units():
    cfg = Config("/nonexistent", {"minimal_backoff_time": "1m", "maximal_backoff_time": "30s",
                                  "maximal_queue_lifetime": "1d", "bounce_queue_lifetime": "2h"})
    b = Backoff.from_config(cfg)
    assert (b.minimal, b.maximal, b.max_lifetime, b.bounce_lifetime) == (60, 60, 86400, 7200)
