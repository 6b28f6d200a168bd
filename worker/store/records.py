"""Job records: creating, reading and listing them, their state changes, the active
set (what the sweeper reads) and the counters behind the metrics.

Each state change is a compare-and-set in one script (``transition.lua``): it applies
only when the record is in one of the expected states (and, where given, its fencing
field matches), so a late or duplicate task can never change a terminal record or race
a live one.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from ..job import Job
from ..keys import Keys
from ..request import GenerationRequest
from ..settings import Settings
from ..states import ErrorKind, JobState
from . import encoding
from .books import PollBooks
from .budget import Budget
from .calls import Fence, NewJob, Outcome, create_call, created, outcome, transition_call
from .deliveries import Deliveries
from .scripts import register

_SCAN_STEP = 1000  # job keys per SCAN step when looking for ids or the newest jobs


def _number(text: object) -> float:
    """A stored time as a number (0 when missing or not a finite number)."""
    try:
        value = float(str(text))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


class JobStore(PollBooks, Deliveries):
    """The job store: these records, the claims and books (:class:`PollBooks`), webhook
    bookkeeping (:class:`Deliveries`), and the concurrency budget (``budget``)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.retention = settings.retention
        self.stall_timeout = settings.stall_timeout
        self._scripts = register(
            client,
            "create",
            "create_failed",
            "keep_generation_id",
            "transition",
            "claim_polls",
            "schedule_polls",
            "take_creates",
            "claim_creates",
            "webhook_attempt",
            "claim_webhook",
        )
        self.budget = Budget(client, self.keys, settings.max_in_flight, self.get)

    # --- creating and reading ------------------------------------------------------------

    def create(
        self,
        job_id: str,
        request: GenerationRequest,
        *,
        accepted_at: float,
        deadline_at: float,
        idempotency_key: str | None = None,
        due_at: float | None = None,
        webhook_url: str | None = None,
        owner: str | None = None,
        book: bool = False,
    ) -> tuple[str, bool]:
        """Store a new ``queued`` job. Returns ``(job id, created)``.

        With an idempotency key already in use (by the same ``owner``), returns the
        existing job's id and ``created=False``; a different request or webhook under
        the same key raises :class:`IdempotencyConflict`. The sweeper starts the job if
        its first step has not started by ``due_at`` (default: ``accepted_at`` + the
        stall timeout). Inline ``data:`` images are kept out of the record's
        ``request`` (see :meth:`full_request`). ``book``: batch mode, the create is
        put in the creates book in the same script (no message to lose).
        """
        job = NewJob(
            job_id,
            request,
            accepted_at,
            deadline_at,
            idempotency_key,
            due_at,
            webhook_url,
            owner,
            book,
        )
        call = create_call(
            self.keys,
            job,
            retention=self.retention,
            stall_timeout=self.stall_timeout,
            line=bool(self.budget.limit),
        )
        return created(job, self._scripts["create"](keys=call.keys, args=call.args))

    def create_failed(self, job_id: str, request: object, kind: ErrorKind, message: str) -> None:
        """Record a job refused by the worker (a foreign ``send_task`` with bad input).
        A redelivery finds the first delivery's record and writes nothing."""
        now = time.time()
        fields = {
            "id": job_id,
            "state": JobState.FAILED,
            "request": json.dumps({"refused": str(request)[:500]}),
            "created_at": now,
            "updated_at": now,
            "finished_at": now,
            "deadline_at": now,
            "error_kind": kind,
            "error_message": message,
        }
        self._scripts["create_failed"](
            keys=[self.keys.job(job_id), self.keys.stats()],
            args=[job_id, self.retention, encoding.fmt(kind), *encoding.pairs(fields)],
        )

    def get(self, job_id: str) -> Job | None:
        return self.get_many([job_id])[0]

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """Several records (each with its request) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
            pipe.get(self.keys.request(job_id))
        raw = pipe.execute()
        return [encoding.job_from(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]

    def full_request(self, job: Job) -> dict[str, Any]:
        """The job's request as submitted, inline images included: the payload key
        when the record holds placeholders, else the record's own ``request``."""
        raw = self.redis.get(self.keys.payload(job.id))
        if raw:
            full: dict[str, Any] = json.loads(raw)
            return full
        return job.request

    def create_claim(self, job_id: str) -> tuple[str, float]:
        """The token and time of the current create claim (``("", 0.0)`` if none)."""
        token, claim_at = self.redis.hmget(self.keys.job(job_id), ["claim_token", "claim_at"])
        return str(token or ""), float(claim_at or 0.0)

    def keep_generation_id(self, job_id: str, generation_id: str) -> bool:
        """On a job cancelled during its create, still record the upstream id."""
        noted = self._scripts["keep_generation_id"](
            keys=[self.keys.job(job_id)], args=[generation_id]
        )
        return int(noted) == 1

    def scan_ids(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN step over the job keys: (next cursor, 0 at the end; job ids)."""
        prefix_len = len(self.keys.job(""))
        following, keys = self.redis.scan(cursor, match=self.keys.job_pattern(), count=count)
        return int(following), [str(k)[prefix_len:] for k in keys]

    def ids_starting_with(self, start: str, limit: int) -> list[str]:
        """Up to ``limit`` ids of jobs whose id starts with ``start`` (a SCAN over the
        job keys, matching that prefix only)."""
        prefix_len = len(self.keys.job(""))
        found: dict[str, None] = {}  # SCAN may return a key twice
        cursor = 0
        while True:
            cursor, keys = self.redis.scan(
                cursor, match=self.keys.job_pattern(start), count=_SCAN_STEP
            )
            found.update(dict.fromkeys(str(k)[prefix_len:] for k in keys))
            if int(cursor) == 0 or len(found) >= limit:
                return list(found)[:limit]

    def newest_ids(
        self, limit: int, state: JobState | None = None, examine: int = 100_000
    ) -> tuple[list[str], bool]:
        """The ids of the ``limit`` newest jobs (by ``created_at``, newest first),
        optionally in one state, and whether every record was examined.

        Reads each record's ``created_at`` and ``state`` (a SCAN step of job keys, then
        one pipelined read for the step) and keeps only the newest ``limit``; it stops
        after about ``examine`` records, and the ids are then the newest of those."""
        prefix_len = len(self.keys.job(""))
        newest: list[tuple[float, str]] = []  # a min-heap of (created_at, id)
        kept: set[str] = set()
        examined = 0
        cursor = 0
        while True:
            cursor, keys = self.redis.scan(cursor, match=self.keys.job_pattern(), count=_SCAN_STEP)
            pipe = self.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, ["created_at", "state"])
            for key, (stamp, current) in zip(keys, pipe.execute() if keys else [], strict=True):
                examined += 1
                job_id = str(key)[prefix_len:]
                if current is None or job_id in kept:
                    continue  # expired since the SCAN step, or a key SCAN gave twice
                if state is not None and current != state.value:
                    continue
                item = (_number(stamp), job_id)
                if len(newest) < limit:
                    heapq.heappush(newest, item)
                    kept.add(job_id)
                elif item > newest[0]:
                    kept.discard(heapq.heapreplace(newest, item)[1])
                    kept.add(job_id)
            complete = int(cursor) == 0
            if complete or examined >= examine:
                return [job_id for _, job_id in sorted(newest, reverse=True)], complete

    # --- the active set (what the sweeper reads) ---------------------------------------

    def overdue(self, now: float, limit: int) -> list[str]:
        """Ids of unfinished jobs whose next step should have started by ``now``."""
        return self._due_by(self.keys.active(), now, limit)

    def postpone(self, job_id: str, due_at: float) -> None:
        """Move a job's due time later (never earlier; never re-adds a finished job)."""
        self._later(self.keys.active(), job_id, due_at)

    def forget(self, job_id: str) -> None:
        """Drop a job from the active set (its record is gone or terminal)."""
        self.redis.zrem(self.keys.active(), job_id)

    def active_count(self) -> int:
        return int(self.redis.zcard(self.keys.active()))

    # --- metrics -----------------------------------------------------------------------

    def note_upstream_error(self, kind: str) -> None:
        """Count one failed upstream call (``rate_limited``, ``timeout`` ...). Best
        effort: a counter Redis refuses must not decide what happens to the job."""
        with contextlib.suppress(redis.RedisError):
            self.redis.hincrby(self.keys.stats(), f"upstream_error:{kind}", 1)

    def stats(self) -> dict[str, float]:
        """The raw counters behind the metrics (see ``worker.metrics``)."""
        raw = self.redis.hgetall(self.keys.stats())
        return {str(k): float(v) for k, v in raw.items()}

    # --- the one state change ------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        allowed: Iterable[JobState],
        new_state: JobState,
        fields: Mapping[str, object] | None = None,
        *,
        fence: Fence | None = None,
        increment: str | None = None,
        now: float | None = None,
        due_at: float | None = None,
    ) -> Outcome:
        """Move a job to ``new_state`` if it is in ``allowed`` (and the fence holds).

        ``due_at``: when the job's next step should have started; past it (plus the
        stall timeout, which the caller adds) the sweeper resumes the job.
        """
        call = transition_call(
            self.keys,
            job_id,
            allowed,
            new_state,
            fields,
            fence=fence,
            increment=increment,
            now=time.time() if now is None else now,
            due_at=due_at,
            retention=self.retention,
        )
        return outcome(self._scripts["transition"](keys=call.keys, args=call.args))
