"""Job states and which of them are final."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    GENERATING = "generating"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED}
)
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)


class ErrorKind(StrEnum):
    """What ended a job that did not complete (``error.kind`` in the record)."""

    VALIDATION = "validation"  # the request was refused (only for foreign send_task callers)
    UPSTREAM_REJECTED = "upstream_rejected"  # 4xx on create: bad key, bad request
    UPSTREAM_ERROR = "upstream_error"  # the upstream reported status "error"
    UPSTREAM_PROTOCOL = "upstream_protocol"  # unknown status, non-JSON, missing fields
    CREATE_OUTCOME_UNKNOWN = "create_outcome_unknown"  # the create may have happened
    DEADLINE = "deadline"  # the deadline passed before the video was ready
    TRANSIENT = "transient"  # last transient error seen (recorded on timed-out jobs)
    CANCELLED = "cancelled"  # a caller cancelled the job
