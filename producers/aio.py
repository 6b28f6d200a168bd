"""The Python client for asyncio apps (FastAPI, aiohttp, Starlette ...):
``await AsyncClient().run(...)``, the same calls as :class:`~producers.client.Client`.

It does not block the event loop: its Redis calls are awaited (redis-py's asyncio
client), and the host names a request's checks resolve are looked up ahead with the
loop's ``getaddrinfo`` (``worker.urls.resolve_names``; asyncio runs it in the loop's
default executor) after the checks that need no network, and the checks use those
answers, never a blocking lookup. Its records
are written by the same scripts as the workers' and :class:`Client`'s
(``worker.store.aio``). It needs batch mode (``VIDEOQ_POLL_MODE=batch``, the default),
where a new job's create is booked with its record: in chain mode the first step is a
Celery message, and Celery publishes only by blocking, so the constructor raises
:class:`~worker.errors.ModeUnsupported` there.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.download import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, download_video
from worker.errors import JobNotFound, ModeUnsupported, Unavailable, WaitTimeout
from worker.job import Job
from worker.request import (
    GenerationRequest,
    check_image_hosts,
    image_refs,
    parse_request,
    request_payload,
)
from worker.settings import Settings, load_settings
from worker.states import ACTIVE_STATES, ErrorKind, JobState
from worker.store import Outcome
from worker.store.aio import AsyncJobStore, connect_async
from worker.urls import resolve_names

from . import failures
from .images import ImageSource, resolve_image_url
from .listing import SCAN_COUNT, Page
from .submission import CREATE_ERRORS, CreateTries, check_submission, check_webhook_url
from .updates import Update

# ``on_update``: a function or a coroutine function of an :class:`Update`.
OnUpdate = Callable[[Update], object]
_READ_ERRORS = (RedisConnectionError, RedisTimeoutError, RedisResponseError)


class AsyncClient:
    """:class:`~producers.client.Client` for asyncio: every call is awaited.

    ``AsyncClient()`` reads the same settings as the workers; ``AsyncClient(redis_url=
    ...)`` overrides the Redis URL. Use it as ``async with AsyncClient() as client:``,
    or call :meth:`aclose` when done. One client serves one event loop.
    """

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or load_settings()
        if redis_url:
            settings = settings.model_copy(update={"redis_url": redis_url})
        if settings.poll_mode != "batch":
            raise ModeUnsupported(
                "AsyncClient needs VIDEOQ_POLL_MODE=batch (the default): in chain mode a "
                "new job starts with a Celery message, which only the blocking Client "
                "sends (producers.Client)"
            )
        self.settings = settings
        self.store = AsyncJobStore(connect_async(settings), settings)
        # Creates go through a store without redis-py's own retries: submit retries
        # them itself, knowing whether an attempt may have reached Redis.
        self._create_store = AsyncJobStore(
            connect_async(settings.model_copy(update={"redis_retries": 0})), settings
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await self.store.aclose()
        await self._create_store.aclose()

    def _read_failed(self, what: str, exc: Exception, job_id: str | None = None) -> Unavailable:
        return failures.read_failed(self.settings.redis_url, what, exc, job_id)

    async def submit(
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
        """``Client.submit``: validate and store a job (its create booked); its id.

        ``image`` is a local image as in ``Client.submit``; a ``Path`` is read in this
        call (a file of at most 7.5 MB): pass ``(bytes, content type)`` to read it your
        own way."""
        image_url = resolve_image_url(image_url, image, self.settings.max_request_bytes)
        payload = request_payload(image_url, prompt, duration, **upstream_options)
        request = parse_request(payload, resolve=None)  # image hosts: in submit_request
        return await self.submit_request(
            request, idempotency_key=idempotency_key, webhook_url=webhook_url, owner=owner
        )

    async def submit_request(
        self,
        request: GenerationRequest,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
    ) -> str:
        """``Client.submit_request``: the same checks, the same errors. The checks that
        need no network come first; then the host names the URL policy judges (the
        images', and the webhook's unless ``VIDEOQ_ALLOW_PRIVATE_URLS``) are resolved on
        this loop and judged by those answers, so a request from
        ``parse_request(payload, resolve=None)`` (no blocking lookup) is checked fully."""
        check_submission(self.settings, request, idempotency_key, webhook_url, resolve=None)
        webhook = None if self.settings.allow_private_urls else webhook_url
        images = image_refs(request)
        answers = await resolve_names([*images.values(), webhook])
        check_image_hosts(images, answers)
        if webhook is not None:
            check_webhook_url(self.settings, webhook, answers)
        now = time.time()
        new_id = uuid.uuid4().hex
        tries = CreateTries(self.settings, new_id)
        for attempt in tries:
            try:
                job_id, _ = await self._create_store.create(
                    new_id,
                    request,
                    accepted_at=now,
                    deadline_at=now + self.settings.deadline,
                    idempotency_key=idempotency_key,
                    webhook_url=webhook_url,
                    owner=owner,
                    book=True,
                )
                return job_id
            except CREATE_ERRORS as exc:
                await asyncio.sleep(tries.failed(exc, attempt))
        raise AssertionError("unreachable: the last try returns or raises")

    async def cancel(self, job_id: str, *, owner: str | None = None) -> Job:
        """``Client.cancel``: end a job ``cancelled``; its record. The slot it frees goes
        to the next job in line at once; its webhook, if it has one, is sent by a
        worker's sweeper (within ``VIDEOQ_STALL_TIMEOUT``), not by this call."""
        if owner is not None:
            await self.get(job_id, owner=owner)
        try:
            outcome = await self.store.transition(
                job_id,
                ACTIVE_STATES,
                JobState.CANCELLED,
                {"error_kind": ErrorKind.CANCELLED, "error_message": "cancelled by the caller"},
            )
            job = await self.store.get(job_id)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise failures.cancel_unreachable(self.settings.redis_url, job_id, exc) from None
        except RedisResponseError as exc:
            if (refused := failures.cancel_refused(job_id, exc)) is None:
                raise
            raise refused from None
        if outcome is Outcome.MISSING or job is None:
            raise JobNotFound(job_id)
        if outcome is Outcome.APPLIED and self.settings.max_in_flight:
            try:
                woken = await self.store.next_in_line()
                await self.store.book_creates(dict.fromkeys((j.id for j in woken), time.time()))
            except RedisError as exc:  # the cancel stands all the same
                failures.note_wake_failed(job_id, exc)
        return job

    async def list_jobs(
        self,
        state: JobState | None = None,
        cursor: str = "0",
        limit: int = 50,
        *,
        owner: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """``Client.list_jobs``: one page of jobs, and the next page's cursor."""
        page = Page(cursor, limit, state, owner)
        try:
            while True:
                page.step(*await self.store.scan_ids(page.scan, SCAN_COUNT))
                while ids := page.unread():
                    if (done := page.take(await self.store.get_many(ids))) is not None:
                        return done
                if (done := page.end_step()) is not None:
                    return done
        except _READ_ERRORS as exc:
            raise self._read_failed("list jobs", exc) from None

    async def get(self, job_id: str, *, owner: str | None = None) -> Job:
        """``Client.get``: the job's record, or :class:`JobNotFound`."""
        try:
            job = await self.store.get(job_id)
        except _READ_ERRORS as exc:
            raise self._read_failed(f"read job {job_id}", exc, job_id) from None
        if job is None or (owner is not None and job.owner != owner):
            raise JobNotFound(job_id)
        return job

    async def update_of(self, job: Job) -> Update:
        """``Client.update_of``: the job's record and its place in line."""
        place = None
        if job.state is JobState.QUEUED and self.settings.max_in_flight:
            try:
                place = await self.store.place_in_line(job.id)
            except _READ_ERRORS as exc:
                raise self._read_failed(f"read job {job.id}", exc, job.id) from None
        return Update(job, place, time.time())

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        *,
        interval: float = 0.5,
        on_update: OnUpdate | None = None,
    ) -> Job:
        """``Client.wait``: the job once it has ended, reading it every ``interval``
        seconds without blocking the loop. ``on_update`` (a function or a coroutine
        function) gets an :class:`Update` after every read. Raises
        :class:`~worker.errors.WaitTimeout` after ``timeout`` seconds."""
        give_up = time.monotonic() + (timeout or 0.0)
        while True:
            job = await self.get(job_id)
            if on_update is not None:
                called = on_update(await self.update_of(job))
                if inspect.isawaitable(called):
                    await called
            if job.is_terminal:
                return job
            if timeout is not None and time.monotonic() >= give_up:
                raise WaitTimeout(job, timeout)
            failures.check_overdue(job, self.settings, time.time())
            await asyncio.sleep(interval)

    async def save(
        self,
        job: Job,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Path:
        """``job.save(path)`` awaited on this loop: the same checks and limits, private
        hosts refused unless ``VIDEOQ_ALLOW_PRIVATE_URLS``. Raises
        :class:`~worker.errors.DownloadFailed`."""
        return await download_video(
            job.require_video(),
            path,
            allow_private=self.settings.allow_private_urls,
            max_bytes=max_bytes,
            timeout=timeout,
        )

    async def run(
        self,
        image_url: str | None = None,
        prompt: str | None = None,
        duration: int | str = 5,
        *,
        timeout: float | None = None,
        on_update: OnUpdate | None = None,
        interval: float = 0.5,
        **options: object,
    ) -> Job:
        """``Client.run``: submit, wait, and return the completed record; raises
        :class:`~worker.errors.JobFailed` or :class:`~worker.errors.WaitTimeout`."""
        job_id = await self.submit(image_url, prompt, duration, **options)  # type: ignore[arg-type]
        job = await self.wait(job_id, timeout, interval=interval, on_update=on_update)
        return failures.completed(job)
