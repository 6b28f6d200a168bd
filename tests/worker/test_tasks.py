"""The task bindings' one shared behaviour (``worker.tasks.VideoqTask``): a step that
Redis cannot serve hands its message back (or drops it when Redis refuses writes),
never fails the job, and says which job and attempt it was about. Run through Celery's
own tracer (``Task.apply``), with the step functions replaced."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis

import worker.tasks as tasks
from worker.app import app


@pytest.fixture
def no_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """The steps are replaced, so the process's runtime is never built."""
    monkeypatch.setattr(app, "runtime", lambda: object())


def _fails_with(exc: Exception) -> Any:
    def step(*_: object, **__: object) -> None:
        raise exc

    return step


def _events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, dict[str, object]]]:
    return [
        (r.videoq_event, r.videoq_fields)  # type: ignore[attr-defined]
        for r in caplog.records
        if hasattr(r, "videoq_event")
    ]


@pytest.mark.usefixtures("no_runtime")
def test_an_unreachable_redis_requeues_the_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "run_poll", _fails_with(redis.ConnectionError("refused")))
    with caplog.at_level(logging.WARNING):
        result = tasks.poll_video.apply(kwargs={"job_id": "j1", "deadline_at": 1.0, "seq": 3})
    assert result.state == "REJECTED"
    assert result.result.requeue is True
    [(name, fields)] = _events(caplog)
    assert name == "task.requeued"
    assert (fields["job_id"], fields["step"], fields["attempt"]) == ("j1", "poll", 3)


@pytest.mark.usefixtures("no_runtime")
def test_a_redis_that_refuses_writes_drops_the_message_for_the_sweeper(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    oom = redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")
    monkeypatch.setattr(tasks, "run_webhook", _fails_with(oom))
    with caplog.at_level(logging.WARNING):
        result = tasks.deliver_webhook.apply(kwargs={"job_id": "j2"})
    assert result.state == "REJECTED"
    assert result.result.requeue is False
    [(name, fields)] = _events(caplog)
    assert name == "task.deferred"
    assert (fields["job_id"], fields["step"], fields["attempt"]) == ("j2", "webhook", 1)


@pytest.mark.usefixtures("no_runtime")
def test_a_foreign_create_is_named_by_its_task_id(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "accept_foreign", _fails_with(redis.TimeoutError("slow")))
    with caplog.at_level(logging.WARNING):
        result = tasks.generate_video.apply(
            kwargs={"request": {"image_url": "https://example.com/a.jpg"}}, task_id="t-1"
        )
    assert result.state == "REJECTED"
    [(name, fields)] = _events(caplog)
    assert (name, fields["job_id"], fields["attempt"]) == ("task.requeued", "t-1", 1)


@pytest.mark.usefixtures("no_runtime")
def test_any_other_error_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "run_poll", _fails_with(redis.ResponseError("WRONGTYPE")))
    result = tasks.poll_video.apply(kwargs={"job_id": "j3", "deadline_at": 1.0, "seq": 1})
    assert result.state == "FAILURE"
    assert isinstance(result.result, redis.ResponseError)
