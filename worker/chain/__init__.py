"""What each step of a job's chain does: create once, then poll until the job ends.

Nothing here sleeps or waits for the upstream to finish: a step does one upstream call,
records the outcome with a compare-and-set, and either ends the job or asks the
``worker.scheduling.Scheduler`` to run the next step after a countdown. The Celery tasks in
``worker.tasks`` are thin bindings of these functions; tests drive them directly with
a fake clock, a fake upstream and a recording scheduler.

Fencing:
- the create is claimed by moving ``queued -> submitting`` with a random token; only
  the holder of that token may record the outcome, so one job gets one create;
- poll ``n`` claims the chain by raising ``poll_seq`` from below ``n`` to ``n``; a
  duplicate or stale poll finds ``poll_seq >= n`` and drops, so a chain never forks;
- every terminal write is a compare-and-set from an active state, so a terminal
  record is final.

A step that ends its job returns what it ended (:class:`Ended`), and None otherwise:
the callers (the task bindings, the ticks) decide what a failed job's task shows.
"""

from .common import DEADLINE_EPSILON, FINAL_LOOK, Ended
from .create import (
    ClaimedCreate,
    accept_foreign,
    claim_batch,
    create_answered,
    prepare_create,
    run_generate,
)
from .poll import PollStep, poll_answered, poll_claimed, poll_out_of_time, run_poll

__all__ = [
    "DEADLINE_EPSILON",
    "FINAL_LOOK",
    "ClaimedCreate",
    "Ended",
    "PollStep",
    "accept_foreign",
    "claim_batch",
    "create_answered",
    "poll_answered",
    "poll_claimed",
    "poll_out_of_time",
    "prepare_create",
    "run_generate",
    "run_poll",
]
