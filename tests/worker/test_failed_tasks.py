"""A job that ends without its video shows as a failure in Flower. In chain mode the
task whose step ended the job raises ``JobEnded`` (an expected failure: no traceback,
the record as the step wrote it); a batch tick never fails for one job, and sends a
failed row of task events for each job it ended. Run through Celery's own tracer
(``Task.apply``) on the fake clock and upstream, with the real job store."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import worker.tasks as tasks
from tests.worker.conftest import World, generating
from tests.worker.test_ticks import batch_world, start
from worker.answers import Status
from worker.app import app
from worker.chain import Ended, run_poll
from worker.errors import JobEnded, Rejected
from worker.job import Job
from worker.keys import JOB_ROW
from worker.states import JobState

ERROR = Status("gen-1", "error", error_name="GenerationError", error_message="nsfw")


@pytest.fixture
def chain(world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> World:
    """A chain-mode world whose runtime the tasks run with."""
    w = world()
    monkeypatch.setattr(app, "runtime", lambda: w.rt)
    return w


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "the failure was not logged at all"
    for record in caplog.records:
        assert record.exc_info is None and not record.exc_text, record.getMessage()
        assert "Traceback" not in record.getMessage()
        assert record.levelno < logging.ERROR, record.getMessage()


def test_a_poll_that_fails_its_job_fails_its_task_and_leaves_the_record_as_written(
    chain: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    generating(chain)
    chain.upstream.status_answers.append(ERROR)
    written: list[Job | None] = []

    def run_and_read(*args: Any) -> Ended | None:
        ended = run_poll(*args)
        written.append(chain.store.get("job-1"))  # the record as the step left it
        return ended

    monkeypatch.setattr(tasks, "run_poll", run_and_read)
    with caplog.at_level(logging.DEBUG):
        result = tasks.poll_video.apply(
            kwargs={"job_id": "job-1", "deadline_at": chain.deadline_at, "seq": 1}
        )
    assert result.state == "FAILURE"
    assert isinstance(result.result, JobEnded)
    assert str(result.result) == ("upstream_error: GenerationError: nsfw (job job-1, failed)")
    # Flower shows the repr; the exception crosses the prefork pool pickled.
    assert repr(result.result) == str(result.result)
    assert str(pickle.loads(pickle.dumps(result.result))) == str(result.result)
    assert written == [chain.store.get("job-1")]  # raising wrote nothing
    assert chain.state() is JobState.FAILED
    _no_traceback(caplog)
    assert "raised expected" in caplog.text
    assert chain.scheduler.calls == []  # nothing scheduled: no retry, no next poll


def test_a_rejected_create_and_a_missed_deadline_fail_their_tasks(chain: World) -> None:
    chain.job("a")
    chain.upstream.create_answers.append(Rejected(422, "bad image"))
    result = tasks.generate_video.apply(
        kwargs={"job_id": "a", "deadline_at": chain.deadline_at, "attempt": 1}
    )
    assert result.state == "FAILURE"
    assert str(result.result).startswith("upstream_rejected: HTTP 422: bad image (job a,")
    chain.job("b")
    chain.clock.advance(chain.rt.settings.deadline + 1)
    result = tasks.generate_video.apply(
        kwargs={"job_id": "b", "deadline_at": chain.deadline_at, "attempt": 1}
    )
    assert result.state == "FAILURE"
    assert str(result.result).startswith("deadline: the deadline passed")
    assert str(result.result).endswith("(job b, timed_out)")


def test_steps_that_do_not_fail_the_job_succeed(chain: World) -> None:
    generating(chain)
    chain.upstream.status_answers.append(Status("gen-1", "generating"))
    poll = {"job_id": "job-1", "deadline_at": chain.deadline_at}
    assert tasks.poll_video.apply(kwargs={**poll, "seq": 1}).state == "SUCCESS"
    chain.scheduler.pop()
    chain.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    assert tasks.poll_video.apply(kwargs={**poll, "seq": 2}).state == "SUCCESS"
    assert chain.state() is JobState.COMPLETED
    # A duplicate of the poll that failed a job finds it ended: it drops, and succeeds.
    assert tasks.poll_video.apply(kwargs={**poll, "seq": 2}).state == "SUCCESS"


class Dispatcher:
    """Stands in for ``app.events.default_dispatcher``: records the events sent."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.sent: list[tuple[str, dict[str, Any]]] = []

    @contextmanager
    def __call__(self, hostname: str | None = None) -> Iterator[Dispatcher]:
        if self.fail:
            raise ConnectionError("events exchange unreachable")
        yield self

    def send(self, type_: str, **fields: Any) -> None:
        self.sent.append((type_, fields))


@pytest.fixture
def batch(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, Dispatcher]]:
    w, _ = batch_world(world, poll_interval=1.0)
    events = Dispatcher()
    monkeypatch.setattr(app, "runtime", lambda: w.rt)
    monkeypatch.setattr(app.events, "default_dispatcher", events)
    yield w, events


def test_a_tick_sends_a_failed_row_for_each_job_it_failed_and_succeeds(
    batch: tuple[World, Dispatcher],
) -> None:
    w, events = batch
    start(w, "a", "b", "c")
    w.clock.advance(1.0)
    w.upstream.status_answers.extend([ERROR, Status("g", "generating"), ERROR])
    result = tasks.poll_tick.apply(kwargs={"tick": w.clock()})
    assert result.state == "SUCCESS"
    assert eval(result.result, {})["ended"] == 2
    sent = [(kind, f["uuid"]) for kind, f in events.sent if f.get("uuid") in ("a", "b", "c")]
    assert sent == [
        ("task-received", "a"),
        ("task-started", "a"),
        ("task-failed", "a"),
        ("task-received", "c"),
        ("task-started", "c"),
        ("task-failed", "c"),
    ]
    received = next(f for kind, f in events.sent if kind == "task-received")
    assert received["name"] == JOB_ROW
    assert received["kwargs"] == "job a, poll 1"
    failed = next(f for kind, f in events.sent if kind == "task-failed")
    assert "upstream_error: GenerationError: nsfw (job a, failed)" in failed["exception"]
    assert w.store.get("a") is not None and w.state("a") is JobState.FAILED


def test_a_create_tick_sends_a_failed_row_for_a_rejected_create(
    batch: tuple[World, Dispatcher],
) -> None:
    w, events = batch
    w.job("a")
    w.store.book_creates({"a": w.clock()})
    w.upstream.create_answers.append(Rejected(401, "bad key"))
    assert tasks.create_tick.apply(kwargs={"tick": w.clock()}).state == "SUCCESS"
    [(_, received), _, (_, failed)] = [e for e in events.sent if e[1].get("uuid") == "a"]
    assert received["kwargs"] == "job a, create 1"
    assert "upstream_rejected: HTTP 401: bad key" in failed["exception"]


def test_a_tick_whose_events_cannot_be_sent_still_succeeds(
    batch: tuple[World, Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    w, events = batch
    events.fail = True
    start(w, "a")
    w.clock.advance(1.0)
    w.upstream.status_answers.append(ERROR)
    with caplog.at_level(logging.WARNING):
        result = tasks.poll_tick.apply(kwargs={"tick": w.clock()})
    assert result.state == "SUCCESS"
    assert w.state("a") is JobState.FAILED
    assert "tick.events_failed" in caplog.text


def test_a_refused_foreign_create_fails_its_task(chain: World) -> None:
    result = tasks.generate_video.apply(kwargs={"request": {"image_url": "nope"}}, task_id="f-1")
    assert result.state == "FAILURE"
    assert str(result.result).startswith("validation: image_url: ")
    assert str(result.result).endswith("(job f-1, failed)")
    assert chain.state("f-1") is JobState.FAILED
