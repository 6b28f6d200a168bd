"""The claims of polls and creates, and batch mode's two books.

Batch mode keeps its work in two sorted sets (books), scored by when each item is due:
polls (``Keys.polls``) and creates (``Keys.creates``). A tick takes what is due and
leases it (its score moves to the lease's end), so a tick that dies leaves its work
due again. Chain mode claims one poll or one create at a time, through the same
scripts (``claim_polls.lua``, ``claim_creates.lua``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .base import StoreBase


@dataclass(frozen=True)
class ClaimedPoll:
    """A poll its claim holds: the record's ``poll_seq`` already is ``seq``."""

    job_id: str
    deadline_at: float
    seq: int
    errors: int  # transient errors in a row (batch mode keeps them on the record)
    generation_id: str
    due_at: float = 0.0  # when it was due (its place in line in batch mode's book)


@dataclass(frozen=True)
class BookedPoll:
    """A poll to put in batch mode's book. ``seq``: the number of the poll step that
    books it; the booking then also notes on the record, if that step still holds the
    claim (``poll_seq == seq``), the next poll's time and ``last_error``, and moves the
    job's due time in the active set. None: a first poll, booked as it is."""

    job_id: str
    due_at: float
    errors: int = 0  # transient errors in a row, kept on the record
    seq: int | None = None
    last_error: str | None = ""  # None: the record's is kept


class PollBooks(StoreBase):
    """The job store's claims and books (a part of :class:`~worker.store.JobStore`)."""

    # --- polls ---------------------------------------------------------------------------

    def claim_poll(self, job_id: str, seq: int, now: float, due_at: float) -> ClaimedPoll | None:
        """Chain mode: claim poll ``seq`` of a generating job (None: the job is not
        generating, or this poll is a duplicate or stale one). ``due_at``: when the
        sweeper may take the job for lost."""
        claimed, _ = self._claim(now, due_at, due_at, ["ids", job_id, seq])
        return claimed[0] if claimed else None

    def claim_due_polls(
        self, horizon: float, limit: int, now: float, lease_until: float, due_at: float
    ) -> tuple[list[ClaimedPoll], int]:
        """Batch mode: claim up to ``limit`` polls due by ``horizon`` in the book (the
        same claim as :meth:`claim_poll`), leased in the book until ``lease_until``;
        also how many more are due."""
        return self._claim(now, lease_until, due_at, ["due", repr(horizon), limit])

    def _claim(
        self, now: float, lease_until: float, due_at: float, mode: list[str | int]
    ) -> tuple[list[ClaimedPoll], int]:
        raw = self._scripts["claim_polls"](
            keys=[self.keys.polls(), self.keys.active()],
            args=[repr(now), repr(lease_until), repr(due_at), self.keys.job(""), *mode],
        )
        claimed = [
            ClaimedPoll(
                str(raw[i]),
                float(raw[i + 1] or 0),
                int(raw[i + 2]),
                int(raw[i + 3] or 0),
                str(raw[i + 4]),
                float(raw[i + 5]),
            )
            for i in range(1, len(raw), 6)
        ]
        return claimed, int(raw[0])

    def schedule_polls(self, polls: Iterable[BookedPoll], now: float) -> int:
        """Batch mode: book polls, in one script; those fenced by a poll number also
        note their step's outcome on the record (see :class:`BookedPoll`). Returns how
        many were booked (a fenced one whose record moved on is not)."""
        args: list[str | int] = [self.keys.job(""), repr(now), repr(self.stall_timeout)]
        for p in polls:
            args += [
                p.job_id,
                repr(p.due_at),
                p.errors,
                "" if p.seq is None else p.seq,
                "0" if p.last_error is None else "1",
                p.last_error or "",
            ]
        if len(args) == 3:
            return 0
        return int(
            self._scripts["schedule_polls"](keys=[self.keys.polls(), self.keys.active()], args=args)
        )

    def renew_poll_leases(self, job_ids: Iterable[str], lease_until: float, due_at: float) -> None:
        """Batch mode: a tick still waiting for these jobs' answers keeps its lease."""
        ids = list(job_ids)
        if ids:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.keys.polls(), dict.fromkeys(ids, lease_until), xx=True, gt=True)
            pipe.zadd(self.keys.active(), dict.fromkeys(ids, due_at), xx=True, gt=True)
            pipe.execute()

    # --- creates -------------------------------------------------------------------------

    def book_creates(self, creates: Mapping[str, float]) -> None:
        """Batch mode: book creates ``{job id: due time}`` (a retry, a job woken from
        the line, a resumed one)."""
        if creates:
            self.redis.zadd(self.keys.creates(), dict(creates))

    def unbook_create(self, job_id: str) -> None:
        self.redis.zrem(self.keys.creates(), job_id)

    def take_creates(self, horizon: float, limit: int, lease_until: float) -> tuple[list[str], int]:
        """Batch mode: lease up to ``limit`` creates due by ``horizon``; also how many
        more are due."""
        raw = self._scripts["take_creates"](
            keys=[self.keys.creates()], args=[repr(horizon), limit, repr(lease_until)]
        )
        return [str(i) for i in raw[1:]], int(raw[0])

    def claim_creates(
        self, job_ids: Iterable[str], token: str, now: float, due_at: float
    ) -> set[str]:
        """The create claim (``queued -> submitting`` under ``token``) of each job still
        queued; the ids claimed. Both modes' one way to start an upstream create."""
        ids = list(job_ids)
        if not ids:
            return set()
        claimed = self._scripts["claim_creates"](
            keys=[self.keys.active(), self.keys.stats(), self.keys.creates()],
            args=[repr(now), repr(due_at), self.keys.job(""), token, *ids],
        )
        return {str(i) for i in claimed}
