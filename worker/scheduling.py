"""How a job's next step is scheduled, by task name, and what follows a job's end.

Both the worker and the producers schedule steps: a worker after each step, the
client when a cancel frees a slot. They share these schedulers, which need only the
job store and a Celery ``send_task``: nothing here imports the task code.

- :class:`TaskScheduler` (chain mode): each step is a Celery message with a countdown.
- :class:`BookScheduler` (batch mode, the default): a poll or a create is an entry in
  its Redis book, with no message; the pump (``worker.pump``) sends the ticks that
  take them. Webhooks are messages in both modes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .job import Job
from .keys import GENERATE_TASK, POLL_TASK, WEBHOOK_TASK, task_label
from .settings import Settings
from .store import BookedPoll, JobStore


class Scheduler(Protocol):
    """Runs a job's next step after a countdown, and never waits for it."""

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None: ...

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None: ...

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None: ...


# ``Celery.send_task``: publishes a task by name, with Celery's publish retries.
SendTask = Callable[..., Any]


class TaskScheduler:
    """Schedules the next step as a countdown message on the videoq queue. Never waits."""

    def __init__(self, send_task: SendTask, queue: str) -> None:
        self.send_task = send_task
        self.queue = queue

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.send_task(
            GENERATE_TASK,
            kwargs={"job_id": job_id, "deadline_at": deadline_at, "attempt": attempt},
            countdown=countdown,
            queue=self.queue,
            kwargsrepr=task_label(job_id, "create", attempt),
        )

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        self.send_task(
            POLL_TASK,
            kwargs={"job_id": job_id, "deadline_at": deadline_at, "seq": seq, "errors": errors},
            countdown=countdown,
            queue=self.queue,
            kwargsrepr=task_label(job_id, "poll", seq),
        )

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        self.send_task(
            WEBHOOK_TASK,
            kwargs={"job_id": job_id, "attempt": attempt},
            countdown=countdown,
            queue=self.queue,
            kwargsrepr=task_label(job_id, "webhook", attempt),
        )


class BookScheduler(TaskScheduler):
    """Batch mode: polls and creates are booked in Redis (``worker.pump`` sends the
    ticks that take them); webhooks are messages, as in chain mode."""

    def __init__(
        self,
        send_task: SendTask,
        queue: str,
        store: JobStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(send_task, queue)
        self.store = store
        self.clock = clock

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        now = self.clock()
        self.store.schedule_polls([BookedPoll(job_id, now + countdown, errors)], now)

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.store.book_creates({job_id: self.clock() + countdown})


def scheduler_for(settings: Settings, store: JobStore, send_task: SendTask) -> Scheduler:
    """The scheduler of ``VIDEOQ_POLL_MODE``."""
    if settings.poll_mode == "batch":
        return BookScheduler(send_task, settings.queue, store)
    return TaskScheduler(send_task, settings.queue)


def wake_waiting(store: JobStore, scheduler: Scheduler, max_in_flight: int, now: float) -> None:
    """Start the jobs first in line for free slots (``VIDEOQ_MAX_IN_FLIGHT``)."""
    if max_in_flight:
        for job in store.budget.next_in_line(max_in_flight):
            scheduler.generate(job.id, job.deadline_at or now, job.attempts + 1, 0)


def after_terminal(
    store: JobStore, scheduler: Scheduler, max_in_flight: int, ended: Job | str, now: float
) -> None:
    """A job just ended (finished, failed, timed out or cancelled): send its webhook,
    and start whoever waits for its slot. ``ended``: the job's record as the ending
    write left it, or its id (the record is then read)."""
    job = store.get(ended) if isinstance(ended, str) else ended
    if job is not None and job.webhook_state == "pending":
        scheduler.webhook(job.id, 1, countdown=0)
    wake_waiting(store, scheduler, max_in_flight, now)
