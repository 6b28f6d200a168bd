"""The Celery tasks: thin bindings of the steps to messages.

Messages carry only ``job_id``, ``deadline_at`` and a sequence number: the request
lives in the job record, so no image payload and no secret ever travels in a message.
Every task shares :class:`VideoqTask`, which hands the message back when Redis cannot
serve the step.

Flower lists a job that ended without its video as a failure. In chain mode the task
whose step ended the job raises :class:`JobEnded` once the record is written and the
job's follow-ups are done (an expected failure: no traceback, no retry, acknowledged).
A batch tick serves many jobs and never fails for one: it sends task events (received,
started, failed) for each job it ended failed or timed out, under the job's id and
the name ``videoq.job`` (no such task exists; the events are the row).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from functools import partial
from typing import Any

from celery import Task
from celery.exceptions import Reject
from redis.exceptions import RedisError

from . import logs
from .app import app
from .chain import Ended, PollStep, accept_foreign, run_generate, run_poll
from .errors import JobEnded
from .intake import run_create_tick
from .keys import (
    CREATE_TICK_TASK,
    GENERATE_TASK,
    JOB_ROW,
    POLL_TASK,
    TICK_TASK,
    WEBHOOK_TASK,
    task_label,
)
from .runtime import Runtime
from .store import redis_unavailable, refuses_writes
from .ticks import TickReport, run_tick
from .webhooks import run_webhook


class VideoqTask(Task):  # type: ignore[misc]
    """A videoq step: acknowledged after it ran (every step is idempotent), never
    retried by Celery (a step reschedules itself), and requeued, not failed, when
    Redis could not serve it."""

    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    max_retries = 0
    # A step that ended its job failed or timed out: an expected failure (Celery logs
    # one line, no traceback), never retried, and acknowledged (task_acks_on_failure).
    throws = (JobEnded,)
    step = "-"  # names the step in logs
    first_attempt = 0  # the attempt of a message that names none

    @property
    def runtime(self) -> Runtime:
        """This process's runtime (see ``worker.process``)."""
        rt: Runtime = self.app.runtime()
        return rt

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except RedisError as exc:
            job_id, attempt = self.names(kwargs)
            _requeue_on_redis_outage(job_id, self.step, attempt, exc)
            return None

    def names(self, kwargs: dict[str, Any]) -> tuple[str, int]:
        """The job id and attempt a message is about, for the log (``-`` and 0: a tick,
        which is about no one job)."""
        attempt = kwargs.get("seq", kwargs.get("attempt", self.first_attempt))
        return str(kwargs.get("job_id") or "-"), attempt if isinstance(attempt, int) else 0


class DeliverTask(VideoqTask):
    """A webhook delivery: a message without an attempt is the first."""

    first_attempt = 1


class GenerateTask(VideoqTask):
    """A create: a message from an app without videoq has no job id; its task id
    becomes the job's id."""

    first_attempt = 1

    def names(self, kwargs: dict[str, Any]) -> tuple[str, int]:
        job_id, attempt = super().names(kwargs)
        return (self.request.id or job_id) if job_id == "-" else job_id, attempt


def _requeue_on_redis_outage(job_id: str, step: str, attempt: int, exc: RedisError) -> None:
    """Redis could not serve the step: hand the message back, never fail the job.

    Unreachable: the message goes back to the queue (or, if Redis cannot even take it
    back, stays unacknowledged until the visibility timeout restores it). Refusing
    writes (OOM, READONLY, MISCONF): it could not take the message back either, so the
    message is dropped; the job's record, unchanged, is still due in the active set,
    and the sweeper resumes the job once Redis takes writes again.
    """
    if not redis_unavailable(exc):
        raise exc
    refused = refuses_writes(exc)
    logs.event(
        "task.requeued" if not refused else "task.deferred",
        level=logging.WARNING,
        job_id=job_id,
        step=step,
        attempt=attempt,
        reason=f"redis {'refuses writes' if refused else 'unavailable'}: "
        f"{type(exc).__name__}: {str(exc)[:200]}",
    )
    raise Reject(f"redis unavailable: {type(exc).__name__}", requeue=not refused) from None


def _task(name: str, step: str, base: type[VideoqTask] = VideoqTask) -> Any:
    """Binds a step function to a task named ``name`` (the names are a contract)."""
    return app.task(name=name, base=base, bind=True, step=step)


def _send_tick(task: Any, step: str, tick: float) -> None:
    """Another tick for the same slot, now (the rest of a burst)."""
    task.apply_async(
        kwargs={"tick": tick},
        queue=app.videoq_settings.tick_queue,
        kwargsrepr=repr({"step": step, "slot": round(tick, 3), "more": True}),
    )


def _show(task: Any, report: TickReport) -> str:
    """What a tick did, for Flower's arguments column: Flower merges the fields of a
    task's events into its row, so a custom event replaces the arguments shown at
    sending (the slot) with what the tick did. Then a failed row for each job the tick
    ended failed or timed out (:func:`_show_failures`)."""
    label = report.label()
    with contextlib.suppress(Exception):  # monitoring only: never fail the tick for it
        task.send_event("task-progress", kwargs=label)
    _show_failures(task, report)
    return label


def _show_failures(task: Any, report: TickReport) -> None:
    """Batch mode: a Flower row in state FAILURE for each job the tick ended failed or
    timed out, sent as task events under the job's id: ``task-received`` with the
    name and arguments, ``task-started``, then ``task-failed`` with the reason, read
    as a chain-mode task's :class:`JobEnded` reads. Monitoring only: a failure to
    send is logged, never raised, and nothing is retried."""
    if not report.failures:
        return
    step = "poll" if report.step == "tick" else "create"
    try:
        with task.app.events.default_dispatcher(hostname=task.request.hostname) as events:
            for ended in report.failures:
                events.send(
                    "task-received",
                    uuid=ended.job_id,
                    name=JOB_ROW,
                    args="()",
                    kwargs=task_label(ended.job_id, step, ended.attempt),
                    retries=0,
                    root_id=ended.job_id,
                    parent_id=task.request.id,
                    retry=False,
                )
                # Started, so that Flower's gauge of prefetched tasks is not left raised.
                events.send("task-started", uuid=ended.job_id, retry=False)
                failure = JobEnded(ended.job_id, ended.state.value, ended.reason)
                events.send(
                    "task-failed",
                    uuid=ended.job_id,
                    exception=repr(failure),
                    traceback="",
                    retry=False,
                )
    except Exception as exc:  # monitoring must never fail a tick
        logs.event(
            "tick.events_failed",
            level=logging.WARNING,
            step=report.step,
            jobs=len(report.failures),
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )


def _raise_if_failed(ended: Ended | None) -> None:
    """Chain mode: the step ended its job failed or timed out (its record written, its
    follow-ups done): fail the task, so that Flower lists it under Failed."""
    if ended is not None and ended.failed:
        raise JobEnded(ended.job_id, ended.state.value, ended.reason)


@_task(GENERATE_TASK, "generate", GenerateTask)  # type: ignore[untyped-decorator]
def generate_video(
    self: VideoqTask,
    job_id: str | None = None,
    deadline_at: float | None = None,
    attempt: int = 1,
    request: dict[str, Any] | None = None,
    **params: Any,
) -> None:
    """Create the upstream generation for a job, then schedule its first poll.

    videoq's producers store the job first and send ``job_id`` + ``deadline_at``.
    Apps without videoq installed may instead send the generation parameters
    (``request={...}`` or as keyword arguments); the task id becomes the job id.
    """
    rt = self.runtime
    if job_id is None:
        accepted = accept_foreign(rt, self.request.id or uuid.uuid4().hex, request, params)
        if isinstance(accepted, Ended):
            return _raise_if_failed(accepted)
        job_id, deadline_at = accepted
    if deadline_at is None:
        job = rt.store.get(job_id)
        deadline_at = job.deadline_at if job and job.deadline_at else time.time()
    _raise_if_failed(run_generate(rt, job_id, float(deadline_at), int(attempt)))


@_task(POLL_TASK, "poll")  # type: ignore[untyped-decorator]
def poll_video(
    self: VideoqTask, job_id: str, deadline_at: float, seq: int, errors: int = 0
) -> None:
    """Ask the upstream once for a job's status; end the job or schedule the next poll."""
    step = PollStep(job_id, float(deadline_at), int(seq), int(errors))
    _raise_if_failed(run_poll(self.runtime, step))


@_task(WEBHOOK_TASK, "webhook", DeliverTask)  # type: ignore[untyped-decorator]
def deliver_webhook(self: VideoqTask, job_id: str, attempt: int = 1) -> None:
    """POST a finished job's record to its webhook_url, signed; retry by rescheduling."""
    run_webhook(self.runtime, job_id, int(attempt))


@_task(TICK_TASK, "tick")  # type: ignore[untyped-decorator]
def poll_tick(self: VideoqTask, tick: float = 0.0) -> str:
    """Batch mode: poll every job due by ``tick`` (see ``worker.ticks``)."""
    rt = self.runtime
    fetch = partial(rt.upstream.each_status, idle=rt.settings.poll_tick)
    report = run_tick(rt, float(tick), fetch, partial(_send_tick, poll_tick, "tick", tick))
    return _show(self, report)


@_task(CREATE_TICK_TASK, "create-tick")  # type: ignore[untyped-decorator]
def create_tick(self: VideoqTask, tick: float = 0.0) -> str:
    """Batch mode: start every create due by ``tick`` (see ``worker.intake``)."""
    rt = self.runtime
    fetch = partial(rt.upstream.each_create, idle=rt.settings.poll_tick)
    report = run_create_tick(
        rt, float(tick), fetch, partial(_send_tick, create_tick, "create-tick", tick)
    )
    return _show(self, report)
