"""The arguments of the record-writing scripts and what their answers mean, shared by
the store (:class:`~worker.store.JobStore`) and its asyncio twin
(:class:`~worker.store.aio.AsyncJobStore`): the two run the same scripts with the
same keys and arguments, so a record is written one way whichever client writes it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from ..errors import IdempotencyConflict
from ..keys import LATENCY_BUCKETS, Keys
from ..request import GenerationRequest
from ..states import TERMINAL_STATES, JobState
from . import encoding

_TERMINAL = ",".join(sorted(s.value for s in TERMINAL_STATES))
_BUCKETS = ",".join(str(b) for b in LATENCY_BUCKETS)


class Outcome(Enum):
    APPLIED = "applied"
    REFUSED = "refused"  # the record was not in an expected state, or the fence moved on
    MISSING = "missing"  # no such record (never existed, or expired)


@dataclass(frozen=True)
class Fence:
    """A condition on one field: equal to ``value``, or (``lt``) numerically below it."""

    field: str
    value: str
    op: Literal["eq", "lt"] = "eq"


@dataclass(frozen=True)
class Call:
    """One run of a script: its KEYS and ARGV."""

    keys: list[str]
    args: list[str | int]


@dataclass(frozen=True)
class NewJob:
    """A job to store (see ``JobStore.create``)."""

    job_id: str
    request: GenerationRequest
    accepted_at: float
    deadline_at: float
    idempotency_key: str | None = None
    due_at: float | None = None
    webhook_url: str | None = None
    owner: str | None = None
    book: bool = False

    def fingerprint(self) -> str:
        stored = self.request.stored()
        if self.webhook_url is not None:
            stored = {**stored, "webhook_url": self.webhook_url}
        return encoding.fingerprint(stored)


def create_call(
    keys: Keys, job: NewJob, *, retention: int, stall_timeout: float, line: bool
) -> Call:
    """``create.lua``'s run for ``job``. ``line``: the job joins the line for slots
    (``VIDEOQ_MAX_IN_FLIGHT`` is on)."""
    stored = job.request.stored()
    ttl = int(retention + max(0.0, job.deadline_at - job.accepted_at)) + 1
    shown = encoding.without_inline_images(stored)
    full = json.dumps(stored, sort_keys=True)
    # The request has a key of its own: a record whose values are all short stays
    # in Redis's compact hash encoding (a listpack), about a third of the memory.
    fields: dict[str, object] = {
        "id": job.job_id,
        "state": JobState.QUEUED,
        "created_at": job.accepted_at,
        "updated_at": job.accepted_at,
        "deadline_at": job.deadline_at,
        "attempts": 0,
        "poll_seq": 0,
        "idempotency_key": job.idempotency_key,
    }
    if job.webhook_url:
        fields["webhook_url"] = job.webhook_url
    if job.owner:
        fields["owner"] = job.owner
    idem_key = keys.idempotency(job.idempotency_key, job.owner) if job.idempotency_key else ""
    payload_key = keys.payload(job.job_id) if shown != stored else ""
    due_at = job.accepted_at + stall_timeout if job.due_at is None else job.due_at
    return Call(
        keys=[
            keys.job(job.job_id),
            idem_key,
            keys.active(),
            keys.stats(),
            keys.waiting(),
            payload_key,
            keys.creates() if job.book else "",
            keys.request(job.job_id),
        ],
        args=[
            job.job_id,
            ttl,
            job.fingerprint(),
            keys.job(""),
            repr(due_at),
            "1" if line else "0",
            repr(job.accepted_at),
            full if payload_key else "",
            json.dumps(shown, sort_keys=True),
            *encoding.pairs(fields),
        ],
    )


def created(job: NewJob, existing: object) -> tuple[str, bool]:
    """``create.lua``'s answer: ``(job id, created)``; raises
    :class:`IdempotencyConflict` when the key names a job with another request."""
    if not existing:
        return job.job_id, True
    existing_id, _, existing_fp = str(existing).partition(" ")
    if existing_fp != job.fingerprint():
        raise IdempotencyConflict(job.idempotency_key or "", existing_id)
    return existing_id, False


def transition_call(
    keys: Keys,
    job_id: str,
    allowed: Iterable[JobState],
    new_state: JobState,
    fields: Mapping[str, object] | None,
    *,
    fence: Fence | None,
    increment: str | None,
    now: float,
    due_at: float | None,
    retention: int,
) -> Call:
    """``transition.lua``'s run (see ``JobStore.transition``)."""
    return Call(
        keys=[
            keys.job(job_id),
            keys.active(),
            keys.stats(),
            keys.slots(),
            keys.waiting(),
            keys.webhooks(),
            keys.polls(),
            keys.creates(),
            keys.payload(job_id),
        ],
        args=[
            ",".join(s.value for s in allowed),
            new_state.value,
            repr(now),
            fence.field if fence else "",
            fence.op if fence else "eq",
            fence.value if fence else "",
            retention if new_state.is_terminal else 0,
            increment or "",
            _TERMINAL,
            job_id,
            "" if due_at is None else repr(due_at),
            _BUCKETS,
            *encoding.pairs(fields or {}),
        ],
    )


def outcome(result: object) -> Outcome:
    """``transition.lua``'s answer."""
    return {1: Outcome.APPLIED, 0: Outcome.REFUSED}.get(int(str(result)), Outcome.MISSING)
