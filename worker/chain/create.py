"""The create step: claim a queued job's create, make the one upstream call, and record
the generation (then schedule the first poll), retry, or end the job.

One job gets one create: the create is claimed by moving ``queued -> submitting``
with a random token, and only the holder of that token may record the outcome. A
create whose outcome is unknown (sent, no answer) is never repeated.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from .. import logs
from ..answers import Status
from ..errors import Rejected, RequestError, Throttled, Transient, UpstreamError
from ..job import Job
from ..request import parse_request
from ..runtime import Runtime
from ..states import ErrorKind, JobState
from ..store import Fence, JobStore, Outcome
from .common import DEADLINE_EPSILON, Ended, clamp, drop, finish


def run_generate(rt: Runtime, job_id: str, deadline_at: float, attempt: int = 1) -> Ended | None:
    """One job's create, end to end: chain mode's ``generate_video`` (and any foreign
    or resumed message); returns what it ended, if it ended the job. Batch mode's
    create tick (``worker.intake``) runs the same three parts for a batch:
    :func:`prepare_create`, the store's create claim, and :func:`create_answered`."""
    job = rt.store.get(job_id)
    if job is None:
        drop(job_id, "generate", attempt, "no such job (expired?)", None)
        return None
    if job.state is not JobState.QUEUED:
        if job.state is JobState.SUBMITTING:
            return _check_stuck_create(rt, job, deadline_at, attempt)
        drop(job_id, "generate", attempt, "already past queued", job)
        return None
    body = prepare_create(rt, job, deadline_at, attempt)
    if not isinstance(body, dict):
        return body
    token, claimed = claim_batch(rt, {job_id: attempt})
    if job_id not in claimed:
        drop(job_id, "generate", attempt, "lost the create claim", rt.store.get(job_id))
        return None
    try:
        answer: Status | UpstreamError = rt.upstream.create(
            body, timeout=rt.call_timeout(deadline_at)
        )
    except UpstreamError as exc:
        answer = exc
    return create_answered(rt, ClaimedCreate(job_id, deadline_at, attempt, token), answer)


def prepare_create(
    rt: Runtime, job: Job, deadline_at: float, attempt: int
) -> dict[str, object] | Ended | None:
    """What a queued job's create sends; or, when the job cannot be created now, what
    ended it (its deadline passed or its request is refused), or None (the
    ``VIDEOQ_MAX_IN_FLIGHT`` cap makes it wait in line, or the record moved on)."""
    job_id = job.id
    now = rt.clock()
    if deadline_at - now <= DEADLINE_EPSILON:
        return finish(
            rt,
            job_id,
            JobState.QUEUED,
            JobState.TIMED_OUT,
            None,
            attempt=attempt,
            error_kind=ErrorKind.DEADLINE,
            error_message="the deadline passed before the upstream generation was created",
        )

    limit = rt.settings.max_in_flight
    if limit and not rt.store.budget.acquire_slot(job_id, job.created_at or now, limit, now):
        # Over the cap: wait in line. A finishing job (or the sweeper) wakes us; until
        # then the sweeper leaves this job alone (its due time is its deadline).
        rt.store.postpone(job_id, deadline_at)
        rt.store.unbook_create(job_id)
        logs.event(
            "job.waiting",
            job_id=job_id,
            state="queued",
            attempt=attempt,
            in_flight=rt.store.budget.in_flight_slots(),
            limit=limit,
        )
        rt.wake_waiting()
        return None

    try:
        # Checked again now, before the claim: an image host may have come to resolve
        # to an internal address since the job was accepted.
        return upstream_body(rt.store, job)
    except RequestError as exc:
        return finish(
            rt,
            job_id,
            JobState.QUEUED,
            JobState.FAILED,
            None,
            attempt=attempt,
            error_kind=ErrorKind.VALIDATION,
            error_message=str(exc),
        )


def claim_batch(rt: Runtime, attempts: dict[str, int]) -> tuple[str, set[str]]:
    """Claim the creates of the jobs still queued among ``attempts`` (job id: attempt)
    under one token, with the store's one create claim: only the token's holder may
    record their outcomes, so each job gets one create. Returns the token and the
    ids claimed."""
    token = uuid.uuid4().hex
    now = rt.clock()
    due = now + rt.settings.create_claim_timeout + rt.settings.stall_timeout
    claimed = rt.store.claim_creates(attempts, token, now, due)
    for job_id in claimed:
        logs.event("job.submitting", job_id=job_id, state="submitting", attempt=attempts[job_id])
    return token, claimed


@dataclass(frozen=True)
class ClaimedCreate:
    """A job's create, claimed under ``token`` as attempt ``attempt``: only the
    token's holder may record its outcome."""

    job_id: str
    deadline_at: float
    attempt: int
    token: str

    @property
    def fence(self) -> Fence:
        return Fence("claim_token", self.token)


def create_answered(
    rt: Runtime, create: ClaimedCreate, answer: Status | UpstreamError
) -> Ended | None:
    """What a claimed create does with the upstream's answer (or classified error):
    record the generation and schedule the first poll, retry, or end the job (then
    returns what it ended)."""
    if isinstance(answer, Status):
        _save_generation(rt, create, answer)
        return None
    if not isinstance(answer, Throttled):  # not sent: counted by the rate limit
        rt.store.note_upstream_error(answer.kind)
    if isinstance(answer, Transient) and not answer.outcome_unknown:
        return _retry_create(rt, create, answer)
    if isinstance(answer, Transient):
        kind = ErrorKind.CREATE_OUTCOME_UNKNOWN
        message = (
            f"the upstream create may have been received ({answer}); it is not "
            "repeated, to avoid a second charge"
        )
    elif isinstance(answer, Rejected):
        kind, message = ErrorKind.UPSTREAM_REJECTED, str(answer)
    else:
        kind, message = ErrorKind.UPSTREAM_PROTOCOL, f"create: {answer}"
    return _fail(rt, create, JobState.FAILED, kind, message)


def _fail(
    rt: Runtime,
    create: ClaimedCreate,
    state: JobState,
    kind: ErrorKind,
    message: str,
    **fields: object,
) -> Ended | None:
    """End a job whose create this step holds."""
    return finish(
        rt,
        create.job_id,
        JobState.SUBMITTING,
        state,
        create.fence,
        attempt=create.attempt,
        error_kind=kind,
        error_message=message,
        **fields,
    )


def _save_generation(rt: Runtime, create: ClaimedCreate, created: Status) -> None:
    """Record the new generation's id, then schedule the job's first poll."""
    job_id, attempt = create.job_id, create.attempt
    now = rt.clock()
    countdown = clamp(rt, rt.settings.poll_interval, create.deadline_at, now)
    try:
        saved = rt.store.transition(
            job_id,
            [JobState.SUBMITTING],
            JobState.GENERATING,
            {
                "generation_id": created.generation_id,
                "submitted_at": now,
                "next_poll_at": now + countdown,
                "last_error": "",
            },
            fence=create.fence,
            now=now,
            due_at=now + countdown + rt.settings.stall_timeout,
        )
    except redis.RedisError:
        # A paid generation whose id could not be saved: its id must not be lost.
        logs.event(
            "job.orphaned_generation",
            level=logging.ERROR,
            job_id=job_id,
            attempt=attempt,
            generation_id=created.generation_id,
            reason="Redis failed while saving the id",
        )
        raise
    if saved is not Outcome.APPLIED:
        if rt.store.keep_generation_id(job_id, created.generation_id):
            drop(job_id, "generate", attempt, "cancelled during the create", None)
            return None
        logs.event(
            "job.orphaned_generation",
            level=logging.WARNING,
            job_id=job_id,
            attempt=attempt,
            generation_id=created.generation_id,
            reason="record moved on during the create",
        )
        return None
    logs.event(
        "job.generating",
        job_id=job_id,
        state="generating",
        attempt=attempt,
        generation_id=created.generation_id,
        next_poll_in=countdown,
    )
    rt.scheduler.poll(job_id, create.deadline_at, seq=1, errors=0, countdown=countdown)
    return None


def upstream_body(store: JobStore, job: Job) -> dict[str, object]:
    return parse_request(store.full_request(job)).to_upstream()


def _retry_create(rt: Runtime, create: ClaimedCreate, exc: Transient) -> Ended | None:
    """Release the create claim and try again later: after a backoff, or, for a create
    the rate limit held back (:class:`Throttled`, never sent), when a slot is expected,
    as the same attempt."""
    job_id, deadline_at, attempt = create.job_id, create.deadline_at, create.attempt
    now = rt.clock()
    throttled = isinstance(exc, Throttled)
    delay = (exc.retry_after or 0.0) if throttled else rt.backoff(attempt - 1, exc.retry_after)
    if now + delay >= deadline_at:
        return _fail(
            rt,
            create,
            JobState.TIMED_OUT,
            ErrorKind.DEADLINE,
            f"the deadline left no time to retry the create; last error: {exc}",
            last_error=str(exc),
        )
    # A throttled create was not made: it does not count as an attempt. The record
    # shows when the next one is due (``videoq submit --wait`` says so).
    fields: dict[str, object] = (
        {"claim_token": "", "attempts": attempt - 1}
        if throttled
        else {"claim_token": "", "last_error": str(exc)}
    )
    fields["next_create_at"] = now + delay
    released = rt.store.transition(
        job_id,
        [JobState.SUBMITTING],
        JobState.QUEUED,
        fields,
        fence=create.fence,
        now=now,
        due_at=now + delay + rt.settings.stall_timeout,
    )
    if released is not Outcome.APPLIED:
        drop(job_id, "generate", attempt, "claim lost before retry", rt.store.get(job_id))
        return None
    if throttled:
        logs.event(
            "create.throttled",
            level=logging.DEBUG,
            job_id=job_id,
            state="queued",
            attempt=attempt,
            retry_in=round(delay, 3),
        )
        rt.scheduler.generate(job_id, deadline_at, attempt, countdown=delay)
        return None
    logs.event(
        "create.retry",
        level=logging.WARNING,
        job_id=job_id,
        state="queued",
        attempt=attempt,
        retry_in=delay,
        error=str(exc),
    )
    rt.scheduler.generate(job_id, deadline_at, attempt + 1, countdown=delay)
    return None


def _check_stuck_create(rt: Runtime, job: Job, deadline_at: float, attempt: int) -> Ended | None:
    """Another delivery holds the create claim. If it is too old, its worker died
    between the create and saving its id: record that, never repeat the create."""
    token, claim_at = rt.store.create_claim(job.id)
    now = rt.clock()
    age = now - claim_at
    timeout = rt.settings.create_claim_timeout
    if age >= timeout:
        return finish(
            rt,
            job.id,
            JobState.SUBMITTING,
            JobState.FAILED,
            Fence("claim_token", token),
            attempt=attempt,
            error_kind=ErrorKind.CREATE_OUTCOME_UNKNOWN,
            error_message=(
                f"a worker stopped during the upstream create ({age:.0f}s ago) before "
                "saving its outcome; not repeated, to avoid a second charge"
            ),
        )
    drop(job.id, "generate", attempt, "create in progress elsewhere; re-checking later", job)
    rt.scheduler.generate(job.id, deadline_at, attempt, countdown=timeout - age + 1)
    return None


def accept_foreign(
    rt: Runtime, job_id: str, request: dict[str, Any] | None, params: dict[str, Any]
) -> tuple[str, float] | Ended:
    """A create sent by an app without videoq (``send_task`` with the generation's
    parameters): store it as a job under ``job_id`` (the task id), or record why it
    was refused. Returns the job id and its deadline, or the refused job's end."""
    payload: Any = request if request is not None else params
    now = rt.clock()
    try:
        parsed = parse_request(payload)
    except RequestError as exc:
        rt.store.create_failed(job_id, payload, ErrorKind.VALIDATION, str(exc))
        logs.event("job.refused", job_id=job_id, state="failed", attempt=0, error=str(exc))
        return Ended(job_id, JobState.FAILED, 0, ErrorKind.VALIDATION, str(exc))
    deadline_at = now + rt.settings.deadline
    job_id, created = rt.store.create(job_id, parsed, accepted_at=now, deadline_at=deadline_at)
    if created:
        logs.event("job.accepted", job_id=job_id, state="queued", attempt=0, via="send_task")
    else:
        existing = rt.store.get(job_id)
        if existing and existing.deadline_at:
            deadline_at = existing.deadline_at
    return job_id, deadline_at
