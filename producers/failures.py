"""What the clients (:class:`~producers.client.Client` and
:class:`~producers.aio.AsyncClient`) say when Redis fails them: each message says what
is known about the job, and never shows a secret of the Redis URL."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.exceptions import ResponseError as RedisResponseError

from worker.errors import JobFailed, JobOverdue, Unavailable
from worker.job import Job
from worker.settings import Settings
from worker.states import JobState
from worker.store import write_refusal

_SECRET_PARAM = re.compile(r"pass|auth|token|secret|key", re.IGNORECASE)
_MASK = "***"


_log = logging.getLogger("videoq.client")
OVERDUE_SLACK = 5.0  # seconds past a worker's latest end before a wait gives up


def safe_url(url: str) -> str:
    """A Redis URL with every secret masked, for messages: the password of the
    userinfo (or a lone userinfo, which Redis may take as a password), and any query
    value whose name mentions pass, auth, token, secret or key. Sentinel lists
    (``a;b``) are masked part by part."""
    return ";".join(_safe_one_url(part) for part in url.split(";"))


def _safe_one_url(url: str) -> str:
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:{_MASK}" if colon else _MASK
        parts = parts._replace(netloc=f"{userinfo}@{hostport}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        masked = [(k, _MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(masked, safe="*"))
    return urlunsplit(parts)


def where(redis_url: str) -> str:
    return f"Redis at {safe_url(redis_url)}"


def never_sent(exc: BaseException) -> bool:
    """The error came from opening the connection, so no command reached Redis."""
    return "connecting to" in str(exc).lower()


def read_failed(redis_url: str, what: str, exc: Exception, job_id: str | None) -> Unavailable:
    """A read that failed: it changed nothing, and says so."""
    affected = "the job is not affected" if job_id else "no job is affected"
    if isinstance(exc, RedisResponseError):
        return Unavailable(
            f"could not {what}: {where(redis_url)} answered an error ({exc}); the state "
            f"is unknown, {affected} by this error",
            job_id=job_id,
        )
    return Unavailable(
        f"could not {what}: {where(redis_url)} is unreachable ({type(exc).__name__}); "
        f"{affected} by this error",
        job_id=job_id,
    )


def not_accepted(redis_url: str, job_id: str, exc: Exception, maybe_written: bool) -> Unavailable:
    """A submit whose store write failed: say whether the job may exist."""
    if (why := write_refusal(exc)) and not maybe_written:
        return Unavailable(f"Redis refuses writes: {why}; the job was not accepted")
    if maybe_written:
        return Unavailable(
            f"the outcome is unknown: {where(redis_url)} failed after the job {job_id} "
            f"was sent ({type(exc).__name__}), so it may have been accepted. Retry "
            "with the same idempotency key, or look the job id up",
            job_id=job_id,
        )
    return Unavailable(
        f"{where(redis_url)} is unreachable ({type(exc).__name__}); the job was not "
        "accepted (nothing was enqueued)"
    )


def cancel_unreachable(redis_url: str, job_id: str, exc: Exception) -> Unavailable:
    """A cancel whose write may or may not have reached Redis (it was retried)."""
    return Unavailable(
        f"could not cancel job {job_id}: {where(redis_url)} is unreachable "
        f"({type(exc).__name__}); the cancel was applied only if an attempt reached "
        "Redis, else the job runs on: retry it (cancelling again is safe)",
        job_id=job_id,
    )


def cancel_refused(job_id: str, exc: RedisResponseError) -> Unavailable | None:
    """A cancel Redis refused to write (None: not a refusal, the error is a bug)."""
    if (why := write_refusal(exc)) is None:
        return None
    return Unavailable(
        f"could not cancel job {job_id}: Redis refuses writes: {why}; the job is "
        "not affected by this error",
        job_id=job_id,
    )


def completed(job: Job) -> Job:
    """What ``run`` returns for a job that ended: the record when it completed; else
    :class:`JobFailed` (failed, timed out or cancelled) to raise."""
    if job.state is not JobState.COMPLETED:
        raise JobFailed(job)
    return job


def check_overdue(job: Job, settings: Settings, now: float) -> None:
    """Raise :class:`JobOverdue` for an unfinished job past its deadline by more than a
    running worker ever lets one be (a stalled job is resumed after
    ``VIDEOQ_STALL_TIMEOUT``, by a sweep every ``VIDEOQ_SWEEP_INTERVAL``), so that a wait
    without a timeout ends even when no worker runs."""
    if job.is_terminal or job.deadline_at is None:
        return
    overdue = now - job.deadline_at
    if overdue > settings.stall_timeout + settings.sweep_interval + OVERDUE_SLACK:
        raise JobOverdue(job, overdue)


def note_wake_failed(job_id: str, exc: BaseException) -> None:
    """A cancel was applied, but waking what it freed (the next job in line, the job's
    webhook) failed: the cancel stands, and a worker's sweeper does the rest (within
    ``VIDEOQ_STALL_TIMEOUT``). Logged, not raised: retrying the cancel would do nothing."""
    _log.warning(
        "job %s cancelled; waking the next job in line or its webhook failed (%s), "
        "a worker's sweeper will do it",
        job_id,
        type(exc).__name__,
    )
