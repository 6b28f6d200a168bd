"""The example web app (examples/flask_app.py) renders what a job holds without
trusting it. The code blocks of README.md and docs/ are covered by
tests/test_doc_examples.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.flask_app import create_app
from worker.job import Job, JobError
from worker.states import JobState

ROOT = Path(__file__).resolve().parent.parent


class OneJob:
    def __init__(self, job: Job) -> None:
        self.job = job

    def get(self, job_id: str) -> Job:
        return self.job


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "JAVASCRIPT:alert(1)", "file:///etc/passwd", "data:text/html,x"]
)
def test_a_video_url_that_is_not_http_is_never_a_link(url: str) -> None:
    job = Job(id="j1", state=JobState.COMPLETED, video_url=url)
    page = create_app(OneJob(job)).test_client().get("/jobs/j1").get_data(as_text=True)  # type: ignore[arg-type]
    assert "href" not in page
    assert "alert(1)" not in page or "<a" not in page


def test_an_http_video_url_is_a_link_and_text_is_escaped() -> None:
    job = Job(id="j1", state=JobState.COMPLETED, video_url='https://cdn.example/v.mp4?a="b"')
    page = create_app(OneJob(job)).test_client().get("/jobs/j1").get_data(as_text=True)  # type: ignore[arg-type]
    assert 'href="https://cdn.example/v.mp4?a=&quot;b&quot;"' in page
    failed = Job(id="j2", state=JobState.FAILED, error=JobError("upstream_error", "<script>x"))
    page = create_app(OneJob(failed)).test_client().get("/jobs/j2").get_data(as_text=True)  # type: ignore[arg-type]
    assert "<script>" not in page and "&lt;script&gt;x" in page
