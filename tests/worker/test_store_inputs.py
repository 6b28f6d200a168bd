"""The job store's scripts check their inputs before their first write: a bad value
fails the whole script and leaves nothing half-written (on real Redis)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from worker.request import parse_request
from worker.settings import Settings
from worker.states import JobState
from worker.store import JobStore, Outcome, connect

IMG = "https://example.com/a.png"


@pytest.fixture
def store(make_settings: Callable[..., Settings]) -> JobStore:
    settings = make_settings(retention=100)
    return JobStore(connect(settings), settings)


def new(store: JobStore, job_id: str = "j1") -> tuple[str, bool]:
    return store.create(
        job_id,
        parse_request({"image_url": IMG, "prompt": "p"}),
        accepted_at=1000.0,
        deadline_at=2000.0,
    )


def snapshot(store: JobStore, job_id: str = "j1") -> tuple[object, ...]:
    r = store.redis
    return (
        r.hgetall(store.keys.job(job_id)),
        r.hgetall(store.keys.stats()),
        r.zrange(store.keys.active(), 0, -1, withscores=True),
        r.zrange(store.keys.webhooks(), 0, -1, withscores=True),
        r.ttl(store.keys.job(job_id)),
    )


@pytest.mark.parametrize(
    ("target", "fields"),
    [
        (JobState.COMPLETED, {"video_url": "u", "credits_used": float("nan")}),
        (JobState.COMPLETED, {"video_url": "u", "credits_used": float("inf")}),
        (JobState.GENERATING, {"next_poll_at": float("-inf"), "poll_seq": 1}),
        (JobState.GENERATING, {"poll_seq": "many"}),
    ],
)
def test_a_non_finite_number_fails_the_transition_and_writes_nothing(
    store: JobStore,
    target: JobState,
    fields: dict[str, object],
) -> None:
    new(store)
    store.transition(
        "j1", [JobState.QUEUED], JobState.GENERATING, {"generation_id": "g"}, now=1100.0
    )
    before = snapshot(store)
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.transition("j1", [JobState.GENERATING], target, fields, now=1200.0)
    assert snapshot(store) == before


def test_a_non_finite_due_time_or_clock_fails_the_transition(store: JobStore) -> None:
    new(store)
    before = snapshot(store)
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.transition("j1", [JobState.QUEUED], JobState.SUBMITTING, due_at=float("nan"))
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.transition("j1", [JobState.QUEUED], JobState.FAILED, now=float("inf"))
    assert snapshot(store) == before


@pytest.mark.parametrize("stored", ["nan", "inf", "-inf", "-5", "lots"])
def test_stored_credits_that_are_not_finite_and_non_negative_are_left_out_of_the_sum(
    store: JobStore,
    stored: str,
) -> None:
    new(store, "ok")
    store.transition("ok", [JobState.QUEUED], JobState.COMPLETED, {"credits_used": 7.5}, now=1100.0)
    new(store)
    store.transition("j1", [JobState.QUEUED], JobState.GENERATING, now=1100.0)
    store.redis.hset(store.keys.job("j1"), "credits_used", stored)  # an older writer's value
    assert (
        store.transition(
            "j1", [JobState.GENERATING], JobState.COMPLETED, {"video_url": "u"}, now=1200.0
        )
        is Outcome.APPLIED
    )
    stats = store.stats()
    assert stats["state:completed"] == 2
    assert stats["credits_used"] == 7.5
    assert stats["latency_count"] == 2


@pytest.mark.parametrize(
    ("times", "error"),
    [
        ({"due_at": float("nan")}, redis.ResponseError),  # refused by the script
        ({"due_at": float("inf")}, redis.ResponseError),
        ({"accepted_at": float("nan")}, redis.ResponseError),
        ({"deadline_at": float("inf")}, OverflowError),  # no TTL can be computed
    ],
)
def test_create_with_a_non_finite_time_raises_and_writes_nothing(
    store: JobStore,
    times: dict[str, float],
    error: type[Exception],
) -> None:
    args: dict[str, float] = {"accepted_at": 1000.0, "deadline_at": 2000.0}
    args.update(times)
    with pytest.raises(error):
        store.create("j1", parse_request({"image_url": IMG}), idempotency_key="k1", **args)  # type: ignore[arg-type]
    assert store.get("j1") is None
    assert store.redis.keys(store.keys.job("*")) == []
    assert store.redis.get(store.keys.idempotency("k1")) is None
    assert store.stats() == {}
    assert store.active_count() == 0


def test_create_with_a_nan_deadline_raises_and_writes_nothing(store: JobStore) -> None:
    with pytest.raises(redis.ResponseError):
        store.create(
            "j1", parse_request({"image_url": IMG}), accepted_at=1000.0, deadline_at=float("nan")
        )
    assert store.get("j1") is None


def test_webhook_scripts_refuse_a_non_finite_time_before_writing(store: JobStore) -> None:
    store.create(
        "j1",
        parse_request({"image_url": IMG}),
        accepted_at=1000.0,
        deadline_at=2000.0,
        webhook_url="https://hooks.example.com/h",
    )
    store.transition("j1", [JobState.QUEUED], JobState.FAILED, now=1100.0)
    before = snapshot(store)
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.webhook_attempt("j1", {"attempt": 1}, "pending", float("nan"))
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        store.claim_webhook("j1", 1100.0, float("inf"))
    assert snapshot(store) == before
    assert store.claim_webhook("j1", 1100.0, 1110.0)
    assert not store.claim_webhook("j1", 1105.0, 1115.0)  # the lease is held
    assert store.claim_webhook("j1", 1110.5, 1120.0)  # and runs out
