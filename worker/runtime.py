"""What a step of a job runs with: this process's settings, job store, upstream
client, webhook HTTP client and scheduler, and a clock.

The steps (``worker.chain``, ``worker.ticks``, ``worker.intake``, ``worker.webhooks``)
take a :class:`Runtime` as their first argument, so tests drive them with a fake clock,
a fake upstream and a recording scheduler; ``worker.process`` builds the real one,
once per worker process.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .http import BoundedHttp
from .scheduling import Scheduler, after_terminal, wake_waiting
from .settings import Settings
from .store import BookedPoll, JobStore
from .upstream import UpstreamClient


@dataclass
class Runtime:
    settings: Settings
    store: JobStore
    upstream: UpstreamClient
    scheduler: Scheduler
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.Random)
    # Webhook deliveries (guarded against internal addresses); None: webhooks are off.
    http: BoundedHttp | None = None
    # In a batch tick: where a poll step that goes on books its next poll, noted and
    # fenced in one script with the rest of the tick's (see ``worker.ticks``).
    booked: list[BookedPoll] | None = None

    @property
    def upstream_timeout(self) -> float:
        """The longest one upstream call can take."""
        return self.settings.upstream_call_timeout

    def call_timeout(self, deadline_at: float) -> float:
        """How long an upstream call made now may take: never past the job's deadline."""
        return max(0.0, min(self.upstream_timeout, deadline_at - self.clock()))

    def backoff(self, errors: int, retry_after: float | None, floor: float = 0.0) -> float:
        """Exponential backoff with jitter, never below ``Retry-After`` or ``floor``."""
        s = self.settings
        ceiling = min(s.retry_backoff_max, s.retry_backoff * (2 ** min(errors, 30)))
        delay: float = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
        return max(delay, retry_after or 0.0, floor)

    def after_terminal(self, job_id: str) -> None:
        """A job just ended: its webhook, and the jobs waiting for its slot."""
        after_terminal(
            self.store, self.scheduler, self.settings.max_in_flight, job_id, self.clock()
        )

    def wake_waiting(self) -> None:
        """Start the jobs first in line for free slots (``VIDEOQ_MAX_IN_FLIGHT``)."""
        wake_waiting(self.store, self.scheduler, self.settings.max_in_flight, self.clock())
