"""What a caller may send, see and page through: the request size cap, inline images
kept out of reads, idempotency keys per webhook URL and per owner, and exact pages."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from producers import Client, JobNotFound, JobState, RequestError
from tests.producers.conftest import IMG, job_keys, queued_messages
from worker.errors import RequestTooLarge
from worker.settings import Settings

DATA = "data:image/png;base64," + "iVBORw0KGgoA" * 400


def test_a_request_over_the_size_cap_is_refused(make_settings: Callable[..., Settings]) -> None:
    client = Client(settings=make_settings(max_request_bytes=4096))
    with pytest.raises(RequestError) as info:
        client.submit(DATA, static_mask=DATA)
    assert info.value.field == "request" and "VIDEOQ_MAX_REQUEST_BYTES" in str(info.value)
    assert isinstance(info.value, RequestTooLarge)
    assert queued_messages(client) == [] and job_keys(client) == []
    client.submit(IMG)  # a small one still goes


def test_inline_images_are_not_echoed_by_get(client: Client) -> None:
    job_id = client.submit(DATA, prompt="inline")
    job = client.get(job_id)
    assert job.request["prompt"] == "inline"
    assert "bytes, sha256" in job.request["image_url"] and len(job.request["image_url"]) < 100
    assert len(job.to_json()) < 2000
    assert client.store.full_request(job)["image_url"] == DATA


def test_same_idempotency_key_with_another_webhook_url_is_a_conflict(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(webhook_secret="whsec_" + "A" * 32))
    first = client.submit(IMG, idempotency_key="hook-1", webhook_url="https://a.example.com/h")
    again = client.submit(IMG, idempotency_key="hook-1", webhook_url="https://a.example.com/h")
    assert first == again
    with pytest.raises(RequestError) as info:
        client.submit(IMG, idempotency_key="hook-1", webhook_url="https://b.example.com/h")
    assert info.value.field == "idempotency_key"
    with pytest.raises(RequestError):
        client.submit(IMG, idempotency_key="hook-1")


def test_owners_see_only_their_jobs_and_have_their_own_keys(client: Client) -> None:
    alice = client.submit(IMG, prompt="a", idempotency_key="k", owner="alice")
    bob = client.submit(IMG, prompt="a", idempotency_key="k", owner="bob")
    assert alice != bob  # one key, two callers: two jobs
    assert client.submit(IMG, prompt="a", idempotency_key="k", owner="alice") == alice
    assert client.get(alice, owner="alice").owner == "alice"
    assert client.get(alice).owner == "alice"  # no owner given: every job
    with pytest.raises(JobNotFound):
        client.get(alice, owner="bob")
    with pytest.raises(JobNotFound):
        client.cancel(alice, owner="bob")
    assert client.get(alice).state is JobState.QUEUED  # untouched
    assert client.cancel(alice, owner="alice").state is JobState.CANCELLED
    jobs, _ = client.list_jobs(owner="bob", limit=50)
    assert [j.id for j in jobs] == [bob]


@pytest.mark.parametrize("limit", [1, 2, 7, 50])
def test_listing_pages_hold_at_most_limit_and_resume_exactly(client: Client, limit: int) -> None:
    ids = {client.submit(IMG, prompt=f"list {i}") for i in range(23)}
    seen: list[str] = []
    cursor: str | None = "0"
    pages = 0
    while cursor is not None:
        jobs, cursor = client.list_jobs(cursor=cursor, limit=limit)
        assert len(jobs) <= limit
        seen += [j.id for j in jobs]
        pages += 1
        assert pages < 100
    assert sorted(seen) == sorted(ids)  # none repeated, none skipped
    if limit == 1:
        assert pages >= 23
    first, _ = client.list_jobs(limit=1)
    assert len(first) == 1


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "1",
        "-1.0",
        "1.2.3",
        "1.-2",
        "",
        " 0",
        "1e3.0",
        "99999999999999999999.0",
        "18446744073709551616.0",
    ],
)
def test_a_garbage_cursor_is_refused(client: Client, cursor: str) -> None:
    with pytest.raises(RequestError) as info:
        client.list_jobs(cursor=cursor)
    assert info.value.field == "cursor"
