"""Calls the fleet's rate limit held back (``Throttled``: not sent) are rescheduled when
a slot is expected: no backoff, no upstream error counted, no create attempt used."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.worker.conftest import World
from tests.worker.test_intake import booked, create_tick, submit
from tests.worker.test_ticks import batch_world, due_at, start, tick
from worker.answers import Status
from worker.errors import Throttled, Transient
from worker.ratelimit import Refused
from worker.states import JobState


def throttled(after: float) -> Throttled:
    return Throttled("poll not sent: no slot", retry_after=after)


def test_chain_mode_a_throttled_poll_comes_back_when_its_slot_is_due(
    world: Callable[..., World],
) -> None:
    w = world(deadline=1000.0)
    w.job()
    w.generate()
    w.scheduler.pop()
    w.upstream.status_answers.extend([Transient("HTTP 503"), throttled(0.7)])
    w.poll(1)
    w.scheduler.pop()
    w.poll(2, errors=1)
    nxt = w.scheduler.pop()
    assert (nxt.seq, nxt.errors) == (3, 1)  # the error count is not raised ...
    assert nxt.countdown == pytest.approx(0.7)  # ... nor the delay backed off
    job = w.store.get("job-1")
    assert job is not None and job.state is JobState.GENERATING
    assert w.store.redis.hget(w.store.keys.job("job-1"), "last_error") == "HTTP 503"
    assert w.store.stats().get("upstream_error:throttled") is None


def test_batch_mode_a_throttled_poll_is_booked_at_its_slot(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a")
    w.clock.advance(10.0)
    w.upstream.status_answers.append(throttled(1.5))
    assert tick(w, s).taken == 1
    assert due_at(w, "a") == pytest.approx(w.clock() + 1.5)
    record = w.store.redis.hgetall(w.store.keys.job("a"))
    assert record["poll_errors"] == "0" and record["last_error"] == ""
    assert w.store.stats().get("upstream_error:throttled") is None


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_a_throttled_create_is_released_and_tried_again_as_the_same_attempt(
    world: Callable[..., World], mode: str
) -> None:
    if mode == "batch":
        w, s = batch_world(world)
        submit(w, "a")
        w.upstream.create_answers.append(Throttled("create not sent", retry_after=2.0))
        create_tick(w, s)
        assert booked(w) == ["a"]
        assert w.store.redis.zscore(w.store.keys.creates(), "a") == pytest.approx(w.clock() + 2.0)
    else:
        w = world()
        w.job("a")
        w.upstream.create_answers.append(Throttled("create not sent", retry_after=2.0))
        w.generate("a")
        retry = w.scheduler.pop()
        assert (retry.step, retry.attempt, retry.countdown) == ("generate", 1, 2.0)
    job = w.store.get("a")
    assert job is not None and job.state is JobState.QUEUED
    assert job.attempts == 0  # not made, so not an attempt
    assert w.store.stats().get("upstream_error:throttled") is None
    w.upstream.create_answers.append(Status("gen-a", "queued"))
    w.clock.advance(2.0)
    if mode == "batch":
        assert create_tick(w, s).created == 1
    else:
        w.generate("a", attempt=1)
    job = w.store.get("a")
    assert job is not None and job.state is JobState.GENERATING and job.attempts == 1


def test_under_a_rate_limit_polls_without_a_slot_keep_their_place_in_line(
    world: Callable[..., World],
) -> None:
    """A tick reserves slots for its due polls, longest due first; those left without
    one go back to the book at the time they were due, so the next tick takes them
    first: every job is polled in turn, none is pushed behind polls due after it."""
    w, s = batch_world(world, poll_interval=10.0, upstream_rate=5.0)
    asked: list[int] = []

    def reserve(kind: str, count: int, timeout: float) -> list[float | Refused]:
        asked.append(count)
        return [0.0, 0.0, *[Refused(0.4, "rate")] * (count - 2)]  # two slots in reach

    w.upstream.reserve = reserve  # type: ignore[method-assign]
    start(w, "a", "b", "c", "d", "e")
    w.clock.advance(10.0)
    for job_id in "abcde":  # due one after another, a first
        w.store.redis.zadd(w.store.keys.polls(), {job_id: w.clock() - 5 + "abcde".index(job_id)})
    dues = {j: due_at(w, j) for j in "cde"}
    w.upstream.status_answers.extend(Status("g", "generating") for _ in range(5))
    assert tick(w, s).taken == 5
    assert w.upstream.polls == ["gen-a", "gen-b"] and asked == [5]
    assert {j: due_at(w, j) for j in "cde"} == dues  # still first in line
    assert s.published == 0  # no extra tick at once: the pump sends the next one
    assert tick(w, s).taken == 3
    assert w.upstream.polls[2:] == ["gen-c", "gen-d"]
    assert due_at(w, "e") == dues["e"]


def test_paused_polls_at_their_deadline_still_end_on_time(
    world: Callable[..., World],
) -> None:
    """While the fleet is paused (a 429's Retry-After) no call is made, but a job whose
    deadline comes is still timed out by the tick, with the pause as its last error."""
    w, s = batch_world(world, poll_interval=10.0, deadline=30.0, upstream_rate=5.0)

    def reserve(kind: str, count: int, timeout: float) -> list[float | Refused]:
        return [Refused(60.0, "paused")] * count

    w.upstream.reserve = reserve  # type: ignore[method-assign]
    start(w, "a")
    w.clock.advance(10.0)
    assert tick(w, s).taken == 1 and w.upstream.polls == []
    last_error = w.store.redis.hget(w.store.keys.job("a"), "last_error") or ""
    assert "not sent" in last_error and "429" in last_error
    w.clock.now = w.deadline_at
    tick(w, s)
    job = w.store.get("a")
    assert job is not None and job.state is JobState.TIMED_OUT and w.upstream.polls == []
