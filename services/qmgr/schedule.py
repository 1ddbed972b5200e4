"""qmgr scheduling: transports, destination queues and their concurrency.

Recipients wait in a destination queue per (transport, next hop); when a
transport's recipient limit is 1 (local), the destination is the recipient
itself, as in Postfix. A job is a batch of one message's recipients for one
destination, at most `<transport>_destination_recipient_limit` of them: one
delivery request.

Concurrency per destination follows Postfix's feedback: it starts at
`initial_destination_concurrency`, grows by 1/window per success up to
`<transport>_destination_concurrency_limit`, and shrinks by 1/window per
failure of the next hop (an agent's hop_status, a crash, a timeout). Each
failure also adds 1/window to the failed-cohort count; at
`<transport>_destination_concurrency_failed_cohort_limit` cohorts the
destination is dead: it is skipped until its backoff ends. A transport
has at most its master.cf process limit of requests in flight.

Interface:
    Limits / limits_for(cfg, transport, process_limit) -> Limits
    Job(message, nexthop, recipients)
    Destination: .jobs .in_flight .window .add(job) .is_dead(now) .success()
                 .failure(now, suspend_for, reason, dsn) -> bool (now dead) .kill(...)
    Transport(name, limits): .enqueue(key, job) -> Destination
                 .next_job(now) -> (Destination, Job) | None .finished(dest)
                 .take_all(dest) -> [Job]
    destination_key(limits, nexthop, recipient) -> str
    chunks(items, size) -> list of lists
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from pymaster.util import log

if TYPE_CHECKING:
    from services.qmgr.active import ActiveMessage


PREEMPT_SCAN = 64           # later messages considered as preemption candidates


@dataclass(frozen=True)
class Limits:
    recipients: int          # per request; 0 means no limit
    concurrency: int         # per destination; 0 means no limit
    initial: int             # starting window
    failed_cohorts: int      # 0 means a destination is never declared dead
    processes: int           # requests in flight per transport; 0 means no limit
    slot_cost: int           # recipients sent per delivery slot earned; 0: no preemption
    slot_loan: int
    slot_discount: int       # percent
    minimum_slots: int       # a message that never earns this many is not preempted


def _transport_int(cfg, transport: str, suffix: str, fallback: str) -> int:
    """_transport_int - `<transport>_SUFFIX` when set or known, else FALLBACK."""
    name = f"{transport}_{suffix}"
    if cfg.raw(name) is not None:
        value = cfg.get(name).strip()
        try:
            return int(value)
        except ValueError:
            log.warning(f"bad numerical configuration: {name} = {value}; "
                        f"using ${fallback}")
    return cfg.int(fallback)


def limits_for(cfg, transport: str, process_limit: int) -> Limits:
    """limits_for - the scheduling limits of TRANSPORT from main.cf."""
    return Limits(
        recipients=_transport_int(cfg, transport, "destination_recipient_limit",
                                  "default_destination_recipient_limit"),
        concurrency=_transport_int(cfg, transport, "destination_concurrency_limit",
                                   "default_destination_concurrency_limit"),
        initial=_transport_int(cfg, transport, "initial_destination_concurrency",
                               "initial_destination_concurrency"),
        failed_cohorts=_transport_int(cfg, transport,
                                      "destination_concurrency_failed_cohort_limit",
                                      "default_destination_concurrency_failed_cohort_limit"),
        processes=process_limit,
        slot_cost=_transport_int(cfg, transport, "delivery_slot_cost",
                                 "default_delivery_slot_cost"),
        slot_loan=_transport_int(cfg, transport, "delivery_slot_loan",
                                 "default_delivery_slot_loan"),
        slot_discount=_transport_int(cfg, transport, "delivery_slot_discount",
                                     "default_delivery_slot_discount"),
        minimum_slots=_transport_int(cfg, transport, "minimum_delivery_slots",
                                     "default_minimum_delivery_slots"))


def destination_key(limits: Limits, nexthop: str, recipient: str) -> str:
    """destination_key - the queue a recipient waits in (per recipient when limit 1)."""
    if limits.recipients == 1:
        return recipient.lower()
    return nexthop.lower()


def chunks(items: list, size: int) -> list[list]:
    """chunks - ITEMS in order, in lists of at most SIZE (all in one when 0)."""
    if size <= 0:
        return [items]
    return [items[i:i + size] for i in range(0, len(items), size)]


@dataclass
class Job:
    """One message's recipients for one destination: one delivery request."""
    message: ActiveMessage
    nexthop: str
    recipients: list


class Destination:
    """The queue of jobs for one next hop of one transport."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.jobs: deque[Job] = deque()
        self.in_flight = 0
        self.window = self._initial_window()
        self.fail_cohorts = 0.0
        self.dead_until = 0.0
        self.dead_reason = ""
        self.dead_dsn = "4.0.0"
        self.waiting = False          # listed in the transport's round robin
        # A request went out with a backlog since this queue was made: its
        # agent may have cached a connection (an idle queue is forgotten, so
        # this lasts while mail keeps coming, as Postfix's queue dflags do).
        self.stored = False

    def _initial_window(self) -> float:
        initial = max(1, self.limits.initial)
        if self.limits.concurrency > 0:
            initial = min(initial, self.limits.concurrency)
        return float(initial)

    def has_room(self) -> bool:
        """has_room - whether another request may go to this destination now."""
        return self.in_flight < max(1, int(self.window))

    def is_dead(self, now: float) -> bool:
        """is_dead - suspended after failures; revived once the time is up."""
        if self.dead_until and now >= self.dead_until:
            self.revive()
        return bool(self.dead_until)

    def revive(self) -> None:
        self.dead_until, self.dead_reason, self.dead_dsn = 0.0, "", "4.0.0"
        self.window = self._initial_window()
        self.fail_cohorts = 0.0

    def success(self) -> None:
        """success - positive feedback: the window grows by 1/window."""
        self.fail_cohorts = 0.0
        self.window += 1.0 / self.window
        if self.limits.concurrency > 0:
            self.window = min(self.window, float(self.limits.concurrency))

    def failure(self, now: float, suspend_for: float, reason: str,
                dsn: str = "4.0.0") -> bool:
        """failure - negative feedback; True when the destination just died."""
        self.fail_cohorts += 1.0 / self.window
        self.window = max(1.0, self.window - 1.0 / self.window)
        limit = self.limits.failed_cohorts
        if limit > 0 and self.fail_cohorts >= limit and not self.dead_until:
            self.kill(now, suspend_for, reason, dsn)
            return True
        return False

    def kill(self, now: float, suspend_for: float, reason: str, dsn: str = "4.0.0") -> None:
        """kill - skip this destination for SUSPEND_FOR seconds."""
        self.dead_until = now + max(1.0, suspend_for)
        self.dead_reason, self.dead_dsn = reason, dsn

    def idle(self) -> bool:
        return not self.jobs and self.in_flight == 0 and not self.dead_until


class MessageJobs:
    """One message's waiting jobs on one transport, and its delivery slots."""

    def __init__(self, message: object) -> None:
        self.message = message
        self.waiting = 0                  # jobs queued, not yet sent
        self.recipients = 0               # recipients ever queued here
        self.dests: dict[str, int] = {}   # destination key -> jobs waiting there
        self.sent = 0                     # recipients sent while the current message
        self.spent = 0                    # slots lent to messages that preempted it

    def slots(self, cost: int) -> float:
        """slots - delivery slots earned and not yet spent."""
        return self.sent / cost - self.spent


class Transport:
    """The destinations of one delivery transport and its process limit."""

    def __init__(self, name: str, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self.destinations: dict[str, Destination] = {}
        self.waiting: deque[Destination] = deque()
        self.in_flight = 0
        # Messages with jobs waiting, oldest first (dicts keep insertion order).
        self.messages: dict[object, MessageJobs] = {}
        self.preempting: MessageJobs | None = None

    def destination(self, key: str) -> Destination:
        dest = self.destinations.get(key)
        if dest is None:
            dest = self.destinations[key] = Destination(key, self.limits)
        return dest

    def enqueue(self, key: str, job: Job) -> Destination:
        """enqueue - add JOB to destination KEY's queue."""
        dest = self.destination(key)
        dest.jobs.append(job)
        if not dest.waiting:
            dest.waiting = True
            self.waiting.append(dest)
        entry = self.messages.get(job.message)
        if entry is None:
            entry = self.messages[job.message] = MessageJobs(job.message)
        entry.waiting += 1
        entry.recipients += len(job.recipients)
        entry.dests[key] = entry.dests.get(key, 0) + 1
        return dest

    def has_room(self) -> bool:
        return self.limits.processes <= 0 or self.in_flight < self.limits.processes

    def next_job(self, now: float) -> tuple[Destination, Job] | None:
        """next_job - the next request to send: a preempting message's, else
        round robin over destinations."""
        if not self.has_room():
            return None
        picked = self._preempting_job(now) or self._round_robin(now)
        if picked is not None:
            self._sent(*picked)
        return picked

    def _round_robin(self, now: float) -> tuple[Destination, Job] | None:
        for _ in range(len(self.waiting)):
            dest = self.waiting.popleft()
            if not dest.jobs or dest.is_dead(now):
                dest.waiting = False
                self._forget_if_idle(dest)
                continue
            self.waiting.append(dest)
            if dest.has_room():
                return dest, dest.jobs.popleft()
        return None

    def _preempting_job(self, now: float) -> tuple[Destination, Job] | None:
        """_preempting_job - a job of a message that may overtake the current one."""
        cost = self.limits.slot_cost
        if cost <= 0 or len(self.messages) < 2:
            return None
        if self.preempting is not None:
            if self.preempting.waiting:
                return self._job_of(self.preempting, now)
            self.preempting = None
        current = next(iter(self.messages.values()))
        available = current.slots(cost)
        if current.recipients / cost < self.limits.minimum_slots or available < 0:
            return None
        for entry in islice(self.messages.values(), 1, 1 + PREEMPT_SCAN):
            need = entry.waiting
            if need >= current.waiting:
                continue
            if need - available > need * self.limits.slot_discount / 100 + self.limits.slot_loan:
                continue
            picked = self._job_of(entry, now)
            if picked is not None:
                current.spent += need
                self.preempting = entry
                return picked
        return None

    def _job_of(self, entry: MessageJobs, now: float) -> tuple[Destination, Job] | None:
        """_job_of - a waiting job of ENTRY's message whose destination has room."""
        for key in entry.dests:
            dest = self.destinations.get(key)
            if dest is None or dest.is_dead(now) or not dest.has_room():
                continue
            for i, job in enumerate(dest.jobs):
                if job.message == entry.message:
                    del dest.jobs[i]
                    return dest, job
        return None

    def _sent(self, dest: Destination, job: Job) -> None:
        """_sent - account for JOB leaving its queue for an agent."""
        dest.in_flight += 1
        self.in_flight += 1
        current = next(iter(self.messages.values()))
        entry = self._unqueue(dest.name, job)
        if entry is current:
            entry.sent += len(job.recipients)

    def _unqueue(self, key: str, job: Job) -> MessageJobs:
        entry = self.messages[job.message]
        entry.waiting -= 1
        left = entry.dests.get(key, 0) - 1
        if left > 0:
            entry.dests[key] = left
        else:
            entry.dests.pop(key, None)
        if entry.waiting <= 0:
            del self.messages[job.message]
            if self.preempting is entry:
                self.preempting = None
        return entry

    def finished(self, dest: Destination) -> None:
        """finished - a request to DEST has been answered (or given up on)."""
        dest.in_flight -= 1
        self.in_flight -= 1
        self._forget_if_idle(dest)

    def take_all(self, dest: Destination) -> list[Job]:
        """take_all - remove and return every job waiting for DEST."""
        jobs = list(dest.jobs)
        dest.jobs.clear()
        for job in jobs:
            self._unqueue(dest.name, job)
        return jobs

    def _forget_if_idle(self, dest: Destination) -> None:
        # Idle queues go, so memory follows the live destinations only.
        if dest.idle() and not dest.waiting and self.destinations.get(dest.name) is dest:
            del self.destinations[dest.name]
