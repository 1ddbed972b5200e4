"""qmgr retry timing: when a deferred message is tried again, when it expires.

Postfix waits as long as the message has already been queued, clamped to
[minimal_backoff_time, maximal_backoff_time]: each failed attempt roughly
doubles the wait, so a message tried at 5 minutes is next tried at about 10,
then 20, until the maximum. The wait is the deferred file's mtime.

A message has expired when it has been queued longer than
maximal_queue_lifetime (bounce_queue_lifetime for the null sender, whose
mail is itself a bounce); a lifetime of 0 means one attempt only.

Interface:
    Backoff(minimal, maximal, max_lifetime, bounce_lifetime)
    Backoff.from_config(cfg)
    backoff.retry_delay(arrival_time, now) -> seconds
    backoff.expired(arrival_time, sender, now) -> bool
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    minimal: float
    maximal: float
    max_lifetime: float
    bounce_lifetime: float

    @classmethod
    def from_config(cls, cfg) -> "Backoff":
        minimal = cfg.time("minimal_backoff_time")
        # Postfix insists maximal >= minimal; a smaller maximal is treated as equal.
        maximal = max(minimal, cfg.time("maximal_backoff_time"))
        return cls(minimal, maximal, cfg.time("maximal_queue_lifetime"),
                   cfg.time("bounce_queue_lifetime"))

    def retry_delay(self, arrival_time: float, now: float) -> float:
        """retry_delay - seconds until the next attempt of a deferred message."""
        age = max(0.0, now - arrival_time)
        return min(self.maximal, max(self.minimal, age))

    def lifetime(self, sender: str) -> float:
        """lifetime - how long mail from SENDER may stay queued."""
        return self.max_lifetime if sender else self.bounce_lifetime

    def expired(self, arrival_time: float, sender: str, now: float) -> bool:
        """expired - whether the message has outlived its queue lifetime."""
        return now >= arrival_time + self.lifetime(sender)
