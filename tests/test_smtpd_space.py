"""smtpd's free-space rule (postconf(5) queue_minfree): 452 4.3.1 before the
queue file system fills up."""

from __future__ import annotations

import pytest

from services.smtpd.session import enough_queue_space

MB = 1 << 20


@pytest.mark.parametrize("free, minfree, limit, size, ok", [
    (100 * MB, 0, 10 * MB, 0, True),
    (14 * MB, 0, 10 * MB, 0, False),         # below 1.5 * message_size_limit
    (100 * MB, 200 * MB, 10 * MB, 0, False),  # below queue_minfree
    (100 * MB, 0, 0, 0, True),                # no size limit, no minimum
    (100 * MB, 40 * MB, 10 * MB, 30 * MB, True),
    (100 * MB, 40 * MB, 10 * MB, 41 * MB, False),  # 1.5 * SIZE > free - queue_minfree
    (1 * MB, 0, 0, 0, True),
    (0, 1, 0, 0, False),
])
def test_free_space_rule(free, minfree, limit, size, ok):
    assert enough_queue_space(free, minfree, limit, size) is ok
