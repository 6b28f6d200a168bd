"""The chain checks what it is given before it trusts it: a video URL that is not
http(s) or points at an internal host, and a stored request whose image now points at
one (checked again before the create)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.worker.conftest import World, generating
from worker.answers import Status
from worker.states import ErrorKind, JobState


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "file:///etc/passwd", "data:video/mp4;base64,AAAA"]
)
def test_a_video_url_that_is_not_http_fails_the_job_and_is_not_stored(
    world: Callable[..., World], url: str
) -> None:
    w = world()
    generating(w)
    w.upstream.status_answers.append(Status("g", "completed", video_url=url, credits_used=5.0))
    w.poll(1)
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED and job.video_url is None
    assert job.error and job.error.kind == ErrorKind.UPSTREAM_PROTOCOL
    assert "video URL is unusable" in job.error.message
    assert job.credits_used == 5.0
    assert not w.scheduler.calls


def test_a_video_url_at_an_internal_host_fails_when_private_urls_are_not_allowed(
    world: Callable[..., World],
) -> None:
    url = "http://127.0.0.1:8000/_sim/videos/g.mp4"
    w = world(allow_private_urls=False)
    generating(w)
    w.upstream.status_answers.append(Status("g", "completed", video_url=url))
    w.poll(1)
    job = w.store.get("job-1")
    assert job and job.state is JobState.FAILED and job.video_url is None
    assert job.error and job.error.kind == ErrorKind.UPSTREAM_PROTOCOL
    assert "loopback" in job.error.message


def test_a_video_url_at_an_internal_host_is_kept_when_private_urls_are_allowed(
    world: Callable[..., World],
) -> None:
    url = "http://127.0.0.1:8000/_sim/videos/g.mp4"
    w = world(allow_private_urls=True)
    generating(w)
    w.upstream.status_answers.append(Status("g", "completed", video_url=url))
    w.poll(1)
    job = w.store.get("job-1")
    assert job and job.state is JobState.COMPLETED and job.video_url == url


def test_a_request_refused_at_create_time_fails_the_job_without_a_create(
    world: Callable[..., World],
) -> None:
    """The body is built (and its URLs checked) again before the create claim: a record
    whose image now points at an internal host ends failed/validation, uncreated."""
    w = world()
    job_id = w.job()
    w.store.redis.hset(
        w.store.keys.job(job_id),
        "request",
        json.dumps({"image_url": "http://169.254.169.254/latest/meta-data"}),
    )
    w.generate()
    job = w.store.get(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert job.error is not None and job.error.kind == ErrorKind.VALIDATION
    assert "image_url" in job.error.message
    assert w.upstream.creates == [] and w.scheduler.calls == []
