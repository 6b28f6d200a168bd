"""One page of ``list_jobs``, without I/O, for both clients: the cursor, and which
records of each Redis SCAN step go on the page.

A cursor names a SCAN step and how many of its job keys were listed
(``"<SCAN cursor>.<keys listed>"``, ``"0"`` to start), so the next page starts
exactly after the last job examined: over an unchanged set of jobs, no job is
repeated or skipped. A client drives a :class:`Page`: SCAN at ``page.scan`` and pass the step to
``page.step``; read the records ``page.unread()`` names and hand them to ``page.take``
until it returns the page or names none; then ``page.end_step()`` returns the page, or
None to SCAN again.
"""

from __future__ import annotations

import re

from worker.errors import RequestError
from worker.job import Job
from worker.states import JobState

_CURSOR = re.compile(r"^(?:0|(?P<scan>[0-9]{1,20})\.(?P<skip>[0-9]{1,5}))$")
SCAN_COUNT = 200  # fixed: the same SCAN step must give the same keys on every page
_EXAMINE = 5000  # most records one page reads before it returns (fewer) jobs

# A page's jobs, and the next page's cursor (None: no more).
Listed = tuple[list[Job], str | None]


class Page:
    """A page of at most ``limit`` jobs in ``state`` (any: None) of ``owner`` (any:
    None), from ``cursor``. Raises :class:`RequestError` on a cursor this listing did
    not give out."""

    def __init__(self, cursor: str, limit: int, state: JobState | None, owner: str | None) -> None:
        match = _CURSOR.match(cursor) if isinstance(cursor, str) else None
        if match is None or (match["scan"] and int(match["scan"]) >= 2**64):
            raise RequestError("cursor", "is not a cursor this listing gave out")
        self.scan, self._skip = int(match["scan"] or 0), int(match["skip"] or 0)
        self._limit, self._state, self._owner = limit, state, owner
        self.jobs: list[Job] = []
        self._examined = 0
        self._following, self._ids = 0, list[str]()

    def step(self, following: int, ids: list[str]) -> None:
        """Begin the SCAN step at ``self.scan``: its job ids, and the next cursor
        (``following``, 0 at the end)."""
        self._following, self._ids = following, ids
        self._skip = min(self._skip, len(ids))  # the step shrank: jobs expired since

    def unread(self) -> list[str]:
        """The step's ids to read next, at most as many as the page lacks (none: the
        step is done)."""
        if len(self.jobs) == self._limit:
            return []
        return self._ids[self._skip : self._skip + self._limit - len(self.jobs)]

    def take(self, records: list[Job | None]) -> Listed | None:
        """The records of the ids :meth:`unread` gave. Returns the page when it is full
        before the step's end, else None."""
        for job in records:
            self._skip += 1
            self._examined += 1
            if job is None or (self._state is not None and job.state is not self._state):
                continue
            if self._owner is not None and job.owner != self._owner:
                continue
            self.jobs.append(job)
            if len(self.jobs) == self._limit and self._skip < len(self._ids):
                return self.jobs, f"{self.scan}.{self._skip}"
        return None

    def end_step(self) -> Listed | None:
        """The step is done: the page if it is full, the last, or has read enough;
        else None (SCAN at the new ``self.scan``)."""
        if self._following == 0:
            return self.jobs, None
        self.scan, self._skip = self._following, 0
        if len(self.jobs) == self._limit or self._examined >= _EXAMINE:
            return self.jobs, f"{self.scan}.0"
        return None
