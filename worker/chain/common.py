"""What every step shares: when the deadline counts as reached, how a step that
finds the record moved on drops, and how a job ends (and what a step that ended its
job tells its caller)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import logs
from ..job import Job
from ..runtime import Runtime
from ..states import JobState
from ..store import Fence, Outcome

# A countdown shorter than this is "now": the chain has reached its deadline.
DEADLINE_EPSILON = 0.05
# The last poll before the deadline comes this many seconds early (at most one
# upstream call's time), so that its call, bounded by the deadline, can still find a
# finished video; the deadline itself then only times the job out.
FINAL_LOOK = 2.0


@dataclass(frozen=True)
class Ended:
    """What a step that ended its job returns (a step that did not returns None): the
    job, its terminal state and, unless it completed, why. The task bindings make a
    failed or timed-out job's task a failure in Flower (``worker.tasks``)."""

    job_id: str
    state: JobState
    attempt: int  # the create's attempt or the poll's number
    error_kind: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        """The job ended without its video, through no caller (not cancelled)."""
        return self.state in (JobState.FAILED, JobState.TIMED_OUT)

    @property
    def reason(self) -> str:
        """``<error kind>: <message>``."""
        kind = self.error_kind or self.state.value
        return f"{kind}: {self.error_message}" if self.error_message else kind


def drop(job_id: str, step: str, attempt: int, reason: str, job: Job | None) -> None:
    logs.event(
        "task.dropped",
        job_id=job_id,
        step=step,
        attempt=attempt,
        state=job.state.value if job else None,
        reason=reason,
    )


def finish(
    rt: Runtime,
    job_id: str,
    from_state: JobState,
    state: JobState,
    fence: Fence | None,
    *,
    attempt: int,
    **fields: object,
) -> Ended | None:
    """End the job with one compare-and-set from ``from_state``; then its follow-ups
    (webhook, the line for its slot). None: the record had moved on (dropped)."""
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
        rt.after_terminal(job_id)
        kind, message = fields.get("error_kind"), fields.get("error_message")
        return Ended(
            job_id,
            state,
            attempt,
            None if kind is None else str(kind),
            None if message is None else str(message),
        )
    drop(job_id, "finish", attempt, f"record moved on ({outcome.value})", rt.store.get(job_id))
    return None


def clamp(rt: Runtime, delay: float, deadline_at: float, now: float) -> float:
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
