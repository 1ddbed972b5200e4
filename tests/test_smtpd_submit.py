"""services/smtpd/submit.py: the Received: header's date."""

from __future__ import annotations

import time

from services.smtpd.submit import mail_date


def test_mail_date_is_the_second_asked_for():
    """mail_date keeps its last answer: a later or earlier second asked
    after it still gets its own date."""
    for when in (1e9, 1e9 + 0.9, 1e9 + 1, 1e9, 1.7e9 + 0.5, 1e9 + 1.2):
        assert mail_date(when) == time.strftime("%a, %d %b %Y %H:%M:%S %z (%Z)",
                                                time.localtime(when))
