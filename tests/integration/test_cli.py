"""The installed ``videoq`` console script against a running worker."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

pytestmark = pytest.mark.integration

Run = Callable[..., subprocess.CompletedProcess[str]]
IMG = "https://example.com/portrait.jpg"


def test_submit_wait_then_status_json(videoq_cli: Run) -> None:
    done = videoq_cli(
        "submit", "--image-url", IMG, "--prompt", "cli wait", "--wait", "--timeout", "30"
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert done.stdout == f"{job_id}\n"  # stdout: the job id and nothing else
    assert "completed" in done.stderr  # progress went to stderr

    status = videoq_cli("status", job_id, "--json")
    assert status.returncode == 0
    record = json.loads(status.stdout)
    assert record["state"] == "completed" and record["id"] == job_id
    assert record["generation_id"] and record["video_url"]
    assert record["error"] is None
    assert record["created_at"] <= record["finished_at"] < record["deadline_at"]


def test_submit_wait_on_a_failing_job_exits_1(videoq_cli: Run) -> None:
    done = videoq_cli("submit", "--image-url", IMG, "--prompt", "cli [sim:error]", "--wait")
    assert done.returncode == 1
    assert "failed" in done.stderr and "simulated failure" in done.stderr
    status = videoq_cli("status", done.stdout.strip())
    assert status.returncode == 0 and "failed" in status.stdout


def test_bad_input_from_the_console_script(videoq_cli: Run) -> None:
    done = videoq_cli("submit", "--image-url", IMG, "--duration", "15")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "duration" in done.stderr


def test_unknown_job_from_the_console_script(videoq_cli: Run) -> None:
    done = videoq_cli("status", "no-such-job")
    assert done.returncode == 1 and "no job" in done.stderr


def test_a_worker_that_cannot_start_exits_non_zero_in_one_line(tmp_path: object) -> None:
    import os
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("videoq")
    env = {**os.environ, "VIDEOQ_REDIS_URL": "localhost:6379"}
    for command in (["worker"], ["status", "abc"], ["serve"], ["sweep"]):
        done = subprocess.run(
            [str(script), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=str(tmp_path),
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.startswith("videoq: invalid setting VIDEOQ_REDIS_URL: "), done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
