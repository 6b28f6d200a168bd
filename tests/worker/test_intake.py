"""Batch mode's creates: a tick starts every create due, with the one create claim."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from tests.worker.conftest import World
from tests.worker.test_ticks import TICK, BookScheduler, batch_world, due_at
from worker.answers import Status
from worker.errors import Transient
from worker.intake import CREATE_LEASE, run_create_tick
from worker.states import ErrorKind, JobState
from worker.ticks import TickReport, tick_of


def submit(w: World, *job_ids: str) -> None:
    for job_id in job_ids:
        w.job(job_id)
        w.store.book_creates({job_id: w.clock()})


def create_tick(w: World, s: BookScheduler) -> TickReport:
    return run_create_tick(w.rt, tick_of(w.clock(), TICK), w.upstream.each_create, s.publish)


def booked(w: World) -> list[str]:
    return [str(i) for i in w.store.redis.zrange(w.store.keys.creates(), 0, -1)]


def test_a_tick_creates_a_burst_with_one_claim_and_books_the_first_polls(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, poll_interval=10.0, poll_batch=3)
    submit(w, "a", "b", "c", "d")
    w.upstream.create_answers.extend(Status(f"gen-{i}", "queued") for i in "abcd")
    report = create_tick(w, s)
    assert (report.taken, report.created, report.more) == (3, 3, 1)
    assert s.published == 1  # the rest of the burst: another tick at once
    assert "'creates': 3" in report.label()
    assert create_tick(w, s).created == 1
    assert len(w.upstream.creates) == 4 and booked(w) == []
    for job_id in "abcd":
        job = w.store.get(job_id)
        assert job is not None and job.state is JobState.GENERATING and job.attempts == 1
        assert job.generation_id == f"gen-{job_id}"
        assert due_at(w, job_id) == pytest.approx(w.clock() + 10.0)


def test_two_ticks_racing_for_the_same_creates_make_each_create_once(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world)
    submit(w, "a", "b")
    inner: list[TickReport] = []

    def racing(
        calls: Sequence[tuple[dict[str, Any], float]], slots: object = None
    ) -> Iterator[tuple[int, Status]]:
        # While the first tick's calls are out, a second tick runs (another worker).
        inner.append(create_tick(w, s))
        for index, _ in enumerate(calls):
            yield index, Status(f"gen-{index}", "queued")

    run_create_tick(w.rt, tick_of(w.clock(), TICK), racing, s.publish)
    assert inner[0].taken == 0  # leased by the first tick, then claimed
    assert w.upstream.creates == []  # the second tick made no create
    w.clock.advance(CREATE_LEASE + 1)  # even after the lease: claimed jobs are not queued
    assert create_tick(w, s).created == 0
    assert [w.state(i) for i in "ab"] == [JobState.GENERATING] * 2


def test_a_transient_error_books_the_create_again_after_a_backoff(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world)
    submit(w, "a")
    w.upstream.create_answers.append(Transient("HTTP 503", kind="server_error"))
    create_tick(w, s)
    assert w.state("a") is JobState.QUEUED
    retry_at = w.store.redis.zscore(w.store.keys.creates(), "a")
    assert retry_at is not None and retry_at >= w.clock() + 1.0
    w.clock.now = retry_at
    w.upstream.create_answers.append(Status("gen-a", "queued"))
    assert create_tick(w, s).created == 1
    job = w.store.get("a")
    assert job is not None and job.state is JobState.GENERATING and job.attempts == 2


def test_a_lost_answer_is_never_repeated(world: Callable[..., World]) -> None:
    w, s = batch_world(world)
    submit(w, "a")
    w.upstream.create_answers.append(
        Transient("read timeout", kind="timeout", outcome_unknown=True)
    )
    create_tick(w, s)
    job = w.store.get("a")
    assert job is not None and job.state is JobState.FAILED
    assert job.error is not None and job.error.kind == ErrorKind.CREATE_OUTCOME_UNKNOWN
    assert len(w.upstream.creates) == 1 and booked(w) == []


def test_past_the_deadline_and_over_the_cap_no_create_is_made(
    world: Callable[..., World],
) -> None:
    w, s = batch_world(world, max_in_flight=1, deadline=30.0)
    submit(w, "a", "b")
    w.upstream.create_answers.append(Status("gen-a", "queued"))
    assert create_tick(w, s).created == 1  # b waits in line: out of the book
    assert w.state("b") is JobState.QUEUED and booked(w) == []
    w.clock.advance(31.0)
    w.store.book_creates({"b": w.clock()})  # woken, too late
    assert create_tick(w, s).created == 0
    assert w.state("b") is JobState.TIMED_OUT and len(w.upstream.creates) == 1
