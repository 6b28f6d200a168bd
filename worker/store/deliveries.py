"""Webhook deliveries as the job store keeps them: the lease on a delivery, each
attempt on the record, and the schedule of pending webhooks (``Keys.webhooks``, what
the sweeper reads). The delivery itself is :mod:`worker.webhooks`."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .base import StoreBase


class Deliveries(StoreBase):
    """The job store's webhook bookkeeping (a part of :class:`~worker.store.JobStore`)."""

    def webhook_attempt(
        self,
        job_id: str,
        attempt: Mapping[str, object],
        state: str,
        next_at: float | None,
        *,
        lease: str = "",
    ) -> int:
        """Record one delivery attempt made under ``lease`` (from :meth:`claim_webhook`);
        ``next_at`` None means no more tries. Returns -1, writing nothing, when the
        lease ran out and another delivery holds the webhook."""
        return int(
            self._scripts["webhook_attempt"](
                keys=[self.keys.job(job_id), self.keys.webhooks()],
                args=[
                    json.dumps(attempt),
                    state,
                    "" if next_at is None else repr(next_at),
                    job_id,
                    lease,
                ],
            )
        )

    def claim_webhook(self, job_id: str, now: float, lease_until: float) -> str | None:
        """Take the lease on a pending webhook's delivery: the lease (to record the
        attempt under), or None when it is not pending or a delivery in progress holds
        it."""
        lease = repr(lease_until)
        result = self._scripts["claim_webhook"](
            keys=[self.keys.job(job_id), self.keys.webhooks()],
            args=[repr(now), lease, job_id],
        )
        return lease if int(result) == 1 else None

    def webhooks_due(self, now: float, limit: int) -> list[str]:
        return self._due_by(self.keys.webhooks(), now, limit)

    def forget_webhook(self, job_id: str) -> None:
        self.redis.zrem(self.keys.webhooks(), job_id)

    def postpone_webhook(self, job_id: str, due_at: float) -> None:
        self._later(self.keys.webhooks(), job_id, due_at)
