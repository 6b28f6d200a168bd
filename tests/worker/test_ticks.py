"""Batch mode's poll book and ticks, on a fake clock with the real job store."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NoReturn

import pytest

from tests.worker.conftest import World
from worker import scheduling
from worker.answers import Status
from worker.chain import PollStep, poll_answered
from worker.errors import Transient
from worker.states import JobState
from worker.store import BookedPoll
from worker.ticks import LEASE_RENEWAL, POLL_LEASE, TickReport, run_tick, tick_of

TICK = 0.25


class BookScheduler(scheduling.BookScheduler):
    """Batch mode's scheduler, on the world's fake clock, recording the messages it
    would send (webhooks) and the ticks sent for the rest of a burst."""

    def __init__(self, w: World) -> None:
        super().__init__(self._send, w.rt.settings.queue, w.store, clock=w.clock)
        self.w = w
        self.sent: list[str] = []
        self.published = 0  # ticks sent for the rest of a burst

    def _send(self, name: str, **_: object) -> None:
        self.sent.append(name)

    def publish(self) -> None:
        self.published += 1


def batch_world(world: Callable[..., World], **overrides: object) -> tuple[World, BookScheduler]:
    w = world(poll_mode="batch", poll_tick=TICK, **overrides)
    scheduler = BookScheduler(w)
    w.rt.scheduler = scheduler
    return w, scheduler


def start(w: World, *job_ids: str) -> None:
    for job_id in job_ids:
        w.job(job_id)
        w.upstream.create_answers.append(Status(f"gen-{job_id}", "queued"))
        w.generate(job_id)


def tick(w: World, s: BookScheduler) -> TickReport:
    return run_tick(w.rt, tick_of(w.clock(), TICK), w.upstream.each_status, s.publish)


def due_at(w: World, job_id: str) -> float | None:
    return w.store.redis.zscore(w.store.keys.polls(), job_id)


def test_tick_of_is_the_end_of_the_tick_a_time_falls_in() -> None:
    assert tick_of(10.01, 0.25) == 10.25
    assert tick_of(10.25, 0.25) == 10.25
    assert tick_of(10.0, 1.0) == 10.0


def test_a_tick_polls_only_due_jobs_and_hands_the_rest_of_a_burst_on(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0, poll_batch=2)
    start(w, "a", "b", "c")
    assert due_at(w, "a") == pytest.approx(w.clock() + 10.0)
    assert tick(w, s).taken == 0  # nothing due yet
    assert w.upstream.polls == [] and s.published == 0
    w.clock.advance(10.0)
    w.upstream.status_answers.extend(Status("g", "generating") for _ in range(3))
    report = tick(w, s)
    assert (report.taken, report.more, report.ended) == (2, 1, 0)
    assert s.published == 1  # one more due than a batch: another tick at once
    assert tick(w, s).taken == 1
    assert sorted(w.upstream.polls) == ["gen-a", "gen-b", "gen-c"]
    for job_id in "abc":
        job = w.store.get(job_id)
        assert job is not None and job.polls == 1 and job.state is JobState.GENERATING
        assert due_at(w, job_id) == pytest.approx(w.clock() + 10.0)


def test_a_finished_job_leaves_the_book_and_the_tick_says_so(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a", "b")
    w.clock.advance(10.0)
    w.upstream.status_answers.extend(
        [
            Status("gen-a", "completed", video_url="https://v/a.mp4"),
            Status("gen-b", "generating"),
        ]
    )
    report = tick(w, s)
    assert (report.taken, report.ended) == (2, 1)
    assert "'polls': 2, 'ended': 1" in report.label()
    assert w.state("a") is JobState.COMPLETED
    assert due_at(w, "a") is None and due_at(w, "b") is not None


def test_a_poll_lost_with_its_worker_is_claimed_again_after_the_lease_and_fenced(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0, stall_timeout=20.0)
    start(w, "a")
    w.clock.advance(10.0)
    now = w.clock()
    # A tick that dies before polling: its claim holds the job for the lease only.
    [lost], _ = w.store.claim_due_polls(now, 10, now, now + POLL_LEASE, now + 60)
    assert lost.seq == 1
    # (a tick takes polls due by its slot's end: up to a tick early)
    w.clock.advance(POLL_LEASE - TICK - 0.05)
    assert tick(w, s).taken == 0  # leased: nobody else polls it yet
    w.clock.advance(TICK + 0.1)
    w.upstream.status_answers.append(Status("gen-a", "generating"))
    assert tick(w, s).taken == 1
    job = w.store.get("a")
    assert job is not None and job.polls == 2
    # The lost poll, were it to run late after all, cannot move the record.
    done = Status("gen-a", "completed", video_url="https://v/a.mp4")
    poll_answered(w.rt, PollStep("a", lost.deadline_at, lost.seq, 0), done)
    assert w.state("a") is JobState.GENERATING


def test_a_slow_call_keeps_its_lease_while_it_is_out(
    world: Callable[..., World],
) -> None:
    """The lease is short (a killed worker's jobs come back within seconds), so a
    tick renews it while a call is out: no other tick polls that job meanwhile."""
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a")
    w.clock.advance(10.0)
    others: list[int] = []

    def slow(
        calls: Sequence[tuple[str, float]], slots: object = None
    ) -> Iterator[tuple[int, Status] | None]:
        for _ in range(4):  # four idle periods: twice the lease in all
            w.clock.advance(POLL_LEASE / 2)
            yield None
            others.append(
                len(
                    w.store.claim_due_polls(w.clock(), 10, w.clock(), w.clock() + 1, w.clock() + 1)[
                        0
                    ]
                )
            )
        yield 0, Status("gen-a", "generating")

    assert run_tick(w.rt, tick_of(w.clock(), TICK), slow, s.publish).taken == 1
    assert others == [0, 0, 0, 0]
    assert POLL_LEASE / 2 >= LEASE_RENEWAL  # each idle period renews
    job = w.store.get("a")
    assert job is not None and job.polls == 1 and job.state is JobState.GENERATING


def test_a_cancelled_job_is_dropped_from_the_book_without_a_poll(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a")
    w.store.redis.hset(w.store.keys.job("a"), "state", "cancelled")
    w.clock.advance(10.0)
    assert tick(w, s).taken == 0
    assert w.upstream.polls == [] and due_at(w, "a") is None


def test_transient_errors_are_counted_across_ticks_and_back_off(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=2.0, retry_backoff=2.0, retry_backoff_max=30.0)
    start(w, "a")
    delays = []
    for _ in range(3):
        w.upstream.status_answers.append(Transient("HTTP 503", kind="server_error"))
        w.clock.now = due_at(w, "a") or 0.0
        assert tick(w, s).taken == 1
        delays.append((due_at(w, "a") or 0.0) - w.clock())
    assert w.store.redis.hget(w.store.keys.job("a"), "poll_errors") == "3"
    assert delays[2] > delays[0] >= 2.0  # exponential, never below the poll interval


def test_a_tick_that_dies_mid_call_leaves_its_jobs_leased_only_for_the_lease(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0, stall_timeout=20.0)
    start(w, "a")
    w.clock.advance(10.0)

    def killed(calls: object, slots: object = None) -> NoReturn:
        raise RuntimeError("the worker died during the status calls")

    with pytest.raises(RuntimeError):
        run_tick(w.rt, tick_of(w.clock(), TICK), killed, s.publish)
    w.clock.advance(POLL_LEASE - TICK - 0.05)
    assert tick(w, s).taken == 0
    w.clock.advance(TICK + 0.1)
    w.upstream.status_answers.append(Status("gen-a", "generating"))
    assert tick(w, s).taken == 1
    job = w.store.get("a")
    assert job is not None and job.polls == 2


def test_answers_are_taken_as_they_arrive_and_next_polls_written_meanwhile(
    world: Callable[..., World],
) -> None:
    """A slow status call holds back no other job: while it is out (the fetch says
    so with None), the next polls of the jobs that answered are in the book."""
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a", "b", "c")
    w.clock.advance(10.0)
    book_while_c_is_out: list[float | None] = []

    def fetch(
        calls: Sequence[tuple[str, float]], slots: object = None
    ) -> Iterator[tuple[int, Status] | None]:
        slow = next(i for i, (g, _) in enumerate(calls) if g == "gen-c")
        for index, (generation_id, _) in enumerate(calls):
            if index != slow:
                yield index, Status(generation_id, "generating")
        yield None  # c's call is still out
        book_while_c_is_out.append(due_at(w, "a"))
        w.clock.advance(2.0)
        yield slow, Status("gen-c", "generating")

    assert run_tick(w.rt, tick_of(w.clock(), TICK), fetch, s.publish).taken == 3
    a_due = book_while_c_is_out[0]
    assert a_due is not None and a_due == pytest.approx(w.clock() - 2.0 + 10.0)
    assert due_at(w, "c") == pytest.approx(w.clock() + 10.0)


def test_a_poll_at_the_deadline_times_the_job_out_without_a_call(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0, deadline=30.0)
    start(w, "a")
    w.clock.now = w.deadline_at  # the clamped last step, due at the deadline
    w.store.schedule_polls([BookedPoll("a", w.clock(), 2)], w.clock())
    assert tick(w, s).taken == 1
    assert w.upstream.polls == []
    job = w.store.get("a")
    assert job is not None and job.state is JobState.TIMED_OUT
    assert job.error is not None and "unreachable" in job.error.message


def test_a_next_poll_is_noted_and_booked_only_while_its_step_holds_the_claim(
    world: Callable[..., World],
) -> None:
    """The tick writes its next polls in one script, fenced by each step's poll number:
    a job cancelled (or claimed by a later poll) meanwhile is not booked again."""
    w, s = batch_world(world, poll_interval=10.0)
    start(w, "a", "b")
    w.clock.advance(10.0)

    def fetch(
        calls: Sequence[tuple[str, float]], slots: object = None
    ) -> Iterator[tuple[int, Status | Transient]]:
        w.store.transition("a", [JobState.GENERATING], JobState.CANCELLED)
        for index in range(len(calls)):
            yield index, Transient("HTTP 503", kind="server_error")

    report = run_tick(w.rt, tick_of(w.clock(), TICK), fetch, s.publish)
    assert report.taken == 2 and report.ended == 1  # a's step found it ended
    assert due_at(w, "a") is None
    b = w.store.redis.hgetall(w.store.keys.job("b"))
    assert b["last_error"] == "HTTP 503" and b["poll_errors"] == "1"
    assert float(b["next_poll_at"]) == due_at(w, "b")
    active = w.store.redis.zscore(w.store.keys.active(), "b")
    assert active == pytest.approx(float(b["next_poll_at"]) + w.rt.settings.stall_timeout)
    assert w.store.redis.hget(w.store.keys.job("a"), "next_poll_at") != b["next_poll_at"]
