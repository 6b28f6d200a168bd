"""Finding jobs for people: the newest jobs, and a job by the start of its id
(``Client.recent`` and ``Client.find``, behind ``videoq list``, ``status`` and
``cancel``). Redis errors pass through; the client words them."""

from __future__ import annotations

from collections.abc import Callable

from worker.errors import AmbiguousJobId, JobNotFound, RequestError
from worker.job import Job
from worker.states import JobState
from worker.store import JobStore

RECENT_LIMIT = 1000  # the most jobs one call of newest() returns
RECENT_EXAMINE = 100_000  # the most records newest() reads to find them
ID_PREFIX_MIN = 8  # the shortest start of an id find() takes
_CANDIDATES = 6  # ids find() reads when a prefix is ambiguous (it shows 5)


def newest(store: JobStore, state: JobState | None, limit: int) -> list[Job]:
    """The ``limit`` newest jobs (by ``created_at``), newest first, optionally in one
    state.

    Reads every record's ``created_at`` and ``state`` (1000 a round trip, pipelined)
    and keeps only the newest ``limit``, so memory stays bounded; past
    :data:`RECENT_EXAMINE` records it stops, and returns the newest of those read. A
    job that expires meanwhile is left out.
    """
    if not 1 <= limit <= RECENT_LIMIT:
        raise RequestError("limit", f"must be 1 to {RECENT_LIMIT}")
    ids, _ = store.newest_ids(limit, state, RECENT_EXAMINE)
    jobs = store.get_many(ids) if ids else []
    return [job for job in jobs if job is not None]


def find(
    job_id: str, get: Callable[[str], Job], starting_with: Callable[[str, int], list[str]]
) -> Job:
    """The job with id ``job_id`` (one read, ``get``) or, failing that, the one job
    whose id starts with it (``starting_with``: a SCAN of the job keys).

    Raises :class:`JobNotFound`; :class:`AmbiguousJobId` when several ids start with
    it; :class:`RequestError` (field ``job_id``) when no id is ``job_id`` and it is
    shorter than :data:`ID_PREFIX_MIN`, too short to stand for one.
    """
    try:
        return get(job_id)
    except JobNotFound:
        if len(job_id) < ID_PREFIX_MIN:
            raise RequestError(
                "job_id",
                f"no job with id {job_id!r}, and the start of an id needs at least "
                f"{ID_PREFIX_MIN} characters",
            ) from None
    ids = starting_with(job_id, _CANDIDATES)
    if len(ids) > 1:
        raise AmbiguousJobId(job_id, sorted(ids))
    if not ids:
        raise JobNotFound(job_id)
    return get(ids[0])
