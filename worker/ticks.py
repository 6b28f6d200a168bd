"""Batch mode's polls (the default): one task polls every job due in a tick.

In ``chain`` mode each poll is its own countdown message: a broker round trip, four
task events and a held ETA entry per poll, which caps a 2-core worker at a few
hundred polls a second, and a killed worker hides its held messages until the
sweeper finds their jobs. In ``batch`` mode the schedule lives in Redis instead, as
arq's and RQ's scheduled registries do:

- a job's next poll is an entry in the ``polls`` book (a sorted set scored by when it
  is due); no message is sent for it;
- every worker's pump (``worker.pump``) sends a tick message when polls are due, one
  per ``VIDEOQ_POLL_TICK``-wide slot for the whole fleet;
- a tick claims up to ``VIDEOQ_POLL_BATCH`` due polls (``JobStore.claim_due_polls``,
  the same claim chain mode's polls make one by one), asks for one more tick at once
  when more are due, makes their status calls together on the process's event loop,
  and runs each job's ordinary poll step on its answer (``chain.poll_answered``) as it
  arrives;
- a claimed poll is *leased* for :data:`POLL_LEASE` seconds, renewed while its call is
  out. A worker that dies (SIGKILL, OOM, a lost host) stops renewing: its polls are
  due again within the lease and the next tick takes them, and the ``poll_seq`` fence
  keeps a late duplicate from forking the chain.

Still a countdown chain, with the same fencing and the same deadline clamp: a tick
never sleeps, and a job's next poll is still scheduled by the poll that precedes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain

import redis

from . import logs
from .answers import Status
from .chain import DEADLINE_EPSILON, Ended, PollStep, poll_answered, poll_out_of_time
from .errors import UpstreamError
from .ratelimit import Kind, Refused, Slot
from .runtime import Runtime
from .scheduling import Scheduler
from .store import BookedPoll, ClaimedPoll, JobStore
from .upstream import throttled_error

# How long a tick holds the polls it claimed before another tick may take them: the
# longest a killed worker's jobs wait (plus one tick). Renewed every
# :data:`LEASE_RENEWAL` seconds while their calls are out.
POLL_LEASE = 3.0
LEASE_RENEWAL = 1.0


def tick_of(due_at: float, width: float) -> float:
    """The end of the tick-wide slot ``due_at`` falls in."""
    return math.ceil(round(due_at / width, 6)) * width


@dataclass
class TickReport:
    """What one tick did: Flower shows :meth:`label` as the tick task's arguments and
    result (``videoq status``, the gateway and the metrics show each job's own)."""

    step: str  # "tick" (polls) or "create-tick"
    taken: int = 0  # polls claimed, or creates taken from the book
    ended: int = 0  # polls after which their job ended
    created: int = 0  # creates made
    failed: int = 0  # steps Redis failed (their jobs stay leased)
    more: int = 0  # still due after this tick (another tick was sent for them)
    # The jobs this tick ended failed or timed out (Flower shows each as a failed row).
    failures: list[Ended] = field(default_factory=list)

    def note(self, ended: Ended | None) -> None:
        """A step's outcome: a job it ended without its video is kept."""
        if ended is not None and ended.failed:
            self.failures.append(ended)

    def label(self) -> str:
        shown: dict[str, object] = {"step": self.step}
        if self.step == "tick":
            shown.update(polls=self.taken, ended=self.ended)
        else:
            shown.update(creates=self.created, taken=self.taken)
        if self.failed:
            shown["failed"] = self.failed
        shown["more"] = self.more
        return repr(shown)


class TickScheduler:
    """The scheduler a tick's steps see: next polls are collected (the runtime's
    ``booked``) and written to the book together, noted and fenced in one script (a
    job stays leased until then, so nothing is lost if the worker dies first); other
    steps go straight to ``inner``."""

    def __init__(self, inner: Scheduler, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.clock = clock
        self.polls: list[BookedPoll] = []
        self.written = 0  # polls written to the book (``polls`` is the runtime's ``booked``)

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.inner.generate(job_id, deadline_at, attempt, countdown)

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        self.inner.webhook(job_id, attempt, countdown)

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        self.polls.append(BookedPoll(job_id, self.clock() + countdown, errors))


# Status calls for a batch, (generation id, timeout) each, and ``slots=`` the rate
# limit's slots reserved for them (or None): each answer as it arrives, with its index
# among the calls, or None now and then while none arrives.
Fetch = Callable[..., Iterable[tuple[int, Status | UpstreamError] | None]]


def _held_note(refused: Refused) -> str | None:
    """What a poll held back without a call notes as its last error: the fleet's pause
    (the upstream's 429), not the local rate limit (the record's is kept)."""
    return str(throttled_error("poll", refused)) if refused.reason == "paused" else None


def reserve_slots(rt: Runtime, kind: Kind, count: int) -> list[Slot] | None:
    """Under a rate limit (or the fleet's pause): the slots of ``count`` calls, in
    order, each a start time or :class:`Refused`, reserved in one round trip. None: no
    limit and no pause (then no Redis round trip is made)."""
    if not count:
        return None
    return rt.upstream.reserve(kind, count, rt.upstream_timeout)


def run_tick(rt: Runtime, tick: float, fetch: Fetch, publish: Callable[[], None]) -> TickReport:
    """Poll every job due now (up to a batch); ``tick`` is the slot the pump sent it
    for (logged).

    ``fetch`` makes the status calls of the whole batch (the worker's
    :meth:`UpstreamClient.each_status`) and gives each answer as it arrives;
    ``publish()`` sends another tick now (for the rest of a burst).
    """
    settings, store = rt.settings, rt.store
    now = rt.clock()
    lease = _Lease(rt, now)
    # Polls due by now, never earlier (a job is never polled before its interval),
    # longest due first.
    claimed, more = store.claim_due_polls(now, settings.poll_batch, now, lease.until, lease.due_at)
    report = TickReport("tick", taken=len(claimed), more=more)
    # A poll at its job's deadline has no time left for a call: it times the job out.
    late: list[ClaimedPoll] = []
    due: list[tuple[ClaimedPoll, float]] = []
    for poll in claimed:
        timeout = rt.call_timeout(poll.deadline_at)
        if timeout <= DEADLINE_EPSILON:
            late.append(poll)
        else:
            due.append((poll, timeout))
    # Under a rate limit (or the fleet's pause after a 429), the calls get their slots
    # first; the polls left without one go back to the book at the time they were due:
    # they keep their place in line, so every job is polled in turn, and the next tick
    # takes them first.
    slots = reserve_slots(rt, "poll", len(due))
    held: list[BookedPoll] = []
    if slots is not None:
        kept = [(d, s) for d, s in zip(due, slots, strict=True) if not isinstance(s, Refused)]
        held = [
            BookedPoll(p.job_id, p.due_at, p.errors, p.seq, _held_note(s))
            for (p, _), s in zip(due, slots, strict=True)
            if isinstance(s, Refused)
        ]
        due = [d for d, _ in kept]
        slots = [s for _, s in kept]
    if more and not held:
        publish()  # the rest of this tick, for another pool slot or worker
    collected = TickScheduler(rt.scheduler, rt.clock)
    collected.polls.extend(held)
    tick_rt = replace(rt, scheduler=collected, booked=collected.polls)
    pending = {p.job_id for p, _ in due}
    answers = fetch([(p.generation_id, timeout) for p, timeout in due], slots=slots)
    steps: Iterator[tuple[ClaimedPoll, Status | UpstreamError | None] | None] = chain(
        ((p, None) for p in late),
        (None if item is None else (due[item[0]][0], item[1]) for item in answers),
    )
    for step in steps:
        if step is None:
            # No answer yet: while a slow peer holds a call, the next polls of the jobs
            # that have answered are written to the book, not held back, and the
            # polls still out keep their lease.
            flush_polls(store, collected)
            lease.renew(pending)
            continue
        poll, answer = step
        pending.discard(poll.job_id)
        try:
            as_step = PollStep(poll.job_id, poll.deadline_at, poll.seq, poll.errors)
            if answer is None:
                report.note(poll_out_of_time(tick_rt, as_step))
            else:
                report.note(poll_answered(tick_rt, as_step, answer))
        except redis.RedisError as exc:
            # The job stays leased: the first tick after the lease polls it again.
            report.failed += 1
            logs.event(
                "poll.failed",
                level=logging.WARNING,
                job_id=poll.job_id,
                state="generating",
                attempt=poll.seq,
                error=f"{type(exc).__name__}: {exc}",
                retry_at=round(lease.until, 3),
            )
        lease.renew(pending)
    flush_polls(store, collected)
    scheduled = collected.written
    # The rest of the claimed polls ended their job (or found it ended meanwhile).
    report.ended = len(claimed) - report.failed - scheduled
    logs.event(
        "tick.done",
        level=logging.DEBUG,
        tick=round(tick, 3),
        polled=len(claimed),
        ended=report.ended,
        failed=report.failed,
        more=more,
        scheduled=scheduled,
    )
    return report


class _Lease:
    """A tick's hold on the polls it claimed, renewed at most every
    :data:`LEASE_RENEWAL` seconds while their calls are out."""

    def __init__(self, rt: Runtime, now: float) -> None:
        self.rt = rt
        self.until = now + POLL_LEASE
        self.due_at = self.until + rt.settings.stall_timeout
        self.renewed = now

    def renew(self, job_ids: set[str]) -> None:
        now = self.rt.clock()
        if not job_ids or now - self.renewed < LEASE_RENEWAL:
            return
        self.renewed = now
        self.until = now + POLL_LEASE
        self.due_at = self.until + self.rt.settings.stall_timeout
        try:
            self.rt.store.renew_poll_leases(job_ids, self.until, self.due_at)
        except redis.RedisError as exc:  # the polls may be taken again: fenced
            logs.event(
                "tick.renew_failed",
                level=logging.WARNING,
                polls=len(job_ids),
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )


def flush_polls(store: JobStore, collected: TickScheduler) -> None:
    """Write the next polls collected so far to the book. If Redis fails here, those
    jobs stay leased: the first tick after the lease (or the sweeper) polls them
    again."""
    polls = collected.polls[:]
    del collected.polls[:]  # the list is the runtime's ``booked``: emptied in place
    if not polls:
        return
    try:
        collected.written += store.schedule_polls(polls, collected.clock())
    except redis.RedisError as exc:
        logs.event(
            "tick.schedule_failed",
            level=logging.WARNING,
            polls=len(polls),
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )
