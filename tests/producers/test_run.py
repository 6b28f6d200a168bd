"""``Client.run`` and what a waiting caller sees, on real Redis with no worker: the
tests move the records themselves, through the store's own state changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from producers import (
    AsyncClient,
    Client,
    JobFailed,
    JobOverdue,
    JobState,
    RequestError,
    Update,
    WaitTimeout,
    failures,
)
from tests.producers.conftest import IMG, Steps, booked_creates, end, job_keys, only_job
from worker.settings import Settings


def test_run_submits_and_returns_the_completed_job(client: Client) -> None:
    on_update = Steps(
        lambda: end(client.store, only_job(client), JobState.COMPLETED, video_url="https://v/1.mp4")
    )
    job = client.run(
        IMG,
        "She smiles",
        10,
        cfg_scale=0.3,
        idempotency_key="k-1",
        timeout=10,
        interval=0.01,
        on_update=on_update,
    )
    assert job.state is JobState.COMPLETED and job.video_url == "https://v/1.mp4"
    assert job.request == {
        "image_url": IMG,
        "prompt": "She smiles",
        "duration": 10,
        "cfg_scale": 0.3,
    }
    assert job.idempotency_key == "k-1"  # submit's options reach submit
    assert [u.state for u in on_update.seen] == [JobState.QUEUED, JobState.COMPLETED]


@pytest.mark.parametrize(
    ("state", "kind", "message", "said"),
    [
        (JobState.FAILED, "upstream_error", "content policy", "failed"),
        (JobState.TIMED_OUT, "deadline", "no video by the deadline", "timed out"),
    ],
)
def test_run_raises_job_failed_for_a_job_that_ends_without_a_video(
    client: Client, state: JobState, kind: str, message: str, said: str
) -> None:
    on_update = Steps(
        lambda: end(client.store, only_job(client), state, error_kind=kind, error_message=message)
    )
    with pytest.raises(JobFailed) as info:
        client.run(IMG, timeout=10, interval=0.01, on_update=on_update)
    failed = info.value
    assert failed.job_id == only_job(client) and failed.job.id == failed.job_id
    assert failed.job.state is state and failed.kind == kind and failed.state == state.value
    assert str(failed) == f"job {failed.job_id} {said}: {kind}: {message}"


def test_run_raises_job_failed_for_a_cancelled_job(client: Client) -> None:
    on_update = Steps(lambda: client.cancel(only_job(client)))
    with pytest.raises(JobFailed, match="was cancelled: cancelled: cancelled by the caller"):
        client.run(IMG, timeout=10, interval=0.01, on_update=on_update)


def test_run_times_out_saying_the_job_keeps_running(client: Client) -> None:
    with pytest.raises(WaitTimeout) as info:
        client.run(IMG, timeout=0.05, interval=0.01)
    job_id = only_job(client)
    assert isinstance(info.value, TimeoutError)  # `except TimeoutError` still catches it
    assert info.value.job_id == job_id and info.value.job.state is JobState.QUEUED
    assert job_id in str(info.value) and "keeps running" in str(info.value)
    assert client.get(job_id).state is JobState.QUEUED  # nothing was cancelled
    assert booked_creates(client) == [job_id]
    with pytest.raises(TimeoutError, match="keeps running"):
        client.wait(job_id, timeout=0.0)


def test_run_refuses_bad_input_before_storing_anything(client: Client) -> None:
    with pytest.raises(RequestError) as info:
        client.run(IMG, duration=7)
    assert info.value.field == "duration" and job_keys(client) == []


def test_updates_give_the_place_in_line_the_deadline_and_the_polls(
    make_settings: Callable[..., Settings],
) -> None:
    """VIDEOQ_MAX_IN_FLIGHT=1 and three queued jobs: the first takes the slot, the
    others wait 1st and 2nd in line; the record's polls and last error show through."""
    client = Client(settings=make_settings(max_in_flight=1, deadline=300.0))
    store, budget = client.store, client.store.budget
    first, second, third = (client.submit(IMG, prompt=f"job {n}") for n in range(3))
    first_job = client.get(first)
    assert budget.acquire_slot(first, first_job.created_at or 0, 1, first_job.created_at or 0)
    assert client.update_of(client.get(first)).place_in_line is None  # holds the slot
    thirds: list[int | None] = []

    def first_ends() -> None:
        thirds.append(client.update_of(client.get(third)).place_in_line)
        end(store, first, JobState.COMPLETED, video_url="https://v/1")
        second_job = client.get(second)
        assert budget.acquire_slot(second, second_job.created_at or 0, 1, 0.0)
        thirds.append(client.update_of(client.get(third)).place_in_line)

    on_update = Steps(
        first_ends,
        lambda: store.transition(
            second, [JobState.QUEUED], JobState.GENERATING, {"poll_seq": 2, "last_error": "503"}
        ),
        lambda: end(store, second, JobState.COMPLETED, video_url="https://v/2"),
    )
    assert (
        client.wait(second, timeout=10, interval=0.02, on_update=on_update).video_url
        == "https://v/2"
    )
    seen: list[Update] = on_update.seen
    assert [u.state for u in seen] == ["queued", "queued", "generating", "completed"]
    assert [u.place_in_line for u in seen] == [1, None, None, None]
    assert thirds == [2, 1]
    assert [(u.polls, u.last_error) for u in seen[1:3]] == [(0, None), (2, "503")]
    left = [u.seconds_left for u in seen]
    assert left[-1] is None  # ended: no deadline to count down to
    counting = [s for s in left[:-1] if s is not None]
    assert len(counting) == 3 and 0 < counting[-1] < counting[1] < counting[0] <= 300.0


def test_a_wait_without_a_timeout_ends_when_no_worker_ends_the_job(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker runs: the job stays queued past its deadline, and ``wait`` (no timeout)
    gives up once the job is later than any running worker lets one be."""
    monkeypatch.setattr(failures, "OVERDUE_SLACK", 0.2)
    client = Client(settings=make_settings(deadline=0.3, stall_timeout=0.2, sweep_interval=0.1))
    job_id = client.submit(IMG)
    with pytest.raises(JobOverdue) as info:
        client.wait(job_id, interval=0.05)
    assert isinstance(info.value, WaitTimeout) and info.value.job_id == job_id
    assert "no worker has ended it" in str(info.value) and info.value.job.state is JobState.QUEUED
    assert time.time() >= info.value.job.deadline_at + 0.2 + 0.1 + 0.2  # not before
    with pytest.raises(JobOverdue):
        client.run(IMG, interval=0.05)  # run waits the same way

    async def wait_async() -> None:
        async with AsyncClient(settings=client.settings) as aclient:
            await aclient.wait(job_id, interval=0.05)

    with pytest.raises(JobOverdue):
        asyncio.run(wait_async())  # and so does the asyncio client


def test_a_cancel_stands_when_waking_what_it_freed_fails(
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job is cancelled; only waking the next job in line failed (a worker's sweeper
    does that later). Both clients return the record and log it, rather than raise."""
    import redis

    import producers.client
    from worker.store.aio import AsyncJobStore

    def broken(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("gone")

    caplog.set_level(logging.WARNING, logger="videoq.client")
    client = Client(settings=make_settings(max_in_flight=1))
    monkeypatch.setattr(producers.client, "after_terminal", broken)
    assert client.cancel(client.submit(IMG)).state is JobState.CANCELLED

    async def cancel_async(job_id: str) -> JobState:
        async with AsyncClient(settings=client.settings) as aclient:
            return (await aclient.cancel(job_id)).state

    monkeypatch.setattr(AsyncJobStore, "next_in_line", broken)
    assert asyncio.run(cancel_async(client.submit(IMG))) is JobState.CANCELLED
    warned = [r.getMessage() for r in caplog.records if r.name == "videoq.client"]
    assert len(warned) == 2 and all("a worker's sweeper will do it" in m for m in warned)
