"""The Celery tasks: thin bindings of ``worker.chain`` to messages.

Messages carry only ``job_id``, ``deadline_at`` and a sequence number: the request
lives in the job record, so no image payload and no secret ever travels in a message.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from functools import partial
from typing import Any

from celery.exceptions import Reject
from redis.exceptions import RedisError

from . import logs
from .app import app
from .chain import Runtime, run_generate, run_poll
from .errors import RequestError
from .intake import run_create_tick
from .keys import CREATE_TICK_TASK, GENERATE_TASK, POLL_TASK, TICK_TASK, WEBHOOK_TASK, task_label
from .request import parse_request
from .states import ErrorKind
from .store import BookedPoll, redis_unavailable, refuses_writes
from .ticks import TickReport, run_tick
from .webhooks import run_webhook

_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "max_retries": 0,
}


class CeleryScheduler:
    """Schedules the next step of a chain as a countdown message. Never waits."""

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        generate_video.apply_async(
            kwargs={"job_id": job_id, "deadline_at": deadline_at, "attempt": attempt},
            countdown=countdown,
            kwargsrepr=task_label(job_id, "create", attempt, "queued"),
        )

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        poll_video.apply_async(
            kwargs={"job_id": job_id, "deadline_at": deadline_at, "seq": seq, "errors": errors},
            countdown=countdown,
            kwargsrepr=task_label(job_id, "poll", seq, "generating"),
        )

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        deliver_webhook.apply_async(
            kwargs={"job_id": job_id, "attempt": attempt},
            countdown=countdown,
            kwargsrepr=task_label(job_id, "webhook", attempt),
        )


class BatchScheduler(CeleryScheduler):
    """Batch mode: a poll or a create is an entry in its Redis book, with no message;
    the pump (``worker.pump``) sends the ticks that take them."""

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        now = time.time()
        runtime().store.schedule_polls([BookedPoll(job_id, now + countdown, errors)], now)

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        runtime().store.book_creates({job_id: time.time() + countdown})


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
    sending (the slot) with what the tick did."""
    label = report.label()
    with contextlib.suppress(Exception):  # monitoring only: never fail the tick for it
        task.send_event("task-progress", kwargs=label)
    return label


_SCHEDULER = CeleryScheduler()
_BATCH = BatchScheduler()


def runtime() -> Runtime:
    """This process's runtime, scheduling through Celery (per poll, or per tick)."""
    return app.runtime(_BATCH if app.videoq_settings.poll_mode == "batch" else _SCHEDULER)


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


@app.task(name=GENERATE_TASK, **_TASK_OPTIONS)  # type: ignore[untyped-decorator]
def generate_video(
    self: Any,
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
    rt = runtime()
    try:
        if job_id is None:
            accepted = _accept_foreign(rt, self.request.id or uuid.uuid4().hex, request, params)
            if accepted is None:
                return
            job_id, deadline_at = accepted
        if deadline_at is None:
            job = rt.store.get(job_id)
            deadline_at = job.deadline_at if job and job.deadline_at else time.time()
        run_generate(rt, job_id, float(deadline_at), int(attempt))
    except RedisError as exc:
        _requeue_on_redis_outage(job_id or "-", "generate", attempt, exc)


def _accept_foreign(
    rt: Runtime, job_id: str, request: dict[str, Any] | None, params: dict[str, Any]
) -> tuple[str, float] | None:
    payload: Any = request if request is not None else params
    now = time.time()
    try:
        parsed = parse_request(payload)
    except RequestError as exc:
        rt.store.create_failed(job_id, payload, ErrorKind.VALIDATION, str(exc))
        logs.event("job.refused", job_id=job_id, state="failed", attempt=0, error=str(exc))
        return None
    deadline_at = now + rt.settings.deadline
    job_id, created = rt.store.create(job_id, parsed, accepted_at=now, deadline_at=deadline_at)
    if created:
        logs.event("job.accepted", job_id=job_id, state="queued", attempt=0, via="send_task")
    else:
        existing = rt.store.get(job_id)
        if existing and existing.deadline_at:
            deadline_at = existing.deadline_at
    return job_id, deadline_at


@app.task(name=POLL_TASK, **_TASK_OPTIONS)  # type: ignore[untyped-decorator]
def poll_video(self: Any, job_id: str, deadline_at: float, seq: int, errors: int = 0) -> None:
    """Ask the upstream once for a job's status; end the job or schedule the next poll."""
    try:
        run_poll(runtime(), job_id, float(deadline_at), int(seq), int(errors))
    except RedisError as exc:
        _requeue_on_redis_outage(job_id, "poll", seq, exc)


@app.task(name=WEBHOOK_TASK, **_TASK_OPTIONS)  # type: ignore[untyped-decorator]
def deliver_webhook(self: Any, job_id: str, attempt: int = 1) -> None:
    """POST a finished job's record to its webhook_url, signed; retry by rescheduling."""
    try:
        run_webhook(runtime(), job_id, int(attempt))
    except RedisError as exc:
        _requeue_on_redis_outage(job_id, "webhook", attempt, exc)


@app.task(name=TICK_TASK, **_TASK_OPTIONS)  # type: ignore[untyped-decorator]
def poll_tick(self: Any, tick: float = 0.0) -> str | None:
    """Batch mode: poll every job due by ``tick`` (see ``worker.ticks``)."""
    rt = runtime()
    try:
        fetch = partial(rt.upstream.each_status, idle=rt.settings.poll_tick)
        report = run_tick(rt, float(tick), fetch, partial(_send_tick, poll_tick, "tick", tick))
    except RedisError as exc:
        _requeue_on_redis_outage("-", "tick", 0, exc)
        return None
    return _show(self, report)


@app.task(name=CREATE_TICK_TASK, **_TASK_OPTIONS)  # type: ignore[untyped-decorator]
def create_tick(self: Any, tick: float = 0.0) -> str | None:
    """Batch mode: start every create due by ``tick`` (see ``worker.intake``)."""
    rt = runtime()
    try:
        fetch = partial(rt.upstream.each_create, idle=rt.settings.poll_tick)
        report = run_create_tick(
            rt, float(tick), fetch, partial(_send_tick, create_tick, "create-tick", tick)
        )
    except RedisError as exc:
        _requeue_on_redis_outage("-", "create-tick", 0, exc)
        return None
    return _show(self, report)
