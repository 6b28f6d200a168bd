"""The progress display: states, elapsed time, remaining deadline; quiet when piped."""

from __future__ import annotations

import io

from producers.progress import Progress, describe, summary
from tests.fakes import FakeClock
from worker.job import Job, JobError
from worker.states import JobState


def job(state: JobState, **kw: object) -> Job:
    base: dict[str, object] = {"id": "abcdef0123456789", "created_at": 100.0, "deadline_at": 1100.0}
    base.update(kw)
    return Job(state=state, **base)  # type: ignore[arg-type]


def test_describe_running_job_shows_elapsed_and_deadline() -> None:
    line = describe(job(JobState.GENERATING, polls=3), now=130.0)
    assert "generating" in line and "30.0s" in line and "deadline in   970s" in line
    assert "polls 3" in line


def test_describe_finished_jobs() -> None:
    done = describe(job(JobState.COMPLETED, finished_at=160.0, video_url="https://v"), now=999.0)
    assert "60.0s" in done and "https://v" in done and "deadline" not in done
    failed = describe(
        job(JobState.FAILED, finished_at=101.0, error=JobError("deadline", "late")), 200
    )
    assert "deadline: late" in failed
    retrying = describe(job(JobState.QUEUED, last_error="HTTP 429"), now=101.0)
    assert "retrying: HTTP 429" in retrying


def test_summary_counts_states_in_order() -> None:
    jobs = [job(JobState.COMPLETED), job(JobState.QUEUED), job(JobState.COMPLETED)]
    assert summary(jobs) == "3 job(s): queued 1 · completed 2"


def test_piped_output_prints_changes_and_a_heartbeat_only() -> None:
    out = io.StringIO()
    clock = FakeClock(100.0)
    progress = Progress(out, clock=clock, heartbeat=10.0)
    progress.update([job(JobState.QUEUED)])
    clock.advance(1)
    progress.update([job(JobState.QUEUED)])  # nothing changed: silent
    first = out.getvalue()
    assert first.count("\n") == 2
    clock.advance(1)
    progress.update([job(JobState.GENERATING)])
    assert "generating" in out.getvalue()[len(first) :]
    size = len(out.getvalue())
    clock.advance(10)
    progress.update([job(JobState.GENERATING)])  # heartbeat: header only
    beat = out.getvalue()[size:]
    assert beat.startswith("[") and beat.count("\n") == 1
    assert "\x1b[" not in out.getvalue()


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_output_redraws_in_place() -> None:
    out = Tty()
    progress = Progress(out, clock=FakeClock(100.0))
    progress.update([job(JobState.QUEUED), job(JobState.QUEUED, id="x" * 16)])
    progress.update([job(JobState.QUEUED), job(JobState.QUEUED, id="x" * 16)])
    assert "\x1b[3F\x1b[J" in out.getvalue()  # cursor up over header + 2 lines, clear
