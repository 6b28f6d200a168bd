"""The Python producer API: ``Client().submit(...)``, ``.get(job_id)``, ``.wait(job_id)``.

Usable from any web view: it validates the request, stores the job record and
publishes ``videoq.generate_video`` by name. It never imports the task code.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.config import publisher
from worker.errors import JobNotFound, RequestError, RequestTooLarge, Unavailable, UrlRefused
from worker.job import Job
from worker.request import MAX_URL_LENGTH, GenerationRequest, build_request
from worker.scheduling import after_terminal, scheduler_for
from worker.settings import Settings, load_settings
from worker.states import ACTIVE_STATES, ErrorKind, JobState
from worker.store import JobStore, Outcome, connect, write_refusal
from worker.urls import check_url

from . import lookup
from .images import ImageSource, resolve_image_url
from .updates import Update

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")
# A listing's cursor: "<SCAN cursor>.<job keys of that SCAN step already listed>".
_CURSOR = re.compile(r"^(?:0|(?P<scan>[0-9]{1,20})\.(?P<skip>[0-9]{1,5}))$")
_SCAN_COUNT = 200  # fixed: the same SCAN step must give the same keys on every page
_LIST_EXAMINE = 5000  # most records one page reads before it returns (fewer) jobs
_SECRET_PARAM = re.compile(r"pass|auth|token|secret|key", re.IGNORECASE)
_MASK = "***"


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


def _never_sent(exc: BaseException) -> bool:
    """The error came from opening the connection, so no command reached Redis."""
    return "connecting to" in str(exc).lower()


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

    def _where(self) -> str:
        return f"Redis at {safe_url(self.settings.redis_url)}"

    def _read_failed(self, what: str, exc: Exception, job_id: str | None = None) -> Unavailable:
        """A read that failed: it changed nothing, and says so."""
        affected = "the job is not affected" if job_id else "no job is affected"
        if isinstance(exc, RedisResponseError):
            return Unavailable(
                f"could not {what}: {self._where()} answered an error ({exc}); the state "
                f"is unknown, {affected} by this error",
                job_id=job_id,
            )
        return Unavailable(
            f"could not {what}: {self._where()} is unreachable ({type(exc).__name__}); "
            f"{affected} by this error",
            job_id=job_id,
        )

    def _not_accepted(self, job_id: str, exc: Exception, maybe_written: bool) -> Unavailable:
        """A submit whose store write failed: say whether the job may exist."""
        if (why := write_refusal(exc)) and not maybe_written:
            return Unavailable(f"Redis refuses writes: {why}; the job was not accepted")
        if maybe_written:
            return Unavailable(
                f"the outcome is unknown: {self._where()} failed after the job {job_id} "
                f"was sent ({type(exc).__name__}), so it may have been accepted. Retry "
                "with the same idempotency key, or look the job id up",
                job_id=job_id,
            )
        return Unavailable(
            f"{self._where()} is unreachable ({type(exc).__name__}); the job was not "
            "accepted (nothing was enqueued)"
        )

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
        size = len(json.dumps(request.stored(), sort_keys=True).encode())
        if size > self.settings.max_request_bytes:
            raise RequestTooLarge(
                "request",
                f"is {size} bytes, more than the {self.settings.max_request_bytes} bytes "
                "VIDEOQ_MAX_REQUEST_BYTES allows (send large images by URL)",
            )
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
        new_id = uuid.uuid4().hex
        maybe_written = False
        for attempt in range(self.settings.redis_retries + 1):
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
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                maybe_written = maybe_written or not _never_sent(exc)
                if attempt == self.settings.redis_retries:
                    raise self._not_accepted(new_id, exc, maybe_written) from None
                time.sleep(min(2.0, 0.05 * 2**attempt))
            except RedisResponseError as exc:
                if write_refusal(exc) is None:
                    raise
                raise self._not_accepted(new_id, exc, maybe_written) from None
        if job_id == new_id and maybe_written:
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

    def _check_webhook_url(self, url: object) -> None:
        try:
            check_url(
                url, allow_private=self.settings.allow_private_urls, max_length=MAX_URL_LENGTH
            )
        except UrlRefused as exc:
            raise RequestError("webhook_url", str(exc)) from None
        if not self.settings.webhook_secret.get_secret_value():
            raise RequestError("webhook_url", "webhooks are off: VIDEOQ_WEBHOOK_SECRET is not set")

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
            raise Unavailable(
                f"could not cancel job {job_id}: {self._where()} is unreachable "
                f"({type(exc).__name__}); the cancel was applied only if an attempt reached "
                "Redis, else the job runs on: retry it (cancelling again is safe)",
                job_id=job_id,
            ) from None
        except RedisResponseError as exc:
            if (why := write_refusal(exc)) is None:
                raise
            raise Unavailable(
                f"could not cancel job {job_id}: Redis refuses writes: {why}; the job is "
                "not affected by this error",
                job_id=job_id,
            ) from None
        if outcome is Outcome.MISSING or job is None:
            raise JobNotFound(job_id)
        if outcome is Outcome.APPLIED:
            after_terminal(
                self.store, self._scheduler, self.settings.max_in_flight, job, time.time()
            )
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
        match = _CURSOR.match(cursor) if isinstance(cursor, str) else None
        if match is None or (match["scan"] and int(match["scan"]) >= 2**64):
            raise RequestError("cursor", "is not a cursor this listing gave out")
        scan, skip = int(match["scan"] or 0), int(match["skip"] or 0)
        found: list[Job] = []
        examined = 0
        try:
            while True:
                following, ids = self.store.scan_ids(scan, _SCAN_COUNT)
                skip = min(skip, len(ids))  # the step shrank: jobs expired since
                for index in range(skip, len(ids)):
                    job = self.store.get(ids[index])
                    examined += 1
                    if job is None or (state is not None and job.state is not state):
                        continue
                    if owner is not None and job.owner != owner:
                        continue
                    found.append(job)
                    if len(found) == limit and index + 1 < len(ids):
                        return found, f"{scan}.{index + 1}"
                    if len(found) == limit:
                        break
                if following == 0:
                    return found, None
                scan, skip = following, 0
                if len(found) == limit or examined >= _LIST_EXAMINE:
                    return found, f"{scan}.0"
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
        read. Raises :class:`TimeoutError` when ``timeout`` seconds pass first. (This
        reads the record every ``interval`` seconds; the worker itself never waits.)
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(self.update_of(job))
            if job.is_terminal:
                return job
            if give_up is not None and time.monotonic() >= give_up:
                raise TimeoutError(f"job {job_id} is still {job.state.value} after {timeout}s")
            time.sleep(interval)
