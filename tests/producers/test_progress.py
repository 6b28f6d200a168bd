"""The progress display: states, elapsed time, remaining deadline; quiet when piped."""

from __future__ import annotations

import io

from producers.progress import Progress, describe, ordinal, summary
from producers.updates import Update
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
    assert "(upstream error: HTTP 429; retrying now)" in retrying


def test_describe_says_when_an_upstream_error_is_retried() -> None:
    create = job(JobState.QUEUED, last_error="HTTP 503: down", next_create_at=109.0)
    assert describe(create, now=101.0).endswith("(upstream error: HTTP 503: down; retrying in 8 s)")
    poll = job(JobState.GENERATING, last_error="connection refused", next_poll_at=104.0)
    assert "connection refused; retrying in 3 s" in describe(poll, now=101.0)
    assert "retrying now" in describe(poll, now=104.0)  # due: the poll is under way


def test_describe_shows_the_place_in_line() -> None:
    line = describe(job(JobState.QUEUED), now=101.0, place=3)
    assert line.endswith("waiting for a slot, 3rd in line")
    assert "in line" not in describe(job(JobState.SUBMITTING), now=101.0, place=3)
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "101st",
        "111th",
    ]  # fmt: skip


def test_piped_output_shows_an_outage_while_the_state_stays() -> None:
    """A job stuck in one state while the upstream fails: each new error, and each new
    retry time, gets a line; an unchanged one does not."""
    out = io.StringIO()
    clock = FakeClock(100.0)
    progress = Progress(out, clock=clock, heartbeat=60.0)

    def shown(**kw: object) -> str:
        before = len(out.getvalue())
        clock.advance(0.5)
        progress.update([Update(job(JobState.QUEUED, **kw), None, clock.now)])
        return out.getvalue()[before:]

    assert "queued" in shown()
    assert "HTTP 503: down; retrying in 2 s" in shown(
        last_error="HTTP 503: down", next_create_at=103.0
    )
    assert shown(last_error="HTTP 503: down", next_create_at=103.0) == ""
    assert "retrying in 4 s" in shown(last_error="HTTP 503: down", next_create_at=105.5)
    assert "connection refused" in shown(last_error="connection refused", next_create_at=105.5)


def test_piped_output_shows_the_line_moving() -> None:
    out = io.StringIO()
    progress = Progress(out, clock=FakeClock(100.0), heartbeat=60.0)
    for place in (2, 2, 1):
        progress.update([Update(job(JobState.QUEUED), place, 100.0)])
    text = out.getvalue()
    assert text.count("2nd in line") == 1 and text.count("1st in line") == 1


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
