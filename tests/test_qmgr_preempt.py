"""qmgr scheduling between messages: delivery slots and preemption.

As Postfix's queue manager: the oldest message on a transport earns a
delivery slot for every `_delivery_slot_cost` recipients it sends; a later,
smaller message may go first when it fits the slots earned (with the
discount and the loan), so a message with one recipient is not starved
behind a mailing list with thousands."""

from __future__ import annotations

from services.qmgr.schedule import Job, Limits, Transport


def limits(recipients=1, processes=1, cost=5, loan=3, discount=50, minimum=3) -> Limits:
    return Limits(recipients, 20, 5, 1, processes, slot_cost=cost, slot_loan=loan,
                  slot_discount=discount, minimum_slots=minimum)


def queue_message(t: Transport, name: str, n: int, per_recipient: bool = True) -> None:
    """queue_message - NAME's N recipients, each its own destination (local) or one."""
    for i in range(n):
        key = f"{name}-r{i}@example.org" if per_recipient else "example.org"
        t.enqueue(key, Job(name, "example.org", [f"{name}-r{i}@example.org"]))


def order(t: Transport) -> list[str]:
    """order - the message of each request, sent one at a time (process limit 1)."""
    sent = []
    while (picked := t.next_job(0.0)) is not None:
        dest, job = picked
        sent.append(job.message)
        t.finished(dest)
    return sent


class TestPreemption:
    def test_a_small_message_overtakes_a_big_one(self):
        t = Transport("local", limits())
        queue_message(t, "big", 100)
        queue_message(t, "small", 1)
        sent = order(t)
        assert len(sent) == 101
        assert sent.index("small") < 5

    def test_the_current_message_earns_back_what_it_lent(self):
        # Each overtaking message costs the big one slot_cost recipients of its own.
        t = Transport("local", limits(cost=5, loan=0, discount=0))
        queue_message(t, "big", 100)
        for i in range(3):
            queue_message(t, f"small{i}", 1)
        sent = order(t)
        positions = [sent.index(f"small{i}") for i in range(3)]
        assert positions == sorted(positions)
        gaps = [b - a for a, b in zip(positions, positions[1:])]
        assert all(gap >= 5 for gap in gaps)
        assert positions[-1] < 30

    def test_it_works_within_one_shared_destination_too(self):
        t = Transport("smtp", limits(recipients=50))
        queue_message(t, "big", 60, per_recipient=False)
        queue_message(t, "small", 1, per_recipient=False)
        assert order(t).index("small") < 5

    def test_slot_cost_zero_turns_preemption_off(self):
        t = Transport("local", limits(cost=0))
        queue_message(t, "big", 20)
        queue_message(t, "small", 1)
        assert order(t)[-1] == "small"

    def test_a_message_too_small_to_earn_the_minimum_slots_is_not_preempted(self):
        # 10 recipients at cost 5 earn 2 slots, fewer than the minimum of 3.
        t = Transport("local", limits(minimum=3))
        queue_message(t, "first", 10)
        queue_message(t, "second", 1)
        assert order(t) == ["first"] * 10 + ["second"]

    def test_a_bigger_message_never_preempts_a_smaller_one(self):
        t = Transport("local", limits())
        queue_message(t, "list", 30)
        queue_message(t, "biglist", 300)
        sent = order(t)
        assert sent[:30] == ["list"] * 30

    def test_equal_small_messages_keep_arrival_order(self):
        t = Transport("local", limits())
        for i in range(5):
            queue_message(t, f"m{i}", 1)
        assert order(t) == [f"m{i}" for i in range(5)]

    def test_taking_all_jobs_of_a_destination_keeps_the_accounting(self):
        t = Transport("smtp", limits(recipients=50))
        queue_message(t, "big", 20, per_recipient=False)
        queue_message(t, "small", 1, per_recipient=False)
        jobs = t.take_all(t.destination("example.org"))
        assert len(jobs) == 21 and t.messages == {}
        assert t.next_job(0.0) is None
