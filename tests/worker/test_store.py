"""The job store's atomic writes, on real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.worker.conftest import CreateTimes
from worker.errors import IdempotencyConflict
from worker.request import parse_request
from worker.settings import Settings
from worker.states import TERMINAL_STATES, ErrorKind, JobState
from worker.store import Fence, JobStore, Outcome, connect

IMG = "https://example.com/a.png"


@pytest.fixture
def store(make_settings: Callable[..., Settings]) -> JobStore:
    settings = make_settings(retention=100)
    return JobStore(connect(settings), settings)


def new(
    store: JobStore, job_id: str = "j1", key: str | None = None, prompt: str = "p"
) -> tuple[str, bool]:
    return store.create(
        job_id,
        parse_request({"image_url": IMG, "prompt": prompt}),
        accepted_at=1000.0,
        deadline_at=2000.0,
        idempotency_key=key,
    )


def test_create_then_get(store: JobStore) -> None:
    assert new(store) == ("j1", True)
    job = store.get("j1")
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.request == {"image_url": IMG, "prompt": "p", "duration": 5}
    assert (job.created_at, job.deadline_at, job.attempts) == (1000.0, 2000.0, 0)
    # kept until the deadline plus the retention, so a queued job never vanishes early
    assert 1000 < store.redis.ttl(store.keys.job("j1")) <= 1101


def test_an_in_flight_record_stays_in_the_compact_hash_encoding(store: JobStore) -> None:
    """The request (often longer than Redis's 64-byte listpack limit for a value) has
    a key of its own, so an in-flight record stays a listpack: about a third of the
    memory of a hash table (1.7 KB measured here with the request inside)."""
    prompt = "a long prompt that would push the request past sixty-four bytes " * 3
    new(store, "j1", prompt=prompt)
    store.transition(
        "j1",
        [JobState.QUEUED],
        JobState.GENERATING,
        {
            "generation_id": "9f1c2e7a4b5d4c3e8f0a1b2c3d4e5f60",
            "claim_token": "f" * 32,
            "submitted_at": 1001.5,
            "next_poll_at": 1011.5,
            "last_error": "",
            "poll_seq": 3,
        },
        now=1001.5,
    )
    key = store.keys.job("j1")
    assert store.redis.object("encoding", key) == "listpack"
    assert (store.redis.memory_usage(key) or 0) < 800
    job = store.get("j1")
    assert job is not None and job.request["prompt"] == prompt
    [same] = store.get_many(["j1"])
    assert same == job
    assert 1000 < store.redis.ttl(store.keys.request("j1")) <= 1101


def test_create_never_overwrites_an_existing_job(store: JobStore) -> None:
    new(store)
    store.transition("j1", [JobState.QUEUED], JobState.SUBMITTING)
    assert new(store, prompt="other") == ("j1", False)
    job = store.get("j1")
    assert job and job.state is JobState.SUBMITTING and job.request["prompt"] == "p"


def test_idempotency_key_returns_the_first_job(store: JobStore) -> None:
    assert new(store, "a", key="order-7") == ("a", True)
    assert new(store, "b", key="order-7") == ("a", False)
    assert store.get("b") is None
    with pytest.raises(IdempotencyConflict, match="idempotency_key"):
        new(store, "c", key="order-7", prompt="different")


def test_idempotency_key_of_an_expired_job_is_free_again(store: JobStore) -> None:
    new(store, "a", key="k")
    store.redis.delete(store.keys.job("a"))
    assert new(store, "b", key="k") == ("b", True)


def test_transition_is_a_compare_and_set(store: JobStore) -> None:
    new(store)
    assert store.transition("j1", [JobState.GENERATING], JobState.COMPLETED) is Outcome.REFUSED
    assert store.transition("missing", [JobState.QUEUED], JobState.SUBMITTING) is Outcome.MISSING
    assert (
        store.transition(
            "j1",
            [JobState.QUEUED],
            JobState.SUBMITTING,
            {"claim_token": "t1"},
            increment="attempts",
        )
        is Outcome.APPLIED
    )
    assert (
        store.transition(
            "j1", [JobState.SUBMITTING], JobState.GENERATING, fence=Fence("claim_token", "t2")
        )
        is Outcome.REFUSED
    )
    assert (
        store.transition(
            "j1",
            [JobState.SUBMITTING],
            JobState.GENERATING,
            {"generation_id": "g"},
            fence=Fence("claim_token", "t1"),
            now=1500.0,
        )
        is Outcome.APPLIED
    )
    job = store.get("j1")
    assert job and job.attempts == 1 and job.generation_id == "g" and job.updated_at == 1500.0


def test_lt_fence_orders_polls(store: JobStore) -> None:
    new(store)
    store.transition("j1", [JobState.QUEUED], JobState.GENERATING)
    move: Callable[[int], Outcome] = lambda n: store.transition(  # noqa: E731
        "j1",
        [JobState.GENERATING],
        JobState.GENERATING,
        {"poll_seq": n},
        fence=Fence("poll_seq", str(n), op="lt"),
    )
    assert move(1) is Outcome.APPLIED
    assert move(1) is Outcome.REFUSED
    assert move(3) is Outcome.APPLIED
    assert move(2) is Outcome.REFUSED
    assert move(10) is Outcome.APPLIED  # numeric, not string, comparison


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATES))
def test_terminal_sets_finished_at_and_retention(store: JobStore, terminal: JobState) -> None:
    new(store)
    assert (
        store.transition(
            "j1", [JobState.QUEUED], terminal, {"error_kind": ErrorKind.DEADLINE}, now=1234.5
        )
        is Outcome.APPLIED
    )
    job = store.get("j1")
    assert job and job.finished_at == 1234.5 and job.is_terminal
    assert 90 < store.redis.ttl(store.keys.job("j1")) <= 100
    for state in JobState:  # even a caller that "allows" every state cannot leave it
        assert store.transition("j1", list(JobState), state) is Outcome.REFUSED


def test_no_transition_leaves_a_terminal_state(store: JobStore) -> None:
    new(store)
    store.transition("j1", [JobState.QUEUED], JobState.COMPLETED, {"video_url": "u"})
    before = store.redis.hgetall(store.keys.job("j1"))
    for target in JobState:
        store.transition(
            "j1",
            [JobState.QUEUED, JobState.SUBMITTING, JobState.GENERATING],
            target,
            {"video_url": "other"},
        )
    assert store.redis.hgetall(store.keys.job("j1")) == before


def test_create_failed_records_a_refused_foreign_job_once(store: JobStore) -> None:
    store.create_failed("f1", {"image_url": "nope"}, ErrorKind.VALIDATION, "image_url: bad")
    store.create_failed("f1", {"image_url": "other"}, ErrorKind.VALIDATION, "second")
    job = store.get("f1")
    assert job and job.state is JobState.FAILED
    assert job.error and job.error.message == "image_url: bad"


def test_iter_ids_sees_only_this_prefix(store: JobStore) -> None:
    new(store, "a")
    new(store, "b")
    assert sorted(store.iter_ids()) == ["a", "b"]


# --- scripts check their inputs before their first write --------------------------------


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


# --- inline images, owners, webhook fingerprints -----------------------------------------

DATA = "data:image/png;base64," + "iVBORw0KGgoA" * 400
MASK = "data:image/png;base64," + "QUJD" * 300


def test_inline_images_stay_out_of_the_record_but_reach_the_upstream(store: JobStore) -> None:
    from worker.chain import _upstream_body

    request = parse_request(
        {
            "image_url": DATA,
            "static_mask": MASK,
            "prompt": "p",
            "dynamic_masks": [{"mask": MASK, "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}],
        }
    )
    assert store.create("img", request, accepted_at=1000.0, deadline_at=2000.0) == ("img", True)
    job = store.get("img")
    assert job is not None
    shown = job.request
    assert shown["prompt"] == "p"
    for value in (shown["image_url"], shown["static_mask"], shown["dynamic_masks"][0]["mask"]):
        assert value.startswith("data:image/png;base64,") and "bytes, sha256 " in value
        assert len(value) < 100
    assert f"({len(DATA)} bytes" in shown["image_url"]
    assert len(store.redis.hget(store.keys.job("img"), "request") or "") < 400
    # the full request is kept under its own key, for as long as the record
    assert store.full_request(job) == request.stored()
    payload_ttl = store.redis.ttl(store.keys.payload("img"))
    assert abs(payload_ttl - store.redis.ttl(store.keys.job("img"))) <= 1
    assert _upstream_body(store, job)["image_url"] == DATA
    assert _upstream_body(store, job)["dynamic_masks"][0]["mask"] == MASK  # type: ignore[index]


def test_records_without_a_payload_key_keep_working(store: JobStore) -> None:
    from worker.chain import _upstream_body

    new(store, "plain")
    assert not store.redis.exists(store.keys.payload("plain"))  # URLs only: nothing extra
    job = store.get("plain")
    assert job is not None and store.full_request(job) == job.request
    assert _upstream_body(store, job)["image_url"] == IMG


def test_the_fingerprint_covers_inline_images_and_the_webhook(store: JobStore) -> None:
    other = DATA.replace("iVBOR", "jVBOR", 1)
    first = parse_request({"image_url": DATA})
    assert store.create(
        "f1", first, accepted_at=1000.0, deadline_at=2000.0, idempotency_key="k1"
    ) == ("f1", True)
    with pytest.raises(IdempotencyConflict):  # same placeholder size, different image
        store.create(
            "f2",
            parse_request({"image_url": other}),
            accepted_at=1000.0,
            deadline_at=2000.0,
            idempotency_key="k1",
        )
    hook: CreateTimes = {"accepted_at": 1000.0, "deadline_at": 2000.0, "idempotency_key": "k2"}
    assert store.create("h1", first, webhook_url="https://a.example/h", **hook) == ("h1", True)
    assert store.create("h2", first, webhook_url="https://a.example/h", **hook) == ("h1", False)
    with pytest.raises(IdempotencyConflict):
        store.create("h3", first, webhook_url="https://b.example/h", **hook)
    with pytest.raises(IdempotencyConflict):
        store.create("h4", first, **hook)


def test_owner_is_stored_and_scopes_idempotency_keys(store: JobStore) -> None:
    request = parse_request({"image_url": IMG})
    times: CreateTimes = {"accepted_at": 1000.0, "deadline_at": 2000.0, "idempotency_key": "same"}
    assert store.create("o1", request, owner="alice", **times) == ("o1", True)
    assert store.create("o2", request, owner="bob", **times) == ("o2", True)
    assert store.create("o3", request, **times) == ("o3", True)  # unnamed: its own space
    assert store.create("o4", request, owner="alice", **times) == ("o1", False)
    job, unowned = store.get("o1"), store.get("o3")
    assert job is not None and job.owner == "alice"
    assert unowned is not None and unowned.owner is None
