"""The poll step: one status call for a generating job, then end the job or schedule
the next poll.

A chain of polls never forks: poll ``n`` claims the job by raising ``poll_seq`` from
below ``n`` to ``n``, so a duplicate or stale poll finds ``poll_seq >= n`` and drops,
and every write a poll makes is fenced on its ``poll_seq``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from .. import logs
from ..answers import IN_PROGRESS, Status
from ..errors import Throttled, Transient, UpstreamError
from ..runtime import Runtime
from ..states import ErrorKind, JobState
from ..store import BookedPoll, Fence, Outcome
from ..urls import video_url_problem
from .common import DEADLINE_EPSILON, Ended, clamp, drop, finish


@dataclass(frozen=True)
class PollStep:
    """Poll ``seq`` of a job: what each part of the step passes on. ``errors``: failed
    polls in a row before this one."""

    job_id: str
    deadline_at: float
    seq: int
    errors: int = 0

    @property
    def fence(self) -> Fence:
        """Every write this poll makes holds only while the job's ``poll_seq`` is its."""
        return Fence("poll_seq", str(self.seq))


@dataclass(frozen=True)
class NextPoll:
    """How a poll that did not end the job goes on: the next poll after ``delay``
    seconds, with ``errors`` failed polls in a row, unless the deadline has come (the
    job then times out with ``deadline_message``). ``last_error`` None keeps the
    record's; ``upstream_status`` is logged."""

    delay: float
    errors: int
    deadline_message: str
    last_error: str | None
    upstream_status: str | None = None


def run_poll(rt: Runtime, step: PollStep) -> Ended | None:
    """Chain mode's poll ``seq``: claim it (the store's one poll claim, which batch
    mode's ticks make for many polls at once), then :func:`poll_claimed`. Returns what
    it ended, if it ended the job."""
    now = rt.clock()
    claimed = rt.store.claim_poll(
        step.job_id, step.seq, now, due_at=now + rt.upstream_timeout + rt.settings.stall_timeout
    )
    if claimed is None:
        drop(
            step.job_id,
            "poll",
            step.seq,
            "not generating, or a duplicate or stale poll",
            rt.store.get(step.job_id),
        )
        return None
    return poll_claimed(rt, step, claimed.generation_id)


def poll_claimed(rt: Runtime, step: PollStep, generation_id: str) -> Ended | None:
    """The rest of poll ``seq`` once it holds the claim (``poll_seq == seq``): one
    status call, then end the job or schedule the next poll. (Batch mode claims a
    tick's polls in one script, makes their calls together, and goes on from
    :func:`poll_answered`.)"""
    timeout = rt.call_timeout(step.deadline_at)
    if timeout <= DEADLINE_EPSILON:
        return poll_out_of_time(rt, step)
    try:
        answer: Status | UpstreamError = rt.upstream.status(generation_id, timeout=timeout)
    except UpstreamError as exc:
        answer = exc
    return poll_answered(rt, step, answer)


def poll_out_of_time(rt: Runtime, step: PollStep) -> Ended | None:
    """Poll ``seq`` came at the deadline, with no time left for a call: the job times
    out, keeping the last upstream error it had (``errors`` failed polls in a row)."""
    message = (
        f"the upstream was unreachable at the deadline ({step.errors} failed polls in a row)"
        if step.errors
        else "still generating at the deadline"
    )
    return _end(rt, step, JobState.TIMED_OUT, ErrorKind.DEADLINE, message)


def poll_answered(rt: Runtime, step: PollStep, answer: Status | UpstreamError) -> Ended | None:
    """What poll ``seq`` does with the upstream's answer (or the classified error);
    returns what it ended, if it ended the job."""
    if isinstance(answer, Status):
        return _after_status(rt, step, answer)
    if isinstance(answer, Throttled):
        # Not sent (the fleet's rate limit, or its pause after a 429): poll again when
        # a slot is expected. No backoff and no error counted; a pause (the upstream's
        # 429) is noted as the last error, the local limit keeps the record's.
        paused = answer.reason == "paused"
        return _next_poll(
            rt,
            step,
            NextPoll(
                delay=answer.retry_after or 0.0,
                errors=step.errors,
                deadline_message=(
                    f"still generating at the deadline; its last poll was held back: {answer}"
                ),
                last_error=str(answer) if paused else None,
            ),
        )
    rt.store.note_upstream_error(answer.kind)
    if isinstance(answer, Transient):
        return _after_transient(rt, step, answer)
    return _end(rt, step, JobState.FAILED, ErrorKind.UPSTREAM_PROTOCOL, f"status: {answer}")


def _end(
    rt: Runtime,
    step: PollStep,
    state: JobState,
    kind: ErrorKind | None,
    message: str | None,
    **fields: object,
) -> Ended | None:
    """End a generating job (fenced on this poll)."""
    if kind is not None:
        fields.update(error_kind=kind, error_message=message)
    return finish(
        rt, step.job_id, JobState.GENERATING, state, step.fence, attempt=step.seq, **fields
    )


def _after_status(rt: Runtime, step: PollStep, st: Status) -> Ended | None:
    extra = _what_the_answer_adds(step, st)
    if st.status == "completed":
        return _completed(rt, step, st, extra)
    if st.status == "error":
        name = st.error_name or "error"
        message = f"{name}: {st.error_message or 'the upstream reported an error'}"
        return _end(rt, step, JobState.FAILED, ErrorKind.UPSTREAM_ERROR, message, **extra)
    if st.status not in IN_PROGRESS:
        message = f"unknown upstream status {st.status[:100]!r}"
        return _end(rt, step, JobState.FAILED, ErrorKind.UPSTREAM_PROTOCOL, message, **extra)
    return _next_poll(
        rt,
        step,
        NextPoll(
            delay=rt.settings.poll_interval,
            errors=0,
            deadline_message=f"still {st.status[:50]} at the deadline",
            last_error="",
            upstream_status=st.status,
        ),
    )


def _what_the_answer_adds(step: PollStep, st: Status) -> dict[str, object]:
    """What an answer adds to the record whatever the outcome: credits, and any note."""
    extra: dict[str, object] = {}
    if st.credits_used is not None:
        extra["credits_used"] = st.credits_used
    if st.note:
        extra["notes"] = json.dumps([st.note])
        logs.event(
            "poll.note",
            level=logging.WARNING,
            job_id=step.job_id,
            state="generating",
            attempt=step.seq,
            note=st.note,
        )
    return extra


def _completed(rt: Runtime, step: PollStep, st: Status, extra: dict[str, object]) -> Ended | None:
    protocol = ErrorKind.UPSTREAM_PROTOCOL
    if not st.video_url:
        message = "the upstream said completed but gave no video URL"
        return _end(rt, step, JobState.FAILED, protocol, message, **extra)
    problem = video_url_problem(st.video_url, allow_private=rt.settings.allow_private_urls)
    if problem is not None:
        message = f"the upstream's video URL is unusable: {problem}"
        return _end(rt, step, JobState.FAILED, protocol, message, **extra)
    return _end(
        rt, step, JobState.COMPLETED, None, None, video_url=st.video_url, last_error="", **extra
    )


def _after_transient(rt: Runtime, step: PollStep, exc: Transient) -> Ended | None:
    delay = rt.backoff(step.errors, exc.retry_after, floor=rt.settings.poll_interval)
    logs.event(
        "poll.transient_error",
        level=logging.WARNING,
        job_id=step.job_id,
        state="generating",
        attempt=step.seq,
        errors=step.errors + 1,
        error=str(exc),
    )
    return _next_poll(
        rt,
        step,
        NextPoll(
            delay=delay,
            errors=step.errors + 1,
            deadline_message=f"the upstream was unreachable at the deadline; last error: {exc}",
            last_error=str(exc),
        ),
    )


def _next_poll(rt: Runtime, step: PollStep, nxt: NextPoll) -> Ended | None:
    """Note the poll's outcome and schedule the next one (``last_error`` None: the
    record's is kept)."""
    now = rt.clock()
    if step.deadline_at - now <= DEADLINE_EPSILON:
        return _end(
            rt,
            step,
            JobState.TIMED_OUT,
            ErrorKind.DEADLINE,
            nxt.deadline_message,
            last_error=nxt.last_error or None,
        )
    countdown = clamp(rt, nxt.delay, step.deadline_at, now)
    logs.event(
        "poll.scheduled",
        level=logging.DEBUG,
        job_id=step.job_id,
        state="generating",
        attempt=step.seq,
        upstream_status=nxt.upstream_status,
        next_poll_in=countdown,
    )
    if rt.booked is not None:  # batch mode: noted and booked with the tick's others
        rt.booked.append(
            BookedPoll(step.job_id, now + countdown, nxt.errors, step.seq, nxt.last_error)
        )
        return None
    fields: dict[str, object] = {"next_poll_at": now + countdown}
    if nxt.last_error is not None:
        fields["last_error"] = nxt.last_error
    noted = rt.store.transition(
        step.job_id,
        [JobState.GENERATING],
        JobState.GENERATING,
        fields,
        fence=step.fence,
        now=now,
        due_at=now + countdown + rt.settings.stall_timeout,
    )
    if noted is not Outcome.APPLIED:
        drop(step.job_id, "poll", step.seq, "record moved on", rt.store.get(step.job_id))
        return None
    rt.scheduler.poll(step.job_id, step.deadline_at, step.seq + 1, nxt.errors, countdown=countdown)
    return None
