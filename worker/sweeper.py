"""The sweeper: resume jobs whose chain broke, from their records.

A chain can break without any task failing: a worker killed with SIGKILL takes its
held countdown tasks with it (Redis hands them back only after the visibility
timeout), a worker that loses its broker connection drops them, and a publish can
fail. The job record stays, and the store keeps every unfinished job in an *active
set* scored by when its next step should have started. A job whose score has passed
(by more than ``VIDEOQ_STALL_TIMEOUT``) is resumed: the step its state calls for is
published again. The chain's fencing makes that safe if the old chain was only late:
of two polls with the same sequence number only one claims the job; a second create
is never made (the create claim).

Every worker runs a :class:`SweeperThread`; a short Redis lock lets one of them sweep
per interval, so a fleet needs no extra process, and any surviving or restarted
worker sweeps. ``videoq sweep`` runs one sweep by hand.

While the queue has a backlog, the sweep waits: overdue jobs are then most likely
waiting in that backlog, not lost, and resuming them would only add to it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import bootsteps

from . import logs
from .runtime import Runtime
from .states import JobState


@dataclass
class SweepReport:
    overdue: int = 0
    backlog: int = 0
    resumed: Counter[str] = field(default_factory=Counter)
    forgotten: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "overdue": self.overdue,
            "backlog": self.backlog,
            "resumed": dict(self.resumed),
            "forgotten": self.forgotten,
        }


def queue_backlog(client: redis.Redis, queue: str) -> int:
    """Messages waiting in the broker queue (kombu keeps a Redis list per queue)."""
    return int(client.llen(queue))


def sweep(rt: Runtime, backlog: int) -> SweepReport:
    """Resume every overdue job (up to ``sweep_batch``) by republishing its next step."""
    settings = rt.settings
    now = rt.clock()
    report = SweepReport(backlog=backlog)
    ids = rt.store.overdue(now, settings.sweep_batch)
    report.overdue = len(ids)
    if backlog > 0:
        if ids:
            logs.event("sweep.deferred", overdue=len(ids), backlog=backlog)
        return report
    _resume_webhooks(rt, now, report)
    rt.wake_waiting()
    for job_id in ids:
        job = rt.store.get(job_id)
        if job is None or job.is_terminal:
            rt.store.forget(job_id)
            report.forgotten += 1
            continue
        deadline_at = job.deadline_at or now
        # First push the due time out, so the next sweep leaves this job alone while
        # the resumed step is on its way.
        rt.store.postpone(job_id, now + settings.stall_timeout)
        if job.state is JobState.GENERATING:
            rt.scheduler.poll(job_id, deadline_at, seq=job.polls + 1, errors=0, countdown=0)
        else:  # queued, or submitting (the generate step settles a stuck create claim)
            rt.scheduler.generate(job_id, deadline_at, attempt=job.attempts + 1, countdown=0)
        report.resumed[job.state.value] += 1
        last_heard = job.next_poll_at or job.updated_at or now
        logs.event(
            "job.resumed",
            level=logging.WARNING,
            job_id=job_id,
            state=job.state.value,
            attempt=job.attempts,
            silent_for=round(now - last_heard, 3),
        )
    return report


def _resume_webhooks(rt: Runtime, now: float, report: SweepReport) -> None:
    """Webhooks whose next try is overdue (their task was lost): try again now."""
    stall = rt.settings.stall_timeout
    for job_id in rt.store.webhooks_due(now - stall, rt.settings.sweep_batch):
        job = rt.store.get(job_id)
        if job is None or job.webhook_state != "pending":
            rt.store.forget_webhook(job_id)
            continue
        rt.store.postpone_webhook(job_id, now + stall)
        rt.scheduler.webhook(job_id, len(job.webhook_attempts) + 1, countdown=0)
        report.resumed["webhook"] += 1


class SweeperThread(threading.Thread):
    """Sweeps every ``sweep_interval`` seconds when this worker holds the sweep lock."""

    def __init__(self, rt: Runtime, owner: str) -> None:
        super().__init__(name="videoq-sweeper", daemon=True)
        self.rt = rt
        self.owner = owner
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = self.rt.settings.sweep_interval
        while not self.stopping.wait(interval):
            try:
                self.sweep_once()
            except Exception as exc:  # Redis down, a publish failed: try next time
                logs.event(
                    "sweep.failed",
                    level=logging.WARNING,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )

    def sweep_once(self) -> SweepReport | None:
        settings = self.rt.settings
        client = self.rt.store.redis
        lock_ms = max(1, int(settings.sweep_interval * 900))
        if not client.set(self.rt.store.keys.sweeper_lock(), self.owner, nx=True, px=lock_ms):
            return None
        report = sweep(self.rt, queue_backlog(client, settings.queue))
        if report.resumed or report.forgotten:
            logs.event("sweep.done", **report.as_dict())
        return report

    def stop(self) -> None:
        self.stopping.set()


class SweeperStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """A worker bootstep that runs the :class:`SweeperThread` in the main process."""

    label = "videoq sweeper"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.thread: SweeperThread | None = None

    def start(self, parent: Any) -> None:
        rt = parent.app.runtime()  # the worker's app: worker.app.VideoqCelery
        if rt.settings.sweep_interval > 0:
            self.thread = SweeperThread(rt, owner=str(parent.hostname))
            self.thread.start()

    def stop(self, parent: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
