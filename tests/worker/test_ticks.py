"""Batch mode's poll book and ticks, on a fake clock with the real job store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.worker.conftest import World
from worker.chain import poll_answered
from worker.states import JobState
from worker.ticks import PollBook, fetch_one_by_one, run_tick, tick_of
from worker.upstream import Status, Transient

TICK = 0.25


class BookScheduler:
    """What ``worker.tasks.BatchScheduler`` does, with the ticks it publishes recorded."""

    def __init__(self, w: World, book: PollBook) -> None:
        self.w, self.book = w, book
        self.ticks: list[tuple[float, float]] = []
        self.generates: list[str] = []

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.generates.append(job_id)

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        pass

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        now = self.w.clock()
        for tick in self.book.schedule([(job_id, now + countdown, errors)], now):
            self.publish(tick, tick - now)

    def publish(self, tick: float, countdown: float) -> None:
        self.ticks.append((tick, countdown))


def batch_world(
    world: Callable[..., World], **overrides: object
) -> tuple[World, PollBook, BookScheduler]:
    w = world(poll_mode="batch", poll_tick=TICK, **overrides)
    book = PollBook(w.store.redis, w.store.keys, TICK)
    scheduler = BookScheduler(w, book)
    w.rt.scheduler = scheduler
    return w, book, scheduler


def start(w: World, *job_ids: str) -> None:
    for job_id in job_ids:
        w.job(job_id)
        w.upstream.create_answers.append(Status(f"gen-{job_id}", "queued"))
        w.generate(job_id)


def tick(w: World, book: PollBook, s: BookScheduler) -> int:
    fetch = fetch_one_by_one(w.upstream)  # type: ignore[arg-type]
    return run_tick(w.rt, book, tick_of(w.clock(), TICK), fetch, s.publish)


def test_tick_of_is_the_end_of_the_tick_a_time_falls_in() -> None:
    assert tick_of(10.01, 0.25) == 10.25
    assert tick_of(10.25, 0.25) == 10.25
    assert tick_of(10.0, 1.0) == 10.0


def test_one_message_per_tick_however_many_jobs_fall_in_it(
    world: Callable[..., World],
) -> None:
    w, _, s = batch_world(world, poll_interval=10.0)
    start(w, "a", "b", "c")
    first_poll = tick_of(w.clock() + 10.0, TICK)
    assert s.ticks == [(first_poll, pytest.approx(first_poll - w.clock()))]


def test_a_tick_polls_only_due_jobs_and_hands_the_rest_of_a_burst_on(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0, poll_batch=2)
    start(w, "a", "b", "c")
    s.ticks.clear()
    assert tick(w, book, s) == 0  # nothing due yet
    assert w.upstream.polls == []
    w.clock.advance(10.0)
    w.upstream.status_answers.extend(Status("g", "generating") for _ in range(3))
    assert tick(w, book, s) == 2
    assert len(w.upstream.polls) == 2
    # One more due than a batch: a message for the same tick, at once; then the next
    # polls of the two, 10 s on, in one new tick.
    assert s.ticks[0] == (tick_of(w.clock(), TICK), 0.0)
    assert s.ticks[1][0] == tick_of(w.clock() + 10.0, TICK)
    assert tick(w, book, s) == 1
    assert sorted(w.upstream.polls) == ["gen-a", "gen-b", "gen-c"]
    for job_id in "abc":
        job = w.store.get(job_id)
        assert job is not None and job.polls == 1 and job.state is JobState.GENERATING


def test_a_finished_job_leaves_the_book(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0)
    start(w, "a")
    w.clock.advance(10.0)
    w.upstream.status_answers.append(Status("gen-a", "completed", video_url="https://v/a.mp4"))
    assert tick(w, book, s) == 1
    assert w.state("a") is JobState.COMPLETED
    assert book.size() == 0


def test_a_poll_lost_with_its_worker_is_claimed_again_after_the_lease_and_fenced(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0, stall_timeout=20.0)
    start(w, "a")
    w.clock.advance(10.0)
    now = w.clock()
    lease = now + w.rt.upstream_timeout + 20.0
    [lost], _ = book.claim(now, 10, now, lease)  # a tick that dies before polling
    assert lost.seq == 1
    w.clock.advance(lease - now - 0.5)
    assert tick(w, book, s) == 0  # leased: nobody else polls it yet
    w.clock.advance(1.0)
    w.upstream.status_answers.append(Status("gen-a", "generating"))
    assert tick(w, book, s) == 1
    job = w.store.get("a")
    assert job is not None and job.polls == 2
    # The lost poll, were it to run late after all, cannot move the record.
    done = Status("gen-a", "completed", video_url="https://v/a.mp4")
    poll_answered(w.rt, "a", lost.deadline_at, lost.seq, 0, done)
    assert w.state("a") is JobState.GENERATING


def test_a_cancelled_job_is_dropped_from_the_book_without_a_poll(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0)
    start(w, "a")
    w.store.redis.hset(w.store.keys.job("a"), "state", "cancelled")
    w.clock.advance(10.0)
    assert tick(w, book, s) == 0
    assert w.upstream.polls == [] and book.size() == 0


def test_transient_errors_are_counted_across_ticks_and_back_off(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=2.0, retry_backoff=2.0, retry_backoff_max=30.0)
    start(w, "a")
    delays = []
    for _ in range(3):
        w.upstream.status_answers.append(Transient("HTTP 503", kind="server_error"))
        due = float(w.store.redis.zscore(w.store.keys.polls(), "a") or 0)
        w.clock.now = due
        assert tick(w, book, s) == 1
        delays.append(float(w.store.redis.zscore(w.store.keys.polls(), "a") or 0) - w.clock())
    assert w.store.redis.hget(w.store.keys.job("a"), "poll_errors") == "3"
    assert delays[2] > delays[0] >= 2.0  # exponential, never below the poll interval


def test_a_tick_that_dies_mid_call_leaves_its_jobs_leased_for_the_timeouts(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0, stall_timeout=20.0)
    start(w, "a")
    w.clock.advance(10.0)

    def killed(generation_ids: object) -> list[Status]:
        raise RuntimeError("the worker died during the status calls")

    with pytest.raises(RuntimeError):
        run_tick(w.rt, book, tick_of(w.clock(), TICK), killed, s.publish)
    lease = w.rt.upstream_timeout + 20.0  # the longest call, then the stall timeout
    w.clock.advance(lease - 0.5)
    assert tick(w, book, s) == 0
    w.clock.advance(1.0)
    w.upstream.status_answers.append(Status("gen-a", "generating"))
    assert tick(w, book, s) == 1
    job = w.store.get("a")
    assert job is not None and job.polls == 2


def test_answers_are_taken_as_they_arrive_and_next_polls_written_meanwhile(
    world: Callable[..., World],
) -> None:
    """A slow status call holds back no other job: while it is out (the fetch says
    so with None), the next polls of the jobs that answered are in the book, with
    their ticks published."""
    w, book, s = batch_world(world, poll_interval=10.0)
    start(w, "a", "b", "c")
    w.clock.advance(10.0)
    book_while_c_is_out: list[float | None] = []
    published_while_c_is_out: list[int] = []

    def fetch(
        calls: Sequence[tuple[str, float]],
    ) -> Iterator[tuple[int, Status] | None]:
        slow = next(i for i, (g, _) in enumerate(calls) if g == "gen-c")
        for index, (generation_id, _) in enumerate(calls):
            if index != slow:
                yield index, Status(generation_id, "generating")
        yield None  # c's call is still out
        book_while_c_is_out.append(w.store.redis.zscore(w.store.keys.polls(), "a"))
        published_while_c_is_out.append(len(s.ticks))
        w.clock.advance(2.0)
        yield slow, Status("gen-c", "generating")

    before = len(s.ticks)
    assert run_tick(w.rt, book, tick_of(w.clock(), TICK), fetch, s.publish) == 3
    a_due = book_while_c_is_out[0]
    assert a_due is not None and a_due == pytest.approx(w.clock() - 2.0 + 10.0)
    assert published_while_c_is_out[0] > before
    assert w.store.redis.zscore(w.store.keys.polls(), "c") == pytest.approx(w.clock() + 10.0)


def test_a_poll_at_the_deadline_times_the_job_out_without_a_call(
    world: Callable[..., World],
) -> None:
    w, book, s = batch_world(world, poll_interval=10.0, deadline=30.0)
    start(w, "a")
    w.clock.now = w.deadline_at  # the clamped last step, due at the deadline
    book.schedule([("a", w.clock(), 2)], w.clock())
    assert tick(w, book, s) == 1
    assert w.upstream.polls == []
    job = w.store.get("a")
    assert job is not None and job.state is JobState.TIMED_OUT
    assert job.error is not None and "unreachable" in job.error.message
