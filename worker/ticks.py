"""Batched polling (``VIDEOQ_POLL_MODE=batch``): one task polls every job due in a tick.

In ``chain`` mode each poll is its own countdown message: a broker round trip, four
task events and a held ETA entry per poll. That costs milliseconds of CPU per poll and
caps a 2-core worker at a few hundred polls a second. In ``batch`` mode the schedule
lives in Redis instead of in messages:

- scheduling a job's next poll is one script: the job enters the ``polls`` sorted set,
  scored by when it is due, and the tick it falls in (``VIDEOQ_POLL_TICK`` seconds
  wide) gets one countdown message, unless that tick already has one;
- a tick message claims up to ``VIDEOQ_POLL_BATCH`` due jobs in one script (each is
  leased: its score moves to the lease's end), asks for one more tick at once when
  more are due (so other pool slots and workers share a burst), makes their status
  calls together on the process's event loop (:meth:`UpstreamClient.statuses`, at most
  ``VIDEOQ_POLL_CONCURRENCY`` at once, each bounded by the total timeout),
  and runs each job's ordinary poll step on its answer
  (:func:`worker.chain.poll_answered`);
- a poll step that ends the job removes it from ``polls``; one that goes on
  schedules it again. A worker killed mid-tick leaves its jobs leased: the next tick
  after the lease, or the sweeper, polls them again, and the ``poll_seq`` fence keeps
  a late duplicate from forking the chain.

Still a countdown chain, with the same fencing and the same deadline clamp: a tick
never sleeps, and a job's next poll is still scheduled by the poll that precedes it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain

import redis

from . import logs
from .chain import DEADLINE_EPSILON, Runtime, Scheduler, poll_answered, poll_out_of_time
from .keys import Keys
from .store import LUA_FINITE
from .upstream import Status, UpstreamClient, UpstreamError

# KEYS[1] polls. ARGV: job key prefix, tick key prefix, tick key lifetime (ms), then
# triples (job id, due time, consecutive transient errors), then "|", then the ticks
# (ms) those polls fall in. Returns the ticks that had no message yet: the caller
# publishes one for each.
_SCHEDULE = LUA_FINITE + """
finite(ARGV[3], 'tick key lifetime')
local i = 4
while ARGV[i] ~= '|' do
  if ARGV[i] == nil then error('videoq: no | after the polls') end
  finite(ARGV[i + 1], 'due time')
  finite(ARGV[i + 2], 'errors')
  i = i + 3
end
for j = i + 1, #ARGV do finite(ARGV[j], 'tick') end
i = 4
while ARGV[i] ~= '|' do
  redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  redis.call('HSET', ARGV[1] .. ARGV[i], 'poll_errors', ARGV[i + 2])
  i = i + 3
end
local fresh = {}
for j = i + 1, #ARGV do
  if redis.call('SET', ARGV[2] .. ARGV[j], '1', 'NX', 'PX', ARGV[3]) then
    table.insert(fresh, ARGV[j])
  end
end
return fresh
"""

# KEYS[1] polls, KEYS[2] the active set. ARGV: horizon, limit, now, lease end, job key
# prefix. Claims up to ``limit`` polls due by ``horizon`` the way a chain's poll step
# claims its own (``poll_seq`` raised by one, ``attempts`` counted, the sweeper's due
# time pushed to the lease end) and leases them: their score in ``polls`` moves to the
# lease end. Ids whose job is gone or no longer generating leave ``polls``.
# Returns {more, id, deadline, seq, errors, generation id, id, ...}: ``more`` is how
# many are still due after this batch.
_CLAIM = LUA_FINITE + """
finite(ARGV[1], 'horizon')
finite(ARGV[2], 'limit')
finite(ARGV[3], 'now')
finite(ARGV[4], 'lease end')
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {0}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local f = redis.call('HMGET', key, 'state', 'deadline_at', 'poll_seq', 'poll_errors',
                       'generation_id')
  if f[1] == 'generating' and f[5] and f[5] ~= '' then
    local seq = (tonumber(f[3]) or 0) + 1
    redis.call('HSET', key, 'poll_seq', seq, 'last_poll_at', ARGV[3], 'updated_at', ARGV[3])
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', KEYS[2], ARGV[4], id)
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    table.insert(out, id)
    table.insert(out, f[2] or '0')
    table.insert(out, tostring(seq))
    table.insert(out, f[4] or '0')
    table.insert(out, f[5])
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
out[1] = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
return out
"""


@dataclass(frozen=True)
class ClaimedPoll:
    job_id: str
    deadline_at: float
    seq: int  # this poll's number; the record's poll_seq already holds it
    errors: int
    generation_id: str


def tick_of(due_at: float, width: float) -> float:
    """The end of the tick ``due_at`` falls in: the time its tick message runs."""
    return math.ceil(round(due_at / width, 6)) * width


class PollBook:
    """The ``polls`` schedule in Redis: when each generating job is next polled."""

    def __init__(self, client: redis.Redis, keys: Keys, tick_width: float) -> None:
        self.keys = keys
        self.tick_width = tick_width
        self._client = client
        self._schedule = client.register_script(_SCHEDULE)
        self._claim = client.register_script(_CLAIM)

    def schedule(self, polls: list[tuple[str, float, int]], now: float) -> list[float]:
        """Put polls ``(job id, due time, errors)`` in the book, in one script. Returns
        the ticks that need a message (none was on its way)."""
        if not polls:
            return []
        ticks = {round(tick_of(due, self.tick_width) * 1000) for _, due, _ in polls}
        ttl_ms = max(1000, int((max(ticks) / 1000 - now + 5) * 1000))
        args: list[str | int | float] = [self.keys.job(""), self.keys.tick_prefix(), ttl_ms]
        for job_id, due, errors in polls:
            args += [job_id, repr(due), errors]
        args += ["|", *sorted(ticks)]
        fresh = self._schedule(keys=[self.keys.polls()], args=args)
        return [int(t) / 1000 for t in fresh]

    def claim(
        self, horizon: float, limit: int, now: float, lease_until: float
    ) -> tuple[list[ClaimedPoll], int]:
        """Claim up to ``limit`` polls due by ``horizon``; also how many more are due."""
        raw = self._claim(
            keys=[self.keys.polls(), self.keys.active()],
            args=[repr(horizon), limit, repr(now), repr(lease_until), self.keys.job("")],
        )
        claimed = [
            ClaimedPoll(
                _s(raw[i]), float(raw[i + 1] or 0), int(raw[i + 2]), int(raw[i + 3] or 0),
                _s(raw[i + 4]),
            )
            for i in range(1, len(raw), 5)
        ]
        return claimed, int(raw[0])

    def size(self) -> int:
        return int(self._client.zcard(self.keys.polls()))


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class TickScheduler:
    """The scheduler a tick's poll steps see: next polls are collected and written to
    the book together (a job stays leased until then, so nothing is lost if the
    worker dies first); other steps go straight to ``inner``."""

    def __init__(self, inner: Scheduler, clock: Callable[[], float]) -> None:
        self.inner = inner
        self.clock = clock
        self.polls: list[tuple[str, float, int]] = []

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.inner.generate(job_id, deadline_at, attempt, countdown)

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        self.inner.webhook(job_id, attempt, countdown)

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        self.polls.append((job_id, self.clock() + countdown, errors))


# Status calls for a batch, (generation id, timeout) each: each answer as it arrives,
# with its index among the calls, or None now and then while none arrives.
Fetch = Callable[
    [Sequence[tuple[str, float]]], Iterable[tuple[int, Status | UpstreamError] | None]
]


def fetch_one_by_one(upstream: UpstreamClient) -> Fetch:
    """A :data:`Fetch` through the synchronous client, one call after another (tests)."""

    def fetch(
        calls: Sequence[tuple[str, float]],
    ) -> Iterator[tuple[int, Status | UpstreamError] | None]:
        for index, (generation_id, timeout) in enumerate(calls):
            try:
                yield index, upstream.status(generation_id, timeout=timeout)
            except UpstreamError as exc:
                yield index, exc

    return fetch


def run_tick(
    rt: Runtime, book: PollBook, tick: float, fetch: Fetch,
    publish: Callable[[float, float], None],
) -> int:
    """Poll every job due by this tick (up to a batch). Returns how many were polled.

    ``fetch`` makes the status calls of the whole batch (the worker's
    :meth:`UpstreamClient.each_status`) and gives each answer as it arrives;
    ``publish(tick, countdown)`` sends a tick.
    """
    settings = rt.settings
    now = rt.clock()
    lease_until = now + rt.upstream_timeout + settings.stall_timeout
    # A timer may fire a hair before its tick: polls due by the tick's end are taken.
    claimed, more = book.claim(max(now, tick), settings.poll_batch, now, lease_until)
    if more:
        publish(tick, 0.0)  # the rest of this tick, for another pool slot or worker
    # A poll at its job's deadline has no time left for a call: it times the job out.
    late: list[ClaimedPoll] = []
    due: list[tuple[ClaimedPoll, float]] = []
    for poll in claimed:
        timeout = rt.call_timeout(poll.deadline_at)
        if timeout <= DEADLINE_EPSILON:
            late.append(poll)
        else:
            due.append((poll, timeout))
    collected = TickScheduler(rt.scheduler, rt.clock)
    tick_rt = replace(rt, scheduler=collected)
    answers = fetch([(p.generation_id, timeout) for p, timeout in due])
    steps: Iterator[tuple[ClaimedPoll, Status | UpstreamError | None] | None] = chain(
        ((p, None) for p in late),
        (None if item is None else (due[item[0]][0], item[1]) for item in answers),
    )
    failed = scheduled = 0
    for step in steps:
        if step is None:
            # No answer yet: while a slow peer holds a call, the next polls of the jobs
            # that have answered are written to the book, not held back.
            scheduled += _flush(book, collected, rt.clock(), publish)
            continue
        poll, answer = step
        try:
            if answer is None:
                poll_out_of_time(tick_rt, poll.job_id, poll.seq, poll.errors)
            else:
                poll_answered(
                    tick_rt, poll.job_id, poll.deadline_at, poll.seq, poll.errors, answer
                )
        except redis.RedisError as exc:
            # The job stays leased: the first tick after the lease polls it again.
            failed += 1
            logs.event(
                "poll.failed", level=logging.WARNING, job_id=poll.job_id, state="generating",
                attempt=poll.seq, error=f"{type(exc).__name__}: {exc}",
                retry_at=round(lease_until, 3),
            )
    scheduled += _flush(book, collected, rt.clock(), publish)
    logs.event(
        "tick.done", level=logging.DEBUG, tick=round(tick, 3), polled=len(claimed),
        failed=failed, more=more, scheduled=scheduled,
    )
    return len(claimed)


def _flush(
    book: PollBook, collected: TickScheduler, now: float,
    publish: Callable[[float, float], None],
) -> int:
    """Write the next polls collected so far to the book; publish the ticks they need.
    If Redis fails here, those jobs stay leased: the first tick after the lease (or the
    sweeper) polls them again."""
    polls, collected.polls = collected.polls, []
    if not polls:
        return 0
    try:
        for fresh in book.schedule(polls, now):
            publish(fresh, max(0.0, fresh - now))
    except redis.RedisError as exc:
        logs.event("tick.schedule_failed", level=logging.WARNING, polls=len(polls),
                   error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return 0
    return len(polls)
