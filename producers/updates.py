"""What a waiting caller is told about its job: :class:`Update`, the argument of
``on_update`` callbacks (``Client.wait``, ``Client.run``, ``AsyncClient``)."""

from __future__ import annotations

from dataclasses import dataclass

from worker.job import Job
from worker.states import JobState


@dataclass(frozen=True)
class Update:
    """A job's progress as of ``at`` (Unix seconds): its record plus where it stands.

    ``place_in_line`` is set (1 = next) while ``VIDEOQ_MAX_IN_FLIGHT`` makes the job wait
    for a slot; ``seconds_left`` is the time to its deadline (None once it has ended).
    """

    job: Job
    place_in_line: int | None
    at: float

    @property
    def state(self) -> JobState:
        return self.job.state

    @property
    def polls(self) -> int:
        """Status polls made so far."""
        return self.job.polls

    @property
    def last_error(self) -> str | None:
        """The last upstream error the job met and is retrying past (None: none)."""
        return self.job.last_error

    @property
    def seconds_left(self) -> float | None:
        if self.job.is_terminal or self.job.deadline_at is None:
            return None
        return max(0.0, self.job.deadline_at - self.at)
