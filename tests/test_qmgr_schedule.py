"""qmgr scheduling: destination queues, recipient and concurrency limits.

These are the rules that decide how many requests go where at once; they
follow Postfix's qmgr (per-recipient queues for local, slow start, dead
destinations after failed cohorts)."""

from __future__ import annotations

from pymaster.mail.config import Config
from services.qmgr.schedule import (Destination, Job, Limits, Transport, chunks,
                                    destination_key, limits_for)


def cfg(**values) -> Config:
    return Config("/nonexistent", {k: str(v) for k, v in values.items()})


def limits(recipients=50, concurrency=20, initial=5, failed=1, processes=100) -> Limits:
    return Limits(recipients, concurrency, initial, failed, processes,
                  slot_cost=5, slot_loan=3, slot_discount=50, minimum_slots=3)


class TestLimitsFromConfig:
    def test_defaults_come_from_the_default_parameters(self):
        got = limits_for(cfg(), "smtp", 100)
        assert got == Limits(50, 20, 5, 1, 100, slot_cost=5, slot_loan=3, slot_discount=50,
                             minimum_slots=3)

    def test_local_is_one_recipient_and_two_at_a_time(self):
        got = limits_for(cfg(), "local", 100)
        assert (got.recipients, got.concurrency) == (1, 2)

    def test_a_transport_specific_parameter_wins(self):
        got = limits_for(cfg(discard_destination_recipient_limit=3,
                             default_destination_concurrency_limit=7), "discard", 4)
        assert (got.recipients, got.concurrency, got.processes) == (3, 7, 4)

    def test_a_bad_transport_value_falls_back_to_the_default(self):
        assert limits_for(cfg(foo_destination_recipient_limit="many"), "foo", 1).recipients == 50


class TestGrouping:
    def test_recipient_limit_one_makes_a_queue_per_recipient(self):
        assert destination_key(limits(recipients=1), "host", "User@Example.org") == \
               "user@example.org"

    def test_otherwise_the_next_hop_is_the_queue(self):
        assert destination_key(limits(), "Example.ORG", "a@example.org") == "example.org"

    def test_chunks_respect_the_recipient_limit(self):
        assert chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
        assert chunks(list(range(5)), 0) == [[0, 1, 2, 3, 4]]


def fill(transport: Transport, key: str, n: int) -> None:
    for i in range(n):
        transport.enqueue(key, Job(f"msg{i}", key, [f"r{i}"]))


def drain(transport: Transport) -> list[str]:
    sent = []
    while (picked := transport.next_job(0.0)) is not None:
        sent.append(picked[0].name)
    return sent


class TestConcurrency:
    def test_slow_start_sends_the_initial_window_only(self):
        t = Transport("smtp", limits(initial=5))
        fill(t, "example.org", 10)
        assert drain(t) == ["example.org"] * 5

    def test_the_window_never_exceeds_the_concurrency_limit(self):
        t = Transport("local", limits(recipients=1, concurrency=2, initial=5))
        fill(t, "a@x", 4)
        assert len(drain(t)) == 2

    def test_process_limit_caps_the_whole_transport(self):
        t = Transport("smtp", limits(processes=3))
        fill(t, "a.example", 4)
        fill(t, "b.example", 4)
        assert len(drain(t)) == 3

    def test_destinations_take_turns(self):
        t = Transport("smtp", limits(processes=4))
        fill(t, "a.example", 4)
        fill(t, "b.example", 4)
        assert drain(t) == ["a.example", "b.example", "a.example", "b.example"]

    def test_an_answer_frees_a_slot(self):
        t = Transport("smtp", limits(initial=1))
        fill(t, "a.example", 2)
        dest, _ = t.next_job(0.0)
        assert t.next_job(0.0) is None
        t.finished(dest)
        assert t.next_job(0.0) is not None

    def test_success_grows_the_window_up_to_the_limit(self):
        d = Destination("x", limits(concurrency=6, initial=5))
        for _ in range(20):
            d.success()
        assert d.window == 6

    def test_idle_destinations_are_forgotten(self):
        t = Transport("smtp", limits())
        fill(t, "a.example", 1)
        dest, _ = t.next_job(0.0)
        t.finished(dest)
        drain(t)
        assert "a.example" not in t.destinations


class TestDeadDestinations:
    def test_failed_cohort_makes_a_destination_dead(self):
        d = Destination("x", limits(initial=1, failed=1))
        assert d.failure(100.0, 300, "connect refused", "4.4.1")
        assert d.is_dead(200.0) and d.dead_reason == "connect refused"

    def test_a_wide_window_survives_a_single_failure(self):
        d = Destination("x", limits(initial=5, failed=1))
        assert not d.failure(100.0, 300, "refused")

    def test_a_dead_destination_revives_after_its_backoff(self):
        d = Destination("x", limits(initial=1))
        d.failure(100.0, 300, "refused")
        assert not d.is_dead(400.0)
        assert d.window == 1.0 and d.dead_reason == ""

    def test_no_cohort_limit_means_never_dead(self):
        d = Destination("x", limits(initial=1, failed=0))
        assert not any(d.failure(100.0, 300, "refused") for _ in range(10))

    def test_dead_destinations_are_not_scheduled(self):
        t = Transport("smtp", limits(initial=1))
        fill(t, "a.example", 2)
        t.destination("a.example").kill(0.0, 300, "refused")
        assert t.next_job(10.0) is None
