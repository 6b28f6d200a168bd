"""Progress display for long waits (``submit --wait``, ``demo``): one line per job.

On a terminal the block is redrawn in place at every update; otherwise (CI logs,
pipes) a job's line is printed only when it has news: its state, the upstream error
it is retrying past or that retry's time, or its place in line changed; plus a
heartbeat line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from worker.job import Job
from worker.states import JobState

from .updates import Update

_MARK = {
    JobState.QUEUED: "·",
    JobState.SUBMITTING: "↑",
    JobState.GENERATING: "…",
    JobState.COMPLETED: "✓",
    JobState.FAILED: "✗",
    JobState.TIMED_OUT: "⧗",
    JobState.CANCELLED: "-",
}


def describe(job: Job, now: float, place: int | None = None) -> str:
    """One line for a job: its state, age, deadline and polls, then its video, its
    error, the upstream error it is retrying past (and when it retries), or its place
    in the line for a slot (``place``, 1 = next)."""
    start = job.created_at or now
    end = job.finished_at or now
    line = f"{_MARK[job.state]} {job.id[:12]}  {job.state.value:<10} {end - start:6.1f}s"
    if not job.is_terminal and job.deadline_at:
        line += f"  deadline in {max(0.0, job.deadline_at - now):5.0f}s"
    if job.polls:
        line += f"  polls {job.polls}"
    if job.state is JobState.COMPLETED and job.video_url:
        line += f"  {job.video_url}"
    elif job.error:
        line += f"  {job.error.kind}: {job.error.message}"
    elif job.last_error:
        line += f"  ({retrying(job, now)})"
    if place is not None and job.state is JobState.QUEUED:
        line += f"  waiting for a slot, {ordinal(place)} in line"
    return line


def retry_due(job: Job) -> float | None:
    """When a job retrying past an upstream error makes its next call: the retried
    create's due time while it is queued, the next poll's while it is generating."""
    if job.state is JobState.QUEUED:
        return job.next_create_at
    if job.state is JobState.GENERATING:
        return job.next_poll_at
    return None


def retrying(job: Job, now: float) -> str:
    """``upstream error: <last error>; retrying in 8 s`` (or ``retrying now`` once the
    retry is due or under way)."""
    due = retry_due(job)
    when = f"in {due - now:.0f} s" if due is not None and due - now >= 0.5 else "now"
    return f"upstream error: {job.last_error}; retrying {when}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th ... 11th, 12th, 13th ... 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def summary(jobs: Sequence[Job]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    parts = [f"{state} {counts[state.value]}" for state in JobState if state.value in counts]
    return f"{len(jobs)} job(s): " + " · ".join(parts)


# What a piped display compares: state, last error, its retry's due time, place in line.
_Mark = tuple[JobState, str | None, float | None, int | None]


def _what_shows(item: Job | Update) -> tuple[Job, int | None]:
    if isinstance(item, Update):
        return item.job, item.place_in_line
    return item, None


class Progress:
    """Shows the jobs given to :meth:`update`: records, or a waiting caller's
    :class:`~producers.updates.Update` (which adds the place in line)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.time,
        heartbeat: float = 10.0,
    ) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self.heartbeat = heartbeat
        self._drawn = 0
        self._seen: dict[str, _Mark] = {}
        self._last_beat = clock()
        self._started = clock()

    def update(self, items: Sequence[Job | Update]) -> None:
        now = self.clock()
        shown = [_what_shows(item) for item in items]
        jobs = [job for job, _ in shown]
        header = f"[{now - self._started:6.1f}s] {summary(jobs)}"
        lines = [describe(job, now, place) for job, place in shown]
        # What makes a piped line worth printing again: the state, the upstream error
        # and its retry (an outage shows while the state stays), the place in line.
        marks: dict[str, _Mark] = {
            job.id: (job.state, job.last_error, retry_due(job) if job.last_error else None, place)
            for job, place in shown
        }
        if self.live:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.write("\n".join([header, *lines]) + "\n")
            self._drawn = len(lines) + 1
        else:
            changed = [
                line
                for job, line in zip(jobs, lines, strict=True)
                if self._seen.get(job.id) != marks[job.id]
            ]
            if changed or now - self._last_beat >= self.heartbeat:
                self.stream.write("\n".join([header, *changed]) + "\n")
                self._last_beat = now
        self._seen = marks
        self.stream.flush()
