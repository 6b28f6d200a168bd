"""What each step of a job's chain does: create once, then poll until the job ends.

Nothing here sleeps or waits for the upstream to finish: a step does one upstream call,
records the outcome with a compare-and-set, and either ends the job or asks the
:class:`Scheduler` to run the next step after a countdown. The Celery tasks in
``worker.tasks`` are thin bindings of these functions; tests drive them directly with
a fake clock, a fake upstream and a recording scheduler.

Fencing:
- the create is claimed by moving ``queued -> submitting`` with a random token; only
  the holder of that token may record the outcome, so one job gets one create;
- poll ``n`` claims the chain by raising ``poll_seq`` from below ``n`` to ``n``; a
  duplicate or stale poll finds ``poll_seq >= n`` and drops, so a chain never forks;
- every terminal write is a compare-and-set from an active state, so a terminal
  record is final.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis

from . import logs
from .errors import Rejected, RequestError, Throttled, Transient, UpstreamError
from .http import BoundedHttp
from .job import Job
from .request import parse_request
from .settings import Settings
from .states import ErrorKind, JobState
from .store import BookedPoll, Fence, JobStore, Outcome
from .upstream import IN_PROGRESS, Status, UpstreamClient
from .urls import video_url_problem

# A countdown shorter than this is "now": the chain has reached its deadline.
DEADLINE_EPSILON = 0.05
# The last poll before the deadline comes this many seconds early (at most one
# upstream call's time), so that its call, bounded by the deadline, can still find a
# finished video; the deadline itself then only times the job out.
FINAL_LOOK = 2.0


class Scheduler(Protocol):
    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None: ...

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None: ...

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    upstream: UpstreamClient
    scheduler: Scheduler
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)
    # Webhook deliveries (guarded against internal addresses); None: webhooks are off.
    http: BoundedHttp | None = None
    # In a batch tick: where a poll step that goes on books its next poll, noted and
    # fenced in one script with the rest of the tick's (see ``worker.ticks``).
    booked: list[BookedPoll] | None = None

    @property
    def upstream_timeout(self) -> float:
        """The longest one upstream call can take."""
        return self.settings.upstream_call_timeout

    def call_timeout(self, deadline_at: float) -> float:
        """How long an upstream call made now may take: never past the job's deadline."""
        return max(0.0, min(self.upstream_timeout, deadline_at - self.clock()))

    def backoff(self, errors: int, retry_after: float | None, floor: float = 0.0) -> float:
        """Exponential backoff with jitter, never below ``Retry-After`` or ``floor``."""
        s = self.settings
        ceiling = min(s.retry_backoff_max, s.retry_backoff * (2 ** min(errors, 30)))
        delay: float = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        return max(delay, retry_after or 0.0, floor)


def _drop(job_id: str, step: str, attempt: int, reason: str, job: Job | None) -> None:
    logs.event(
        "task.dropped",
        job_id=job_id,
        step=step,
        attempt=attempt,
        state=job.state.value if job else None,
        reason=reason,
    )


def _finish(
    rt: Runtime,
    job_id: str,
    from_state: JobState,
    state: JobState,
    fence: Fence | None,
    *,
    attempt: int,
    **fields: object,
) -> bool:
    outcome = rt.store.transition(job_id, [from_state], state, fields, fence=fence, now=rt.clock())
    if outcome is Outcome.APPLIED:
        logs.event(
            "job.finished",
            job_id=job_id,
            state=state.value,
            attempt=attempt,
            error_kind=fields.get("error_kind"),
            error=fields.get("error_message"),
        )
        after_terminal(rt, job_id)
        return True
    _drop(job_id, "finish", attempt, f"record moved on ({outcome.value})", rt.store.get(job_id))
    return False


def after_terminal(rt: Runtime, job_id: str) -> None:
    """A job just ended: send its webhook, and start whoever waits for its slot."""
    job = rt.store.get(job_id)
    if job is not None and job.webhook_state == "pending":
        rt.scheduler.webhook(job_id, 1, countdown=0)
    wake_waiting(rt)


def wake_waiting(rt: Runtime) -> None:
    """Start the jobs first in line for free slots (``VIDEOQ_MAX_IN_FLIGHT``)."""
    if rt.settings.max_in_flight:
        for job in rt.store.budget.next_in_line(rt.settings.max_in_flight):
            rt.scheduler.generate(job.id, job.deadline_at or rt.clock(), job.attempts + 1, 0)


# --- generate -------------------------------------------------------------------------------


def run_generate(rt: Runtime, job_id: str, deadline_at: float, attempt: int = 1) -> None:
    """One job's create, end to end: chain mode's ``generate_video`` (and any foreign
    or resumed message). Batch mode's create tick (``worker.intake``) runs the same
    three parts for a batch: :func:`prepare_create`, the store's create claim, and
    :func:`create_answered`."""
    job = rt.store.get(job_id)
    if job is None:
        return _drop(job_id, "generate", attempt, "no such job (expired?)", None)
    if job.state is not JobState.QUEUED:
        if job.state is JobState.SUBMITTING:
            return _check_stuck_create(rt, job, deadline_at, attempt)
        return _drop(job_id, "generate", attempt, "already past queued", job)
    body = prepare_create(rt, job, deadline_at, attempt)
    if body is None:
        return None
    token, claimed = claim_batch(rt, {job_id: attempt})
    if job_id not in claimed:
        return _drop(job_id, "generate", attempt, "lost the create claim", rt.store.get(job_id))
    try:
        answer: Status | UpstreamError = rt.upstream.create(
            body, timeout=rt.call_timeout(deadline_at)
        )
    except UpstreamError as exc:
        answer = exc
    return create_answered(rt, job_id, deadline_at, attempt, token, answer)


def prepare_create(
    rt: Runtime, job: Job, deadline_at: float, attempt: int
) -> dict[str, object] | None:
    """What a queued job's create sends, or None when the job cannot be created now:
    its deadline passed or its request is refused (the job ends), or the
    ``VIDEOQ_MAX_IN_FLIGHT`` cap makes it wait in line."""
    job_id = job.id
    now = rt.clock()
    if deadline_at - now <= DEADLINE_EPSILON:
        _finish(
            rt,
            job_id,
            JobState.QUEUED,
            JobState.TIMED_OUT,
            None,
            attempt=attempt,
            error_kind=ErrorKind.DEADLINE,
            error_message="the deadline passed before the upstream generation was created",
        )
        return None

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
        wake_waiting(rt)
        return None

    try:
        # Checked again now, before the claim: an image host may have come to resolve
        # to an internal address since the job was accepted.
        return _upstream_body(rt.store, job)
    except RequestError as exc:
        _finish(
            rt,
            job_id,
            JobState.QUEUED,
            JobState.FAILED,
            None,
            attempt=attempt,
            error_kind=ErrorKind.VALIDATION,
            error_message=str(exc),
        )
        return None


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


def create_answered(
    rt: Runtime,
    job_id: str,
    deadline_at: float,
    attempt: int,
    token: str,
    answer: Status | UpstreamError,
) -> None:
    """What a claimed create does with the upstream's answer (or classified error):
    record the generation and schedule the first poll, retry, or end the job."""
    fence = Fence("claim_token", token)
    if isinstance(answer, Transient):
        if not isinstance(answer, Throttled):  # not sent: counted by the rate limit
            rt.store.note_upstream_error(answer.kind)
        if answer.outcome_unknown:
            _finish(
                rt,
                job_id,
                JobState.SUBMITTING,
                JobState.FAILED,
                fence,
                attempt=attempt,
                error_kind=ErrorKind.CREATE_OUTCOME_UNKNOWN,
                error_message=(
                    f"the upstream create may have been received ({answer}); it is not "
                    "repeated, to avoid a second charge"
                ),
            )
            return None
        return _retry_create(rt, job_id, deadline_at, attempt, fence, answer)
    if isinstance(answer, Rejected):
        rt.store.note_upstream_error(answer.kind)
        _finish(
            rt,
            job_id,
            JobState.SUBMITTING,
            JobState.FAILED,
            fence,
            attempt=attempt,
            error_kind=ErrorKind.UPSTREAM_REJECTED,
            error_message=str(answer),
        )
        return None
    if isinstance(answer, UpstreamError):
        rt.store.note_upstream_error(answer.kind)
        _finish(
            rt,
            job_id,
            JobState.SUBMITTING,
            JobState.FAILED,
            fence,
            attempt=attempt,
            error_kind=ErrorKind.UPSTREAM_PROTOCOL,
            error_message=f"create: {answer}",
        )
        return None
    created = answer

    now = rt.clock()
    countdown = _clamp(rt, rt.settings.poll_interval, deadline_at, now)
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
            fence=fence,
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
            return _drop(job_id, "generate", attempt, "cancelled during the create", None)
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
    rt.scheduler.poll(job_id, deadline_at, seq=1, errors=0, countdown=countdown)
    return None


def _upstream_body(store: JobStore, job: Job) -> dict[str, object]:
    return parse_request(store.full_request(job)).to_upstream()


def _retry_create(
    rt: Runtime, job_id: str, deadline_at: float, attempt: int, fence: Fence, exc: Transient
) -> None:
    """Release the create claim and try again later: after a backoff, or, for a create
    the rate limit held back (:class:`Throttled`, never sent), when a slot is expected,
    as the same attempt."""
    now = rt.clock()
    throttled = isinstance(exc, Throttled)
    delay = (exc.retry_after or 0.0) if throttled else rt.backoff(attempt - 1, exc.retry_after)
    if now + delay >= deadline_at:
        _finish(
            rt,
            job_id,
            JobState.SUBMITTING,
            JobState.TIMED_OUT,
            fence,
            attempt=attempt,
            error_kind=ErrorKind.DEADLINE,
            error_message=f"the deadline left no time to retry the create; last error: {exc}",
            last_error=str(exc),
        )
        return
    # A throttled create was not made: it does not count as an attempt.
    fields: dict[str, object] = (
        {"claim_token": "", "attempts": attempt - 1}
        if throttled
        else {"claim_token": "", "last_error": str(exc)}
    )
    released = rt.store.transition(
        job_id,
        [JobState.SUBMITTING],
        JobState.QUEUED,
        fields,
        fence=fence,
        now=now,
        due_at=now + delay + rt.settings.stall_timeout,
    )
    if released is not Outcome.APPLIED:
        return _drop(job_id, "generate", attempt, "claim lost before retry", rt.store.get(job_id))
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


def _check_stuck_create(rt: Runtime, job: Job, deadline_at: float, attempt: int) -> None:
    """Another delivery holds the create claim. If it is too old, its worker died
    between the create and saving its id: record that, never repeat the create."""
    token, claim_at = rt.store.create_claim(job.id)
    now = rt.clock()
    age = now - claim_at
    timeout = rt.settings.create_claim_timeout
    if age >= timeout:
        _finish(
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
        return
    _drop(job.id, "generate", attempt, "create in progress elsewhere; re-checking later", job)
    rt.scheduler.generate(job.id, deadline_at, attempt, countdown=timeout - age + 1)


# --- poll -----------------------------------------------------------------------------------


def run_poll(rt: Runtime, job_id: str, deadline_at: float, seq: int, errors: int = 0) -> None:
    """Chain mode's poll ``seq``: claim it (the store's one poll claim, which batch
    mode's ticks make for many polls at once), then :func:`poll_claimed`."""
    now = rt.clock()
    claimed = rt.store.claim_poll(
        job_id, seq, now, due_at=now + rt.upstream_timeout + rt.settings.stall_timeout
    )
    if claimed is None:
        return _drop(
            job_id,
            "poll",
            seq,
            "not generating, or a duplicate or stale poll",
            rt.store.get(job_id),
        )
    return poll_claimed(rt, job_id, claimed.generation_id, deadline_at, seq, errors)


def poll_claimed(
    rt: Runtime, job_id: str, generation_id: str, deadline_at: float, seq: int, errors: int
) -> None:
    """The rest of poll ``seq`` once it holds the claim (``poll_seq == seq``): one
    status call, then end the job or schedule the next poll. (Batch mode claims a
    tick's polls in one script, makes their calls together, and goes on from
    :func:`poll_answered`.)"""
    timeout = rt.call_timeout(deadline_at)
    if timeout <= DEADLINE_EPSILON:
        return poll_out_of_time(rt, job_id, seq, errors)
    try:
        answer: Status | UpstreamError = rt.upstream.status(generation_id, timeout=timeout)
    except UpstreamError as exc:
        answer = exc
    poll_answered(rt, job_id, deadline_at, seq, errors, answer)


def poll_out_of_time(rt: Runtime, job_id: str, seq: int, errors: int) -> None:
    """Poll ``seq`` came at the deadline, with no time left for a call: the job times
    out, keeping the last upstream error it had (``errors`` failed polls in a row)."""
    message = (
        f"the upstream was unreachable at the deadline ({errors} failed polls in a row)"
        if errors
        else "still generating at the deadline"
    )
    _finish(
        rt,
        job_id,
        JobState.GENERATING,
        JobState.TIMED_OUT,
        Fence("poll_seq", str(seq)),
        attempt=seq,
        error_kind=ErrorKind.DEADLINE,
        error_message=message,
    )


def poll_answered(
    rt: Runtime,
    job_id: str,
    deadline_at: float,
    seq: int,
    errors: int,
    answer: Status | UpstreamError,
) -> None:
    """What poll ``seq`` does with the upstream's answer (or the classified error)."""
    fence = Fence("poll_seq", str(seq))
    if isinstance(answer, Status):
        return _after_status(rt, job_id, deadline_at, seq, fence, answer)
    if isinstance(answer, Throttled):
        # Not sent (the fleet's rate limit, or its pause after a 429): poll again when
        # a slot is expected. No backoff and no error counted; a pause (the upstream's
        # 429) is noted as the last error, the local limit keeps the record's.
        paused = answer.reason == "paused"
        return _next_poll(
            rt,
            job_id,
            deadline_at,
            seq,
            errors,
            fence,
            answer.retry_after or 0.0,
            f"still generating at the deadline; its last poll was held back: {answer}",
            str(answer) if paused else None,
            None,
        )
    rt.store.note_upstream_error(answer.kind)
    if isinstance(answer, Transient):
        return _after_transient(rt, job_id, deadline_at, seq, errors, fence, answer)
    _finish(
        rt,
        job_id,
        JobState.GENERATING,
        JobState.FAILED,
        fence,
        attempt=seq,
        error_kind=ErrorKind.UPSTREAM_PROTOCOL,
        error_message=f"status: {answer}",
    )
    return None


def _after_status(
    rt: Runtime, job_id: str, deadline_at: float, seq: int, fence: Fence, st: Status
) -> None:
    # What the answer adds to the record whatever the outcome: credits, and any note.
    extra: dict[str, object] = {}
    if st.credits_used is not None:
        extra["credits_used"] = st.credits_used
    if st.note:
        extra["notes"] = json.dumps([st.note])
        logs.event(
            "poll.note",
            level=logging.WARNING,
            job_id=job_id,
            state="generating",
            attempt=seq,
            note=st.note,
        )
    if st.status == "completed":
        if not st.video_url:
            _finish(
                rt,
                job_id,
                JobState.GENERATING,
                JobState.FAILED,
                fence,
                attempt=seq,
                error_kind=ErrorKind.UPSTREAM_PROTOCOL,
                error_message="the upstream said completed but gave no video URL",
                **extra,
            )
            return
        problem = video_url_problem(st.video_url, allow_private=rt.settings.allow_private_urls)
        if problem is not None:
            _finish(
                rt,
                job_id,
                JobState.GENERATING,
                JobState.FAILED,
                fence,
                attempt=seq,
                error_kind=ErrorKind.UPSTREAM_PROTOCOL,
                error_message=f"the upstream's video URL is unusable: {problem}",
                **extra,
            )
            return
        _finish(
            rt,
            job_id,
            JobState.GENERATING,
            JobState.COMPLETED,
            fence,
            attempt=seq,
            video_url=st.video_url,
            last_error="",
            **extra,
        )
        return
    if st.status == "error":
        name = st.error_name or "error"
        _finish(
            rt,
            job_id,
            JobState.GENERATING,
            JobState.FAILED,
            fence,
            attempt=seq,
            error_kind=ErrorKind.UPSTREAM_ERROR,
            error_message=f"{name}: {st.error_message or 'the upstream reported an error'}",
            **extra,
        )
        return
    if st.status not in IN_PROGRESS:
        _finish(
            rt,
            job_id,
            JobState.GENERATING,
            JobState.FAILED,
            fence,
            attempt=seq,
            error_kind=ErrorKind.UPSTREAM_PROTOCOL,
            error_message=f"unknown upstream status {st.status[:100]!r}",
            **extra,
        )
        return
    _next_poll(
        rt,
        job_id,
        deadline_at,
        seq,
        0,
        fence,
        rt.settings.poll_interval,
        f"still {st.status[:50]} at the deadline",
        "",
        st.status,
    )


def _after_transient(
    rt: Runtime,
    job_id: str,
    deadline_at: float,
    seq: int,
    errors: int,
    fence: Fence,
    exc: Transient,
) -> None:
    delay = rt.backoff(errors, exc.retry_after, floor=rt.settings.poll_interval)
    logs.event(
        "poll.transient_error",
        level=logging.WARNING,
        job_id=job_id,
        state="generating",
        attempt=seq,
        errors=errors + 1,
        error=str(exc),
    )
    _next_poll(
        rt,
        job_id,
        deadline_at,
        seq,
        errors + 1,
        fence,
        delay,
        f"the upstream was unreachable at the deadline; last error: {exc}",
        str(exc),
        None,
    )


def _next_poll(
    rt: Runtime,
    job_id: str,
    deadline_at: float,
    seq: int,
    errors: int,
    fence: Fence,
    delay: float,
    deadline_message: str,
    last_error: str | None,
    upstream_status: str | None,
) -> None:
    """Note the poll's outcome and schedule the next one (``last_error`` None: the
    record's is kept)."""
    now = rt.clock()
    if deadline_at - now <= DEADLINE_EPSILON:
        _finish(
            rt,
            job_id,
            JobState.GENERATING,
            JobState.TIMED_OUT,
            fence,
            attempt=seq,
            error_kind=ErrorKind.DEADLINE,
            error_message=deadline_message,
            last_error=last_error or None,
        )
        return
    countdown = _clamp(rt, delay, deadline_at, now)
    logs.event(
        "poll.scheduled",
        level=logging.DEBUG,
        job_id=job_id,
        state="generating",
        attempt=seq,
        upstream_status=upstream_status,
        next_poll_in=countdown,
    )
    if rt.booked is not None:  # batch mode: noted and booked with the tick's others
        rt.booked.append(BookedPoll(job_id, now + countdown, errors, seq, last_error))
        return None
    fields: dict[str, object] = {"next_poll_at": now + countdown}
    if last_error is not None:
        fields["last_error"] = last_error
    noted = rt.store.transition(
        job_id,
        [JobState.GENERATING],
        JobState.GENERATING,
        fields,
        fence=fence,
        now=now,
        due_at=now + countdown + rt.settings.stall_timeout,
    )
    if noted is not Outcome.APPLIED:
        return _drop(job_id, "poll", seq, "record moved on", rt.store.get(job_id))
    rt.scheduler.poll(job_id, deadline_at, seq + 1, errors, countdown=countdown)
    return None


def _clamp(rt: Runtime, delay: float, deadline_at: float, now: float) -> float:
    """Never schedule past the deadline: the last countdown ends the chain on time.

    The last poll is due :data:`FINAL_LOOK` seconds before the deadline (its call
    cannot outlast the deadline); the step after it comes at the deadline, with no
    time for a call, and times the job out.
    """
    remaining = deadline_at - now
    # In batch mode a poll runs up to a tick after it is due: that much earlier still.
    tick = rt.settings.poll_tick if rt.settings.poll_mode == "batch" else 0.0
    look = min(FINAL_LOOK, rt.upstream_timeout) + tick
    if remaining - look > DEADLINE_EPSILON:
        return max(0.0, min(delay, remaining - look))
    return max(0.0, min(delay, remaining))
