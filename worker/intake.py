"""Batch mode's creates: one task starts every create due in a tick.

Sending one ``generate_video`` message per job caps intake at the rate a worker runs
Celery tasks (about 300 a second on 2 cores). In batch mode a producer stores the job
and books its create in the same script (``JobStore.create(book=True)``), with no
message; a job waiting for a slot, a retry and a resumed job are booked the same way.
The pump sends a create tick when creates are due, and the tick:

- leases up to ``VIDEOQ_POLL_BATCH`` due creates (``JobStore.take_creates``), and asks
  for another tick at once when more are due;
- runs each job's ordinary checks (:func:`chain.prepare_create`: the deadline, the
  ``VIDEOQ_MAX_IN_FLIGHT`` line, the request), then claims them all with the store's
  one create claim (``queued -> submitting`` under a token), as chain mode claims one;
- makes their create calls together on the process's event loop and records each
  answer as it arrives (:func:`chain.create_answered`): exactly one create per job,
  the same as in chain mode. The first polls go to the poll book together.

A tick killed before its claim leaves its creates leased: due again after the lease.
One killed after the claim leaves its jobs ``submitting``: as in chain mode, the
create is never repeated, and the sweeper settles the claim when it times out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import redis

from . import logs
from .answers import Status
from .chain import (
    ClaimedCreate,
    claim_batch,
    create_answered,
    prepare_create,
    run_generate,
)
from .errors import UpstreamError
from .job import Job
from .runtime import Runtime
from .states import JobState
from .ticks import TickReport, TickScheduler, flush_polls

# How long a create tick holds the creates it took before another tick may take them
# (a tick claims them within milliseconds; this only covers a tick that dies first).
CREATE_LEASE = 3.0

# Create calls for a batch, (body, timeout) each, through the rate limit (a create it
# holds back is released and booked again): each answer as it arrives, with its index
# among the calls, or None now and then while none arrives.
FetchCreates = Callable[..., Iterable[tuple[int, Status | UpstreamError] | None]]


def run_create_tick(
    rt: Runtime, tick: float, fetch: FetchCreates, publish: Callable[[], None]
) -> TickReport:
    """Start the creates due by ``tick`` (up to a batch); ``publish()`` sends another
    create tick now, for the rest of a burst."""
    now = rt.clock()
    ids, more = rt.store.take_creates(now, rt.settings.poll_batch, now + CREATE_LEASE)
    report = TickReport("create-tick", taken=len(ids), more=more)
    if more:
        publish()
    collected = TickScheduler(rt.scheduler, rt.clock)
    tick_rt = replace(rt, scheduler=collected)
    ready: dict[str, tuple[Job, dict[str, Any]]] = {}
    for job_id, job in zip(ids, rt.store.get_many(ids), strict=True):
        if job is None or job.state not in (JobState.QUEUED, JobState.SUBMITTING):
            rt.store.unbook_create(job_id)
            continue
        deadline_at = job.deadline_at or now
        if job.state is JobState.SUBMITTING:
            # A resumed job whose create claim is unresolved: the one-job path settles it.
            report.note(run_generate(tick_rt, job_id, deadline_at, job.attempts + 1))
            continue
        body = prepare_create(tick_rt, job, deadline_at, job.attempts + 1)
        if isinstance(body, dict):
            ready[job_id] = (job, body)
        else:
            report.note(body)
    token, claimed = claim_batch(tick_rt, {i: j.attempts + 1 for i, (j, _) in ready.items()})
    started = [(i, *ready[i]) for i in ready if i in claimed]
    calls = [(body, rt.call_timeout(job.deadline_at or now)) for _, job, body in started]
    for item in fetch(calls):
        if item is None:
            flush_polls(rt.store, collected)
            continue
        job_id, job, _ = started[item[0]]
        try:
            claimed_create = ClaimedCreate(job_id, job.deadline_at or now, job.attempts + 1, token)
            report.note(create_answered(tick_rt, claimed_create, item[1]))
        except redis.RedisError as exc:
            report.failed += 1
            logs.event(
                "create.record_failed",
                level=logging.ERROR,
                job_id=job_id,
                state="submitting",
                attempt=job.attempts + 1,
                error=f"{type(exc).__name__}: {str(exc)[:200]}",
            )
    flush_polls(rt.store, collected)
    report.created = len(started)
    logs.event(
        "create_tick.done",
        level=logging.DEBUG,
        tick=round(tick, 3),
        taken=len(ids),
        created=len(started),
        more=more,
        failed=report.failed,
    )
    return report
