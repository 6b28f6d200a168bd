"""Progress display for long waits (``submit --wait``, ``demo``): one line per job.

On a terminal the block is redrawn in place once a second; otherwise (CI logs,
pipes) a job's line is printed only when its state changes, plus a heartbeat line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from worker.job import Job
from worker.states import JobState

_MARK = {
    JobState.QUEUED: "·",
    JobState.SUBMITTING: "↑",
    JobState.GENERATING: "…",
    JobState.COMPLETED: "✓",
    JobState.FAILED: "✗",
    JobState.TIMED_OUT: "⧗",
    JobState.CANCELLED: "-",
}


def describe(job: Job, now: float) -> str:
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
        line += f"  (retrying: {job.last_error})"
    return line


def summary(jobs: Sequence[Job]) -> str:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    parts = [f"{state} {counts[state.value]}" for state in JobState if state.value in counts]
    return f"{len(jobs)} job(s): " + " · ".join(parts)


class Progress:
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
        self._seen: dict[str, JobState] = {}
        self._last_beat = clock()
        self._started = clock()

    def update(self, jobs: Sequence[Job]) -> None:
        now = self.clock()
        header = f"[{now - self._started:6.1f}s] {summary(jobs)}"
        lines = [describe(job, now) for job in jobs]
        if self.live:
            if self._drawn:
                self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self.stream.write("\n".join([header, *lines]) + "\n")
            self._drawn = len(lines) + 1
        else:
            changed = [
                line
                for job, line in zip(jobs, lines, strict=True)
                if self._seen.get(job.id) is not job.state
            ]
            if changed or now - self._last_beat >= self.heartbeat:
                self.stream.write("\n".join([header, *changed]) + "\n")
                self._last_beat = now
        self._seen = {job.id: job.state for job in jobs}
        self.stream.flush()
