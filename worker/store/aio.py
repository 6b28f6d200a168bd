"""The job store for asyncio callers (:class:`~producers.aio.AsyncClient`): what a
producer does with job records (create, read, list, cancel, the line for slots) on
redis-py's asyncio client.

It writes records only through the scripts the store itself runs, built by the same
functions (:mod:`.calls`), from the same files (:mod:`.scripts`), under the same key
names (``worker.keys``): a record is the same whichever store wrote it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import redis.asyncio
from redis.asyncio.retry import Retry

from ..job import Job
from ..keys import Keys
from ..request import GenerationRequest
from ..settings import Settings
from ..states import JobState
from . import encoding
from .calls import Fence, NewJob, Outcome, create_call, created, outcome, transition_call
from .connection import client_options
from .scripts import register_async


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio Redis client, with the retries of :func:`~worker.store.connect`."""
    return redis.asyncio.Redis.from_url(settings.redis_url, **client_options(settings, Retry))


class AsyncJobStore:
    """A producer's part of :class:`~worker.store.JobStore`, awaitable."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.retention = settings.retention
        self.stall_timeout = settings.stall_timeout
        self.limit = settings.max_in_flight
        self._scripts = register_async(client, "create", "transition")

    async def create(
        self,
        job_id: str,
        request: GenerationRequest,
        *,
        accepted_at: float,
        deadline_at: float,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
        book: bool = False,
    ) -> tuple[str, bool]:
        """``JobStore.create``: store a new ``queued`` job; ``(job id, created)``."""
        job = NewJob(
            job_id,
            request,
            accepted_at,
            deadline_at,
            idempotency_key,
            webhook_url=webhook_url,
            owner=owner,
            book=book,
        )
        call = create_call(
            self.keys,
            job,
            retention=self.retention,
            stall_timeout=self.stall_timeout,
            line=bool(self.limit),
        )
        return created(job, await self._scripts["create"](keys=call.keys, args=call.args))

    async def get(self, job_id: str) -> Job | None:
        return (await self.get_many([job_id]))[0]

    async def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """Several records (each with its request) in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self.keys.job(job_id))
                pipe.get(self.keys.request(job_id))
            raw = await pipe.execute()
        return [encoding.job_from(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    async def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """``JobStore.scan_ids``: one SCAN step over the job keys."""
        prefix_len = len(self.keys.job(""))
        following, keys = await self.redis.scan(cursor, match=self.keys.job_pattern(), count=count)
        return int(following), [str(k)[prefix_len:] for k in keys]

    async def transition(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        new_state: JobState,
        fields: Mapping[str, object] | None = None,
        *,
        fence: Fence | None = None,
        now: float | None = None,
    ) -> Outcome:
        """``JobStore.transition``: the one state change, a compare-and-set."""
        call = transition_call(
            self.keys,
            job_id,
            allowed,
            new_state,
            fields,
            fence=fence,
            increment=None,
            now=time.time() if now is None else now,
            due_at=None,
            retention=self.retention,
        )
        return outcome(await self._scripts["transition"](keys=call.keys, args=call.args))

    # --- the line for slots (``Budget``) and batch mode's creates book ----------------

    async def place_in_line(self, job_id: str) -> int | None:
        """``Budget.place_in_line``: 1 is next; None when the job is not waiting."""
        rank = await self.redis.zrank(self.keys.waiting(), job_id)
        return rank + 1 if isinstance(rank, int) else None

    async def next_in_line(self) -> list[Job]:
        """``Budget.next_in_line``: the waiting jobs free slots are for, oldest first
        (stale entries dropped)."""
        free = self.limit - int(await self.redis.zcard(self.keys.slots()))
        out: list[Job] = []
        while free > len(out):
            ids = await self.redis.zrange(self.keys.waiting(), len(out), free - 1)
            if not ids:
                break
            for job_id in ids:
                job = await self.get(str(job_id))
                if job is None or job.state is not JobState.QUEUED:
                    await self.redis.zrem(self.keys.waiting(), str(job_id))
                    break  # re-read the line from where we are
                out.append(job)
        return out

    async def book_creates(self, creates: Mapping[str, float]) -> None:
        """``JobStore.book_creates``: batch mode's creates ``{job id: due time}``."""
        if creates:
            await self.redis.zadd(self.keys.creates(), dict(creates))

    async def aclose(self) -> None:
        await self.redis.aclose()
