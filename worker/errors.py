"""Every error videoq raises, under one root, :class:`VideoqError`.

The families, and who sees them:

- **request** (:class:`RequestError`): a request, or a URL in it, was refused;
  nothing was enqueued. ``field`` names the offending field (a dotted path).
  :class:`AmbiguousJobId`: a job id prefix that names several jobs.
- **not found** (:class:`JobNotFound`): no job with that id.
- **unavailable** (:class:`Unavailable`): Redis (the queue and the job store) could
  not be reached or refused a write.
- **upstream** (:class:`UpstreamError`): a classified failure of the AI/ML API, one of
  :class:`Transient` (retry; :class:`Throttled` when videoq held the call back itself),
  :class:`Rejected` (the upstream refused the request) or :class:`ProtocolError` (the
  answer made no sense).
- **transport** (:class:`HttpFailure`): an outbound HTTP call got no usable answer;
  callers turn it into an upstream or webhook outcome.
- **webhook verification** (:class:`WebhookVerificationError`): a delivery's
  signature, timestamp or headers do not check out.
- **download** (:class:`DownloadFailed`): ``Job.save`` could not save the video (no
  video yet, a refused URL, a bad answer, a timeout, too large, an unwritable path).
- **waiting** (:class:`JobFailed`, :class:`WaitTimeout`, :class:`JobOverdue`): a job a
  caller waited for ended without a video, did not end in the time the caller gave, or
  is unfinished well past its deadline (no worker is running it).
- **job ended** (:class:`JobEnded`): a chain-mode task ended its job ``failed`` or
  ``timed_out``; raised only so that Flower lists the task as a failure.

Callers tell them apart by type, never by message text.
"""

from __future__ import annotations

from typing import Any


class VideoqError(Exception):
    """The root of every error videoq raises."""


# --- request ------------------------------------------------------------------------------


class RequestError(VideoqError, ValueError):
    """A request was refused. ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class RequestTooLarge(RequestError):
    """The request is larger than ``VIDEOQ_MAX_REQUEST_BYTES`` (field ``request``)."""


class IdempotencyConflict(RequestError):
    """The idempotency key was used before with a different request (a bad input)."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            "idempotency_key",
            f"{key!r} was already used for job {job_id} with different parameters",
        )
        self.key = key
        self.job_id = job_id


class AmbiguousJobId(RequestError):
    """A job id prefix (field ``job_id``) that starts the ids of several jobs;
    ``candidates`` holds a few of them."""

    def __init__(self, prefix: str, candidates: list[str]) -> None:
        shown = ", ".join(candidates[:5]) + (", ..." if len(candidates) > 5 else "")
        super().__init__(
            "job_id",
            f"{prefix!r} starts the ids of several jobs ({shown}); give more characters",
        )
        self.prefix = prefix
        self.candidates = candidates


class UrlRefused(VideoqError, ValueError):
    """A URL was refused. The message says why and reads after a field name:
    ``"points at a loopback address (127.0.0.1), not a public host"``."""


# --- not found, unavailable ---------------------------------------------------------------


class JobNotFound(VideoqError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r} (unknown, or expired after retention)")
        self.job_id = job_id


class Unavailable(VideoqError, RuntimeError):
    """Redis (the queue and the job store) could not be reached, or refused a write.

    The message says what is known. ``job_id`` is set whenever the job may exist: it
    was stored but its first task could not be published (the worker's sweeper starts
    it later), or a submit's outcome is unknown (retry with the same idempotency key,
    or look the id up), or a read of that job failed (the job itself is unaffected).
    """

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class ModeUnsupported(VideoqError, RuntimeError):
    """A client cannot work in this configuration: ``AsyncClient`` in chain mode
    (``VIDEOQ_POLL_MODE=chain``), whose first task is a Celery message it cannot send
    without blocking its event loop."""


# --- upstream -----------------------------------------------------------------------------


class UpstreamError(VideoqError):
    """Base of the classified upstream failures. ``kind`` labels the metric."""

    kind = "error"


class Transient(UpstreamError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
        kind: str = "connection",
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.outcome_unknown = outcome_unknown
        self.kind = kind  # connection | timeout | rate_limited | server_error


class Throttled(Transient):
    """A call that was not sent, so that the fleet stays under its rate: retry it after
    ``retry_after`` seconds (when a slot is expected). Never ``outcome_unknown``, and
    not the upstream's fault. ``reason``: ``rate`` (no slot within the horizon),
    ``paused`` (a 429's ``Retry-After`` pauses the fleet) or ``unavailable`` (Redis
    could not be asked)."""

    def __init__(self, message: str, *, retry_after: float, reason: str = "rate") -> None:
        super().__init__(message, retry_after=retry_after, outcome_unknown=False, kind="throttled")
        self.reason = reason


class Rejected(UpstreamError):
    kind = "rejected"

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


class ProtocolError(UpstreamError):
    kind = "protocol"


# --- transport ----------------------------------------------------------------------------


class HttpFailure(VideoqError):
    """A call that got no usable answer. ``sent``: the request may have reached the peer."""

    kind = "connection"

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class ConnectFailed(HttpFailure):
    """No connection was made (refused, unreachable, no such name): nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=False)


class AddressRefused(HttpFailure):
    """The guard refused the host or an address it resolved to: nothing was sent."""

    kind = "blocked"

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=False)


class TimedOut(HttpFailure):
    kind = "timeout"


class Dropped(HttpFailure):
    """The connection broke, or the answer could not be parsed, after the request went out."""


class TooLarge(HttpFailure):
    kind = "too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, sent=True)


# --- webhook verification -----------------------------------------------------------------


class WebhookVerificationError(VideoqError, ValueError):
    """The webhook's signature, timestamp or headers do not check out."""


# --- download -----------------------------------------------------------------------------


class DownloadFailed(VideoqError):
    """A job's video could not be saved (``Job.save``); nothing was left at the path."""


# --- waiting ------------------------------------------------------------------------------


class JobFailed(VideoqError):
    """A job ``Client.run`` waited for ended without a video: ``failed``, ``timed_out``
    or ``cancelled``. ``job``: its final record; ``kind``: its ``error.kind``
    (``upstream_error``, ``deadline``, ``cancelled`` ...)."""

    def __init__(self, job: Any) -> None:  # a worker.job.Job (job.py imports this module)
        self.job = job
        self.job_id = job.id
        self.state = job.state.value
        self.kind = job.error.kind if job.error else job.state.value
        detail = job.error.message if job.error else "no error was recorded"
        ended = {"timed_out": "timed out", "cancelled": "was cancelled"}.get(self.state, "failed")
        super().__init__(f"job {job.id} {ended}: {self.kind}: {detail}")


class WaitTimeout(VideoqError, TimeoutError):
    """A wait gave up before the job ended. The job itself keeps running: ``job_id``
    names it, ``job`` is its last record read. Also a builtin :class:`TimeoutError`."""

    def __init__(self, job: Any, timeout: float) -> None:  # a worker.job.Job, as above
        super().__init__(
            f"job {job.id} is still {job.state.value} after {timeout}s; it keeps running "
            "until it ends or reaches its deadline: look it up later by its id"
        )
        self.job = job
        self.job_id = job.id


class JobOverdue(WaitTimeout):
    """A wait gave up because the job is still unfinished well past its deadline
    (``overdue`` seconds): no worker is ending it. A worker that starts later will
    (as ``timed_out``); ``job`` is its last record read."""

    def __init__(self, job: Any, overdue: float) -> None:  # a worker.job.Job, as above
        VideoqError.__init__(
            self,
            f"job {job.id} is still {job.state.value} {overdue:.0f}s past its deadline: no "
            "worker has ended it. Is a worker (videoq worker) running with the same "
            "VIDEOQ_REDIS_URL, VIDEOQ_KEY_PREFIX and VIDEOQ_QUEUE?",
        )
        self.job = job
        self.job_id = job.id


# --- job ended ----------------------------------------------------------------------------


class JobEnded(VideoqError):
    """A task whose step ended its job ``failed`` or ``timed_out`` raises this once
    the record is written and the job's follow-ups (webhook, the line for its slot)
    are done, so that Flower lists the task under Failed with the reason. An expected
    failure (``Task.throws``): logged without a traceback, never retried, and the
    message is acknowledged; the job's record is the outcome, and stays as written.

    The message is ``<error kind>: <message> (job <id>, <state>)``, and so is the
    ``repr`` (what Flower's Exception column shows: the reason first, not the type)."""

    def __init__(self, job_id: str, state: str, reason: str) -> None:
        super().__init__(f"{reason} (job {job_id}, {state})")
        self.job_id = job_id
        self.state = state
        self.reason = reason

    def __repr__(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple[type[JobEnded], tuple[str, str, str]]:
        # Crosses the prefork pool pickled: rebuilt from its own fields.
        return (type(self), (self.job_id, self.state, self.reason))
