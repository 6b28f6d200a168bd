"""What the parts of the job store share: the client, the key names, the scripts, and
the two schedules (the active set, pending webhooks), sorted sets of due times."""

from __future__ import annotations

import redis
from redis.commands.core import Script

from ..keys import Keys


class StoreBase:
    """The state :class:`~worker.store.JobStore` sets up, for the parts it is made of."""

    redis: redis.Redis
    keys: Keys
    stall_timeout: float
    _scripts: dict[str, Script]  # by name (``worker/lua/<name>.lua``)

    def _due_by(self, schedule: str, now: float, limit: int) -> list[str]:
        ids = self.redis.zrangebyscore(schedule, "-inf", repr(now), start=0, num=limit)
        return [str(i) for i in ids]

    def _later(self, schedule: str, job_id: str, due_at: float) -> None:
        self.redis.zadd(schedule, {job_id: due_at}, xx=True, gt=True)
