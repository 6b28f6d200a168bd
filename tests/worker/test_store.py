"""The job store's atomic writes, on real Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

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


def test_scan_ids_sees_only_this_prefix(store: JobStore) -> None:
    new(store, "a")
    new(store, "b")
    store.redis.set("other:" + store.keys.job("c"), "1")
    seen: list[str] = []
    cursor = 0
    while True:
        cursor, ids = store.scan_ids(cursor, 2)
        seen += ids
        if cursor == 0:
            break
    assert sorted(set(seen)) == ["a", "b"]


# --- inline images, owners, webhook fingerprints -----------------------------------------

DATA = "data:image/png;base64," + "iVBORw0KGgoA" * 400
MASK = "data:image/png;base64," + "QUJD" * 300


def test_inline_images_stay_out_of_the_record_but_reach_the_upstream(store: JobStore) -> None:
    from worker.chain.create import upstream_body

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
    assert upstream_body(store, job)["image_url"] == DATA
    assert upstream_body(store, job)["dynamic_masks"][0]["mask"] == MASK  # type: ignore[index]


@pytest.mark.parametrize(
    "path", [["submitting", "generating"], ["cancelled"], ["submitting", "failed"]]
)
def test_the_full_request_is_dropped_once_the_job_is_past_its_create(
    store: JobStore, path: list[str]
) -> None:
    """Inline images cost memory only while the create may still need them."""
    store.create("img", parse_request({"image_url": DATA}), accepted_at=1000.0, deadline_at=2000.0)
    payload = store.keys.payload("img")
    before = JobState.QUEUED
    for name in path:
        state = JobState(name)
        assert store.transition("img", [before], state) is Outcome.APPLIED
        still_needed = state in (JobState.QUEUED, JobState.SUBMITTING)
        assert bool(store.redis.exists(payload)) is still_needed, state
        before = state


def test_records_without_a_payload_key_keep_working(store: JobStore) -> None:
    from worker.chain.create import upstream_body

    new(store, "plain")
    assert not store.redis.exists(store.keys.payload("plain"))  # URLs only: nothing extra
    job = store.get("plain")
    assert job is not None and store.full_request(job) == job.request
    assert upstream_body(store, job)["image_url"] == IMG


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


# --- the writes that are not state changes are scripts too --------------------------------


def test_create_failed_is_counted_once_and_expires(store: JobStore) -> None:
    store.create_failed("f1", {"image_url": "nope"}, ErrorKind.VALIDATION, "image_url: bad")
    store.create_failed("f1", {"image_url": "other"}, ErrorKind.VALIDATION, "second")
    stats = store.stats()
    assert stats["state:failed"] == 1
    assert stats["error_kind:validation"] == 1
    assert 0 < store.redis.ttl(store.keys.job("f1")) <= 100


def test_keep_generation_id_notes_it_only_on_a_cancelled_record(store: JobStore) -> None:
    assert store.keep_generation_id("gone", "g0") is False
    assert not store.redis.exists(store.keys.job("gone"))  # no stub record is left
    new(store)
    assert store.keep_generation_id("j1", "g1") is False
    assert store.redis.hget(store.keys.job("j1"), "generation_id") is None
    store.transition("j1", [JobState.QUEUED], JobState.CANCELLED, now=1100.0)
    assert store.keep_generation_id("j1", "g2") is True
    job = store.get("j1")
    assert job is not None and job.state is JobState.CANCELLED
    assert job.generation_id == "g2"
