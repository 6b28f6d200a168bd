"""The concurrency budget (``VIDEOQ_MAX_IN_FLIGHT``): at most that many jobs hold a slot
(``Keys.slots``) at once; the rest wait in line (``Keys.waiting``), in acceptance
order. A job joins the line when it is created (``create.lua``) and leaves its slot or
its place in line when it finishes (``transition.lua``)."""

from __future__ import annotations

from collections.abc import Callable

import redis

from ..job import Job
from ..keys import Keys
from ..states import JobState
from .scripts import register


class Budget:
    """The slots and the line for them, reached as ``JobStore.budget``. ``limit``: the
    cap (0: none, and no job joins the line); ``read``: a job's record by id."""

    def __init__(
        self, client: redis.Redis, keys: Keys, limit: int, read: Callable[[str], Job | None]
    ) -> None:
        self.redis = client
        self.keys = keys
        self.limit = limit
        self._read = read
        self._acquire = register(client, "acquire")["acquire"]

    def acquire_slot(self, job_id: str, accepted_at: float, limit: int, now: float) -> bool:
        """Take a slot for this job (True), or wait in line for one (False)."""
        result = self._acquire(
            keys=[self.keys.slots(), self.keys.waiting()],
            args=[job_id, limit, repr(now), repr(accepted_at)],
        )
        return int(result) == 1

    def next_in_line(self, limit: int) -> list[Job]:
        """The waiting jobs that free slots are for, oldest first (stale entries dropped)."""
        free = limit - self.in_flight_slots()
        out: list[Job] = []
        while free > len(out):
            ids = self.redis.zrange(self.keys.waiting(), len(out), free - 1)
            if not ids:
                break
            for job_id in ids:
                job = self._read(str(job_id))
                if job is None or job.state is not JobState.QUEUED:
                    self.redis.zrem(self.keys.waiting(), str(job_id))
                    break  # re-read the line from where we are
                out.append(job)
        return out

    def place_in_line(self, job_id: str) -> int | None:
        """Where a job waits for a slot: 1 is next; None when it is not waiting (it holds
        a slot, has ended, or no cap is set)."""
        rank = self.redis.zrank(self.keys.waiting(), job_id)
        return rank + 1 if isinstance(rank, int) else None

    def in_flight_slots(self) -> int:
        return int(self.redis.zcard(self.keys.slots()))
