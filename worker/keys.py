"""Every Redis key name videoq uses, and their lifetimes, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Upper bounds (seconds, from acceptance) of the completion-latency histogram.
LATENCY_BUCKETS = (30, 60, 120, 180, 240, 300, 420, 600, 900, 1200)

# Task names are a public contract: foreign apps call them with send_task.
GENERATE_TASK = "videoq.generate_video"
POLL_TASK = "videoq.poll_video"
WEBHOOK_TASK = "videoq.deliver_webhook"
TICK_TASK = "videoq.poll_tick"
CREATE_TICK_TASK = "videoq.create_tick"
# Not a task: the name of the Flower row a batch tick sends (task events only) for each
# job it ended failed or timed out, under the job's id.
JOB_ROW = "videoq.job"


def task_label(job_id: str, step: str, number: int) -> str:
    """What Flower shows as a task's arguments (``kwargsrepr``): the job first, then the
    step and its attempt or poll number: ``job 3f2a…e9, poll 3``. Flower cuts the
    column at 400 px, so the job id (32 characters) must start near its left edge. Short,
    no secrets."""
    return f"job {job_id}, {step} {number}"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``VIDEOQ_KEY_PREFIX``)."""

    prefix: str

    def job(self, job_id: str) -> str:
        """Hash: the job record."""
        return f"{self.prefix}:job:{job_id}"

    def job_pattern(self, id_prefix: str = "") -> str:
        """SCAN pattern of the job records, or of those whose id starts with
        ``id_prefix`` (its glob characters escaped, so they match only themselves)."""
        escaped = re.sub(r"([\\*?\[\]])", r"\\\1", id_prefix)
        return f"{self.prefix}:job:{escaped}*"

    def active(self) -> str:
        """Sorted set: every unfinished job id, scored by the time its next step is due
        to have started. The sweeper resumes jobs whose score has passed."""
        return f"{self.prefix}:active"

    def stats(self) -> str:
        """Hash: counters for the metrics (jobs by state, latency buckets, errors,
        credits), kept up to date by the store's scripts, and the rate limit's
        upstream call counters (``upstream_calls:<kind>``, ``upstream_throttled:<kind>``)."""
        return f"{self.prefix}:stats"

    def slots(self) -> str:
        """Sorted set: jobs holding one of the ``VIDEOQ_MAX_IN_FLIGHT`` slots."""
        return f"{self.prefix}:slots"

    def waiting(self) -> str:
        """Sorted set: jobs waiting for a slot, scored by acceptance time (FIFO)."""
        return f"{self.prefix}:waiting"

    def webhooks(self) -> str:
        """Sorted set: jobs with a webhook still to deliver, scored by the next try."""
        return f"{self.prefix}:webhooks"

    def polls(self) -> str:
        """Sorted set (batch mode): generating jobs scored by when their next poll is
        due, or, while a tick holds them, by when that tick's lease ends."""
        return f"{self.prefix}:polls"

    def creates(self) -> str:
        """Sorted set (batch mode): queued jobs scored by when their upstream create is
        due, or, while a create tick holds them, by when its lease ends."""
        return f"{self.prefix}:creates"

    def rate(self) -> str:
        """Hash: the fleet-wide upstream rate limit (``worker/lua/rate.lua``): the
        schedule's next free start (``tat``), each kind's half-rate meter
        (``tat:create``, ``tat:poll``), when each kind last had calls held back
        (``pressed:<kind>``) and the fleet pause's end (``pause``), all on Redis's
        clock. Its counters are in :meth:`stats`."""
        return f"{self.prefix}:rate"

    def tick_prefix(self) -> str:
        """Strings ``<prefix>:tick:<book>:<ms>`` (book ``poll`` or ``create``), expiring
        soon after: set by the pump that sent the tick message for the slot ending at
        ``<ms>``, so the whole fleet sends one per slot and book."""
        return f"{self.prefix}:tick:"

    def sweeper_lock(self) -> str:
        """String with a short expiry: held by the one worker sweeping this tick."""
        return f"{self.prefix}:sweeper"

    def idempotency(self, key: str, owner: str | None = None) -> str:
        """String: ``<job id> <request fingerprint>`` for an idempotency key, in the
        caller's own space when the caller is named (an owner has no ``:`` or ``@``,
        so the two spaces never meet)."""
        if owner:
            return f"{self.prefix}:idem@{owner}:{key}"
        return f"{self.prefix}:idem:{key}"

    def request(self, job_id: str) -> str:
        """String: the request (JSON) the record shows, inline images replaced by
        placeholders; written with the record, with the same lifetime. Kept out of
        the record's hash so that the hash stays in Redis's compact encoding."""
        return f"{self.prefix}:request:{job_id}"

    def payload(self, job_id: str) -> str:
        """String: the full request (JSON) of a job whose record holds placeholders for
        inline ``data:`` images; written with the record, with the same lifetime."""
        return f"{self.prefix}:payload:{job_id}"
