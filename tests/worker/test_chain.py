"""The chain's decisions, step by step, with a fake clock, a scripted upstream and a
recording scheduler (the job store is real: Redis)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.worker.conftest import World, generating
from worker.answers import Status
from worker.errors import ProtocolError, Rejected, Transient
from worker.runtime import Runtime
from worker.settings import Settings
from worker.states import ErrorKind, JobState


def test_happy_path_one_create_then_polls_until_completed(world: Callable[..., World]) -> None:
    w = world()
    w.job()
    w.upstream.create_answers.append(Status("gen-9", "queued"))
    w.generate()
    assert len(w.upstream.creates) == 1
    assert w.upstream.creates[0]["model"] == "kling-video/v2.1/pro/image-to-video"
    job = w.store.get("job-1")
    assert job and job.state is JobState.GENERATING and job.generation_id == "gen-9"
    first = w.scheduler.pop()
    assert (first.step, first.seq, first.countdown) == ("poll", 1, 10.0)

    w.upstream.status_answers.extend(
        [
            Status("gen-9", "waiting"),
            Status("gen-9", "active"),
            Status("gen-9", "generating"),
            Status("gen-9", "completed", video_url="https://cdn/v.mp4", credits_used=210.0),
        ]
    )
    for seq in range(1, 5):
        w.clock.advance(10)
        w.poll(seq)
        if seq < 4:
            nxt = w.scheduler.pop()
            assert (nxt.step, nxt.seq, nxt.countdown) == ("poll", seq + 1, 10.0)
    assert not w.scheduler.calls
    job = w.store.get("job-1")
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert (job.video_url, job.credits_used, job.polls) == ("https://cdn/v.mp4", 210.0, 4)
    assert job.finished_at == w.clock.now
    assert w.upstream.polls == ["gen-9"] * 4


def test_duplicate_generate_never_creates_twice(world: Callable[..., World]) -> None:
    w = world()
    w.job()
    w.generate()
    w.generate()  # a redelivery after the create was saved
    assert len(w.upstream.creates) == 1
    assert [c.step for c in w.scheduler.calls] == ["poll"]


def test_duplicate_generate_during_create_waits_then_records_unknown_outcome(
    world: Callable[..., World],
) -> None:
    w = world(deadline=1000.0)
    w.job()
    # A first delivery claimed the create and its worker died before saving the id.
    w.store.transition(
        "job-1",
        [JobState.QUEUED],
        JobState.SUBMITTING,
        {"claim_token": "dead", "claim_at": w.clock.now},
        now=w.clock.now,
    )
    w.generate(attempt=1)
    assert not w.upstream.creates
    recheck = w.scheduler.pop()
    assert recheck.step == "generate" and recheck.countdown > 0
    w.clock.advance(recheck.countdown)
    w.generate(attempt=1)
    assert not w.upstream.creates, "a create whose outcome is unknown is never repeated"
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED
    assert job.error and job.error.kind == ErrorKind.CREATE_OUTCOME_UNKNOWN


def test_duplicate_poll_is_dropped(world: Callable[..., World]) -> None:
    w = world()
    w.job()
    w.generate()
    w.scheduler.pop()
    w.upstream.status_answers.extend([Status("gen-1", "generating")] * 2)
    w.poll(1)
    w.poll(1)  # the same message delivered twice
    assert len(w.upstream.polls) == 1
    assert len(w.scheduler.calls) == 1


def test_429_on_create_is_rescheduled_no_sooner_than_retry_after(
    world: Callable[..., World],
) -> None:
    w = world()
    w.job()
    w.upstream.create_answers.extend(
        [Transient("HTTP 429", retry_after=17.0), Status("g", "queued")]
    )
    w.generate(attempt=1)
    assert w.state() is JobState.QUEUED
    retry = w.scheduler.pop()
    assert retry.step == "generate" and retry.attempt == 2 and retry.countdown >= 17.0
    job = w.store.get("job-1")
    assert job is not None and job.last_error == "HTTP 429"
    assert job.next_create_at == pytest.approx(w.clock.now + retry.countdown)  # for --wait
    w.clock.advance(retry.countdown)
    w.generate(attempt=2)
    assert w.state() is JobState.GENERATING
    assert len(w.upstream.creates) == 2  # the 429'd create was refused, not received


def test_create_retry_that_would_pass_the_deadline_times_out(world: Callable[..., World]) -> None:
    w = world(deadline=20.0)
    w.job()
    w.upstream.create_answers.append(Transient("HTTP 503", retry_after=60.0))
    w.generate()
    job = w.store.get("job-1")
    assert job and job.state is JobState.TIMED_OUT
    assert job.error and job.error.kind == ErrorKind.DEADLINE and "503" in job.error.message
    assert not w.scheduler.calls


def test_create_read_timeout_is_recorded_never_repeated(world: Callable[..., World]) -> None:
    w = world()
    w.job()
    w.upstream.create_answers.append(Transient("read timeout", outcome_unknown=True))
    w.generate()
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED
    assert job.error and job.error.kind == ErrorKind.CREATE_OUTCOME_UNKNOWN
    assert not w.scheduler.calls


def test_4xx_on_create_fails_at_once_with_the_upstreams_message(
    world: Callable[..., World],
) -> None:
    w = world()
    w.job()
    w.upstream.create_answers.append(Rejected(401, "Invalid API key"))
    w.generate()
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED
    assert job.error and job.error.kind == ErrorKind.UPSTREAM_REJECTED
    assert "Invalid API key" in job.error.message
    assert len(w.upstream.creates) == 1 and not w.scheduler.calls


@pytest.mark.parametrize(
    ("answer", "kind", "text"),
    [
        (
            Status("g", "error", error_name="NSFW", error_message="refused"),
            ErrorKind.UPSTREAM_ERROR,
            "NSFW: refused",
        ),
        (
            Status("g", "exploded"),
            ErrorKind.UPSTREAM_PROTOCOL,
            "unknown upstream status 'exploded'",
        ),
        (Status("g", "completed"), ErrorKind.UPSTREAM_PROTOCOL, "no video URL"),
        (ProtocolError("answer is not JSON"), ErrorKind.UPSTREAM_PROTOCOL, "not JSON"),
    ],
)
def test_poll_outcomes_that_fail_the_job(
    world: Callable[..., World], answer: Any, kind: ErrorKind, text: str
) -> None:
    w = world()
    generating(w)
    w.upstream.status_answers.append(answer)
    w.poll(1)
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED
    assert job.error and job.error.kind == kind and text in job.error.message
    assert not w.scheduler.calls


def test_transient_poll_errors_back_off_and_the_chain_survives(
    world: Callable[..., World],
) -> None:
    w = world(deadline=1000.0)
    generating(w)
    w.upstream.status_answers.extend(
        [
            Transient("HTTP 500"),
            Transient("HTTP 429", retry_after=45.0),
            Transient("connection refused"),
            Status("g", "completed", video_url="https://cdn/v.mp4"),
        ]
    )
    countdowns = []
    for seq in range(1, 4):
        w.poll(seq, errors=seq - 1)
        nxt = w.scheduler.pop()
        assert nxt.seq == seq + 1 and nxt.errors == seq
        countdowns.append(nxt.countdown)
        w.clock.advance(nxt.countdown)
    assert countdowns[0] >= 10.0  # never faster than the poll interval
    assert countdowns[1] >= 45.0  # Retry-After honoured
    assert all(c <= 45.0 for c in countdowns)
    w.poll(4, errors=3)
    assert w.state() is JobState.COMPLETED


def test_last_countdown_is_clamped_and_the_chain_ends_at_the_deadline(
    world: Callable[..., World],
) -> None:
    w = world(poll_interval=10.0, deadline=25.0)
    generating(w)
    w.upstream.status_answers.extend([Status("g", "generating")] * 5)
    seq = 1
    w.clock.advance(10)
    w.poll(seq)
    assert w.scheduler.pop().countdown == 10.0
    w.clock.advance(10)
    seq += 1
    w.poll(seq)
    look = w.scheduler.pop()
    # clamped, not a full interval: the last poll comes FINAL_LOOK (2 s) before the
    # deadline, so that its call, bounded by the deadline, can still find the video
    assert look.countdown == pytest.approx(3.0)
    w.clock.advance(look.countdown)
    w.poll(seq + 1)
    polls = len(w.upstream.polls)
    last = w.scheduler.pop()
    assert last.countdown == pytest.approx(2.0), "the step after it comes at the deadline"
    w.clock.advance(last.countdown)
    w.poll(seq + 2)
    assert len(w.upstream.polls) == polls, "no time left at the deadline: no call"
    job = w.store.get("job-1")
    assert job and job.state is JobState.TIMED_OUT
    assert job.error and job.error.kind == ErrorKind.DEADLINE
    assert job.finished_at == pytest.approx(w.deadline_at)
    assert not w.scheduler.calls


def test_the_last_poll_before_the_deadline_still_finds_a_finished_video(
    world: Callable[..., World],
) -> None:
    w = world(poll_interval=10.0, deadline=25.0)
    generating(w)
    w.upstream.status_answers.extend(
        [Status("g", "generating")] * 2 + [Status("g", "completed", video_url="https://v/1.mp4")]
    )
    for seq in (1, 2, 3):
        w.clock.advance(w.scheduler.pop().countdown if seq > 1 else 10)
        w.poll(seq)
    job = w.store.get("job-1")
    assert job and job.state is JobState.COMPLETED and job.video_url == "https://v/1.mp4"
    assert job.finished_at is not None and w.deadline_at - job.finished_at == pytest.approx(2.0)


def test_generate_after_the_deadline_times_out_without_a_create(
    world: Callable[..., World],
) -> None:
    w = world(deadline=5.0)
    w.job()
    w.clock.advance(6)
    w.generate()
    assert w.state() is JobState.TIMED_OUT
    assert not w.upstream.creates


@pytest.mark.parametrize("terminal", [JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED])
def test_terminal_record_is_never_changed_by_a_late_task(
    world: Callable[..., World], terminal: JobState
) -> None:
    w = world()
    generating(w)
    w.store.transition("job-1", [JobState.GENERATING], terminal, {"video_url": "keep"})
    before = w.store.redis.hgetall(w.store.keys.job("job-1"))
    w.upstream.status_answers.append(Status("g", "error", error_message="late"))
    w.poll(5)
    w.generate()
    assert w.store.redis.hgetall(w.store.keys.job("job-1")) == before
    assert not w.upstream.polls and len(w.upstream.creates) == 1


def test_missing_job_is_dropped_quietly(world: Callable[..., World]) -> None:
    w = world()
    w.generate("nope")
    w.poll(1, job_id="nope")
    assert not w.upstream.creates and not w.upstream.polls and not w.scheduler.calls


def test_backoff_grows_and_is_capped(world: Callable[..., World]) -> None:
    w = world(retry_backoff=2.0, retry_backoff_max=30.0)
    delays = [w.rt.backoff(n, None) for n in range(10)]
    assert 1.0 <= delays[0] <= 2.0
    assert all(d <= 30.0 for d in delays)
    assert delays[-1] >= 15.0
    assert w.rt.backoff(0, 99.0) == 99.0


@given(
    errors=st.integers(min_value=0, max_value=200),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=3600)),
    floor=st.floats(min_value=0, max_value=100),
    seed=st.integers(),
)
def test_backoff_bounds(errors: int, retry_after: float | None, floor: float, seed: int) -> None:
    settings = Settings(retry_backoff=2.0, retry_backoff_max=30.0)
    rt = Runtime(settings, None, None, None, time.time, random.Random(seed))  # type: ignore[arg-type]
    delay = rt.backoff(errors, retry_after, floor)
    assert delay >= (retry_after or 0.0) and delay >= floor and delay >= 1.0
    assert delay <= max(30.0, retry_after or 0.0, floor)


def test_in_batch_mode_the_last_poll_comes_a_tick_earlier_still(
    world: Callable[..., World],
) -> None:
    """A batch poll runs up to a tick after it is due: the final look allows for it."""
    w = world(poll_interval=10.0, deadline=25.0, poll_mode="batch", poll_tick=0.5)
    generating(w)
    w.upstream.status_answers.extend([Status("g", "generating")] * 2)
    w.clock.advance(10)
    w.poll(1)
    assert w.scheduler.pop().countdown == 10.0
    w.clock.advance(10)
    w.poll(2)
    assert w.scheduler.pop().countdown == pytest.approx(2.5)  # 25 - 20 - (2 + 0.5)
