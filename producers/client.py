"""The Python producer API: ``Client().submit(...)``, ``.get(job_id)``, ``.wait(job_id)``.

Usable from any web view: it validates the request, stores the job record and
publishes ``videoq.generate_video`` by name. It never imports the task code.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.app import VideoqCelery, create_app
from worker.job import Job
from worker.keys import GENERATE_TASK, WEBHOOK_TASK, task_label
from worker.request import MAX_URL_LENGTH, RequestError, build_request
from worker.settings import Settings, load_settings
from worker.states import ACTIVE_STATES, ErrorKind, JobState
from worker.store import JobStore, Outcome, connect
from worker.urls import UrlRefused, check_url

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r} (unknown, or expired after retention)")
        self.job_id = job_id


class Unavailable(RuntimeError):
    """Redis (the queue and the job store) could not be reached.

    ``job_id`` is set in the rare case where the job was stored but its first task
    could not be published: the worker's sweeper starts such a job later, so the
    caller can still follow it (or retry with the same idempotency key).
    """

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


def safe_url(url: str) -> str:
    """A Redis URL with any password masked, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}"
        if parts.port:
            netloc += f":{parts.port}"
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class Client:
    """Submit image-to-video jobs and read their records.

    ``Client()`` reads the same settings as the worker (``VIDEOQ_REDIS_URL`` ...);
    ``Client(redis_url=...)`` overrides the Redis URL.
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        if redis_url:
            settings = settings.model_copy(update={"redis_url": redis_url})
        self.settings = settings
        self.store = JobStore(connect(settings), settings)
        self._app: VideoqCelery = create_app(settings)

    def _unavailable(self, exc: Exception) -> Unavailable:
        return Unavailable(
            f"Redis at {safe_url(self.settings.redis_url)} is unreachable "
            f"({type(exc).__name__}); nothing was enqueued"
        )

    def submit(
        self,
        image_url: str,
        prompt: str | None = None,
        duration: int | str = 5,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        **upstream_options: object,
    ) -> str:
        """Validate and enqueue a generation; return the job id.

        Raises :class:`RequestError` (``.field`` names the field) on bad input, with
        nothing enqueued. With an ``idempotency_key`` already used within the retention
        window, returns that job's id and enqueues nothing. With a ``webhook_url``, the
        job's record is POSTed there, signed, when it ends (``VIDEOQ_WEBHOOK_SECRET``).
        """
        request = build_request(image_url, prompt, duration, **upstream_options)
        if webhook_url is not None:
            self._check_webhook_url(webhook_url)
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.match(idempotency_key)
        ):
            raise RequestError(
                "idempotency_key", "must be 1-200 printable ASCII characters without spaces"
            )
        now = time.time()
        deadline_at = now + self.settings.deadline
        try:
            job_id, created = self.store.create(
                uuid.uuid4().hex, request, accepted_at=now, deadline_at=deadline_at,
                idempotency_key=idempotency_key, webhook_url=webhook_url,
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise self._unavailable(exc) from None
        if not created:
            return job_id
        try:
            self._app.send_task(
                GENERATE_TASK,
                kwargs={"job_id": job_id, "deadline_at": deadline_at, "attempt": 1},
                queue=self.settings.queue, kwargsrepr=task_label(job_id, "create", 1, "queued"),
            )
        except Exception as exc:  # kombu raises its own errors after its publish retries
            raise Unavailable(
                f"job {job_id} was stored but its first task could not be published to "
                f"Redis at {safe_url(self.settings.redis_url)} ({type(exc).__name__}); "
                "a worker's sweeper will start it",
                job_id=job_id,
            ) from None
        return job_id

    def _check_webhook_url(self, url: object) -> None:
        try:
            check_url(
                url, allow_private=self.settings.allow_private_urls, max_length=MAX_URL_LENGTH
            )
        except UrlRefused as exc:
            raise RequestError("webhook_url", str(exc)) from None
        if not self.settings.webhook_secret.get_secret_value():
            raise RequestError(
                "webhook_url", "webhooks are off: VIDEOQ_WEBHOOK_SECRET is not set"
            )

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not ended; return its record (unchanged if it had ended).

        Before the upstream create, no create happens. During generation, polling stops
        and the record keeps the upstream id: the upstream has no cancel call, so the
        generation itself runs to its end (and may be charged).
        """
        try:
            outcome = self.store.transition(
                job_id, ACTIVE_STATES, JobState.CANCELLED,
                {"error_kind": ErrorKind.CANCELLED, "error_message": "cancelled by the caller"},
            )
            job = self.store.get(job_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from None
        if outcome is Outcome.MISSING or job is None:
            raise JobNotFound(job_id)
        if outcome is Outcome.APPLIED:
            self._after_cancel(job)
        return job

    def _after_cancel(self, job: Job) -> None:
        queue = self.settings.queue
        if job.webhook_state == "pending":
            self._app.send_task(WEBHOOK_TASK, kwargs={"job_id": job.id, "attempt": 1},
                                queue=queue, kwargsrepr=task_label(job.id, "webhook", 1))
        if self.settings.max_in_flight:
            for waiting in self.store.next_in_line(self.settings.max_in_flight):
                self._app.send_task(
                    GENERATE_TASK, queue=queue,
                    kwargs={"job_id": waiting.id, "deadline_at": waiting.deadline_at,
                            "attempt": waiting.attempts + 1},
                    kwargsrepr=task_label(waiting.id, "create", waiting.attempts + 1, "queued"),
                )

    def list_jobs(
        self, state: JobState | None = None, cursor: int = 0, limit: int = 50
    ) -> tuple[list[Job], int]:
        """One page of jobs (any order), optionally in one state. Returns the jobs and
        the cursor of the next page (0: no more)."""
        found: list[Job] = []
        try:
            while True:
                cursor, ids = self.store.scan_ids(cursor, max(limit, 100))
                for job_id in ids:
                    job = self.store.get(job_id)
                    if job is not None and (state is None or job.state is state):
                        found.append(job)
                if cursor == 0 or len(found) >= limit:
                    return found, cursor
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from None
        except RedisResponseError:
            raise RequestError("cursor", "is not a cursor this listing gave out") from None

    def get(self, job_id: str) -> Job:
        """The job's current record. Raises :class:`JobNotFound`."""
        try:
            job = self.store.get(job_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise self._unavailable(exc) from None
        if job is None:
            raise JobNotFound(job_id)
        return job

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        interval: float = 0.5,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Block the *caller* until the job is terminal; return it.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first. (This reads
        the record every ``interval`` seconds; the worker itself never waits.)
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job.is_terminal:
                return job
            if give_up is not None and time.monotonic() >= give_up:
                raise TimeoutError(f"job {job_id} is still {job.state.value} after {timeout}s")
            time.sleep(interval)
