"""The Python producer API: ``Client().run(...)``, ``.submit(...)``, ``.get(job_id)``,
``.wait(job_id)``.

Usable from any web view: it validates the request, stores the job record and
publishes ``videoq.generate_video`` by name. It never imports the task code.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import publisher
from worker.errors import JobNotFound, Unavailable, WaitTimeout
from worker.job import Job
from worker.request import GenerationRequest, build_request
from worker.scheduling import after_terminal, scheduler_for
from worker.settings import Settings, load_settings
from worker.states import ACTIVE_STATES, ErrorKind, JobState
from worker.store import JobStore, Outcome, connect

from . import failures, lookup
from .failures import safe_url
from .images import ImageSource, resolve_image_url
from .listing import SCAN_COUNT, Page
from .submission import CREATE_ERRORS, CreateTries, check_submission
from .updates import Update


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
        # Creates go through a store without redis-py's own retries: submit retries
        # them itself, knowing whether an attempt may have reached Redis.
        self._create_store = JobStore(
            connect(settings.model_copy(update={"redis_retries": 0})), settings
        )
        # Tasks are published by name, as a worker publishes them, through a plain
        # Celery app (the worker's is never built here).
        self._app = publisher(settings)
        self._scheduler = scheduler_for(settings, self.store, self._app.send_task)
        # Batch mode (the default): a new job's create is booked in Redis with its
        # record, and the workers' pumps start it; chain mode sends it a message.
        self._batch = settings.poll_mode == "batch"

    def _read_failed(self, what: str, exc: Exception, job_id: str | None = None) -> Unavailable:
        return failures.read_failed(self.settings.redis_url, what, exc, job_id)

    def submit(
        self,
        image_url: str | None = None,
        prompt: str | None = None,
        duration: int | str = 5,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
        *,
        image: ImageSource | None = None,
        **upstream_options: object,
    ) -> str:
        """Validate and enqueue a generation; return the job id.

        The first frame is ``image_url`` (an http(s) or data:image URL) or ``image``, a
        local image: a ``pathlib.Path``, a ``(bytes, content type)`` pair or a
        :class:`producers.images.Image`, sent as a data: URL (PNG or JPEG, at most
        7.5 MB; see :mod:`producers.images`). Exactly one of the two.

        Raises :class:`RequestError` (``.field`` names the field) on bad input, with
        nothing enqueued. With an ``idempotency_key`` already used within the retention
        window, returns that job's id and enqueues nothing. With a ``webhook_url``, the
        job's record is POSTed there, signed, when it ends (``VIDEOQ_WEBHOOK_SECRET``).
        ``owner`` (the gateway's caller name) scopes the job and its idempotency key.

        Raises :class:`Unavailable` when Redis fails: its message says whether the job
        was certainly not accepted, or whether that is unknown (retry with the same
        idempotency key); ``job_id`` is set whenever the job may exist.
        """
        image_url = resolve_image_url(image_url, image, self.settings.max_request_bytes)
        request = build_request(image_url, prompt, duration, **upstream_options)
        return self.submit_request(
            request, idempotency_key=idempotency_key, webhook_url=webhook_url, owner=owner
        )

    def submit_request(
        self,
        request: GenerationRequest,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
    ) -> str:
        """:meth:`submit` for a request already validated (``worker.request``'s
        ``parse_request`` or ``build_request``): the same checks of the size, the
        webhook URL and the idempotency key, and the same errors."""
        check_submission(self.settings, request, idempotency_key, webhook_url)
        now = time.time()
        deadline_at = now + self.settings.deadline
        new_id = uuid.uuid4().hex
        tries = CreateTries(self.settings, new_id)
        for attempt in tries:
            try:
                job_id, created = self._create_store.create(
                    new_id,
                    request,
                    accepted_at=now,
                    deadline_at=deadline_at,
                    idempotency_key=idempotency_key,
                    webhook_url=webhook_url,
                    owner=owner,
                    book=self._batch,
                )
                break
            except CREATE_ERRORS as exc:
                time.sleep(tries.failed(exc, attempt))
        if job_id == new_id and tries.maybe_written:
            created = True  # an earlier try that seemed lost had stored it
        if not created or self._batch:
            return job_id  # batch mode: the create was booked with the record
        try:
            self._scheduler.generate(job_id, deadline_at, 1, countdown=0)
        except Exception as exc:  # kombu raises its own errors after its publish retries
            raise Unavailable(
                f"job {job_id} was stored but its first task could not be published to "
                f"Redis at {safe_url(self.settings.redis_url)} ({type(exc).__name__}); "
                "a worker's sweeper will start it",
                job_id=job_id,
            ) from None
        return job_id

    def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """Cancel a job that has not ended; return its record (unchanged if it had ended).

        Before the upstream create, no create happens. During generation, polling stops
        and the record keeps the upstream id: the upstream has no cancel call, so the
        generation itself runs to its end (and may be charged). With ``owner``, another
        owner's job is :class:`JobNotFound`.
        """
        if owner is not None:
            self.get(job_id, owner=owner)
        try:
            outcome = self.store.transition(
                job_id,
                ACTIVE_STATES,
                JobState.CANCELLED,
                {"error_kind": ErrorKind.CANCELLED, "error_message": "cancelled by the caller"},
            )
            job = self.store.get(job_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # redis-py retried the write: an earlier try may have reached Redis.
            raise failures.cancel_unreachable(self.settings.redis_url, job_id, exc) from None
        except RedisResponseError as exc:
            if (refused := failures.cancel_refused(job_id, exc)) is None:
                raise
            raise refused from None
        if outcome is Outcome.MISSING or job is None:
            raise JobNotFound(job_id)
        if outcome is Outcome.APPLIED:
            try:
                after_terminal(
                    self.store, self._scheduler, self.settings.max_in_flight, job, time.time()
                )
            except Exception as exc:  # Redis or kombu: the cancel stands all the same
                failures.note_wake_failed(job_id, exc)
        return job

    def list_jobs(
        self,
        state: JobState | None = None,
        cursor: str = "0",
        limit: int = 50,
        *,
        owner: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """One page of at most ``limit`` jobs (any order), optionally in one state and
        of one owner. Returns the jobs and the cursor of the next page (None: no more).

        A cursor names a Redis SCAN step and how many of its job keys were listed, so
        the next page starts exactly after the last job examined: over an unchanged set
        of jobs, no job is repeated or skipped. Raises :class:`RequestError` on a cursor
        this listing did not give out.
        """
        page = Page(cursor, limit, state, owner)
        try:
            while True:
                page.step(*self.store.scan_ids(page.scan, SCAN_COUNT))
                while ids := page.unread():
                    if (done := page.take(self.store.get_many(ids))) is not None:
                        return done
                if (done := page.end_step()) is not None:
                    return done
        except (RedisConnectionError, RedisTimeoutError, RedisResponseError) as exc:
            raise self._read_failed("list jobs", exc) from None

    def recent(self, state: JobState | None = None, limit: int = 20) -> list[Job]:
        """The ``limit`` newest jobs (by ``created_at``), newest first, optionally in one
        state, of every owner (:func:`producers.lookup.newest`: it reads at most 100 000
        records). For people (``videoq list``); a web app pages with :meth:`list_jobs`."""
        try:
            return lookup.newest(self.store, state, limit)
        except (RedisConnectionError, RedisTimeoutError, RedisResponseError) as exc:
            raise self._read_failed("list jobs", exc) from None

    def find(self, job_id: str) -> Job:
        """The job with this id, or the one job whose id starts with it (at least 8
        characters; :func:`producers.lookup.find`). A full id costs one read."""
        try:
            return lookup.find(job_id, self.get, self.store.ids_starting_with)
        except (RedisConnectionError, RedisTimeoutError, RedisResponseError) as exc:
            raise self._read_failed(f"look up job {job_id}", exc) from None

    def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """The job's current record. Raises :class:`JobNotFound` (also for another
        owner's job, when ``owner`` is given)."""
        try:
            job = self.store.get(job_id)
        except (RedisConnectionError, RedisTimeoutError, RedisResponseError) as exc:
            raise self._read_failed(f"read job {job_id}", exc, job_id) from None
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        return job

    def update_of(self, job: Job) -> Update:
        """``job``'s progress now: its record and, while it waits for a slot, its place
        in line."""
        place = None
        if job.state is JobState.QUEUED and self.settings.max_in_flight:
            try:
                place = self.store.budget.place_in_line(job.id)
            except (RedisConnectionError, RedisTimeoutError, RedisResponseError) as exc:
                raise self._read_failed(f"read job {job.id}", exc, job.id) from None
        return Update(job, place, time.time())

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        interval: float = 0.5,
        on_update: Callable[[Update], None] | None = None,
    ) -> Job:
        """Block the *caller* until the job is terminal; return it.

        ``on_update`` is called with an :class:`~producers.updates.Update` after every
        read. Raises :class:`~worker.errors.WaitTimeout`, a :class:`TimeoutError`, when
        ``timeout`` seconds pass first; the job keeps running. (This reads the record
        every ``interval`` seconds; the worker itself never waits.)
        """
        give_up = time.monotonic() + (timeout or 0.0)
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(self.update_of(job))
            if job.is_terminal:
                return job
            if timeout is not None and time.monotonic() >= give_up:
                raise WaitTimeout(job, timeout)
            failures.check_overdue(job, self.settings, time.time())
            time.sleep(interval)

    def save(
        self,
        job: Job,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        timeout: float | None = None,
    ) -> Path:
        """``job.save(path)`` under this client's settings (its
        ``VIDEOQ_ALLOW_PRIVATE_URLS``, rather than the environment's)."""
        return job.save(
            path,
            max_bytes=max_bytes,
            timeout=timeout,
            allow_private=self.settings.allow_private_urls,
        )

    def run(
        self,
        image_url: str | None = None,
        prompt: str | None = None,
        duration: int | str = 5,
        *,
        timeout: float | None = None,
        on_update: Callable[[Update], None] | None = None,
        interval: float = 0.5,
        **options: object,
    ) -> Job:
        """Submit a job and wait for its video, in one call: the completed record.

        ``options`` are :meth:`submit`'s (``idempotency_key``, ``webhook_url``, the
        upstream's options ...), ``timeout``, ``interval`` and ``on_update``
        :meth:`wait`'s. Raises :class:`~worker.errors.JobFailed` (``.job``, ``.kind``)
        when the job ends failed, timed out or cancelled, and
        :class:`~worker.errors.WaitTimeout` after ``timeout`` seconds (the job keeps
        running: ``.job_id`` names it).
        """
        job_id = self.submit(image_url, prompt, duration, **options)  # type: ignore[arg-type]
        job = self.wait(job_id, timeout, interval=interval, on_update=on_update)
        return failures.completed(job)
