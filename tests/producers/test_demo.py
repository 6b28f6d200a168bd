"""The demo's ending (``producers.demo``): the jobs' table, and the logs' directory that
outlives the demo."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from producers.demo import logs_dir, table
from worker.job import Job, JobError
from worker.states import JobState

DONE = Job(
    id="0123456789abcdef0123456789abcdef",
    state=JobState.COMPLETED,
    video_url="https://cdn.example/v.mp4",
    credits_used=126000.0,
    created_at=100.0,
    finished_at=112.34,
)
FAILED = Job(
    id="fedcba9876543210fedcba9876543210",
    state=JobState.TIMED_OUT,
    error=JobError("deadline", "still generating at the deadline"),
    created_at=100.0,
    finished_at=160.0,
)


def test_the_table_has_a_line_per_job_with_its_outcome() -> None:
    header, done, failed = table([DONE, FAILED])
    assert header.split() == ["job", "state", "seconds", "credits", "video", "or", "error"]
    assert done.split() == ["0123456789ab", "completed", "12.3", "126000", DONE.video_url]
    assert failed.split(maxsplit=4) == [
        "fedcba987654",
        "timed_out",
        "60.0",
        "-",  # the upstream never said
        "deadline: still generating at the deadline",
    ]
    # aligned: the outcomes start in one column
    assert len({line.index(word) for line, word in [(done, "https"), (failed, "deadline")]}) == 1


def test_the_logs_go_to_a_new_directory_in_the_temporary_directory_or_the_one_asked(
    tmp_path: Path,
) -> None:
    mid_1971 = 365 * 86400 + 180 * 86400
    made = [logs_dir(None, now=mid_1971), logs_dir(None, now=mid_1971)]
    try:
        assert all(d.is_dir() and d.parent == Path(tempfile.gettempdir()) for d in made)
        assert all(d.name.startswith("videoq-demo-1971") for d in made)
        assert made[0] != made[1]  # a new one each time
    finally:
        for d in made:
            shutil.rmtree(d)
    asked = tmp_path / "a" / "logs"
    assert logs_dir(str(asked)) == asked and asked.is_dir()
