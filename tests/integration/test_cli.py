"""The installed ``videoq`` console script against a running worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster
from worker.states import JobState

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


def test_ctrl_c_during_wait_leaves_the_job_running_and_its_short_id_cancels_it(
    cluster: Cluster, videoq_cli: Run
) -> None:
    script = Path(sys.executable).with_name("videoq")
    waiting = subprocess.Popen(
        [str(script), "submit", "--image-url", IMG, "--prompt", "cli [sim:never]", "--wait"],
        env={**os.environ, **cluster.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        job_id = waiting.stdout.readline().strip()
        give_up = time.monotonic() + 20
        while cluster.client.get(job_id).state is not JobState.GENERATING:
            assert time.monotonic() < give_up, "the job did not start"
            time.sleep(0.1)
        waiting.send_signal(signal.SIGINT)
        try:
            _, err = waiting.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            waiting.kill()
            _, err = waiting.communicate()
            raise AssertionError(f"videoq did not stop on SIGINT; its stderr:\n{err}") from None
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == -signal.SIGINT, err  # died of it: a shell sees 130
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert f"job {job_id} keeps running" in last and f"videoq status {job_id}" in last

    short = job_id[:12]  # as the progress lines print it
    status = videoq_cli("status", short, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "generating"  # it kept running
    cancel = videoq_cli("cancel", short)
    assert cancel.returncode == 0, cancel.stderr
    assert "cancelled" in cancel.stdout
    assert cluster.client.get(job_id).state is JobState.CANCELLED


def test_output_into_a_closed_pipe_ends_quietly(cluster: Cluster) -> None:
    job_id = cluster.client.submit(IMG, prompt="cli pipe")
    script = Path(sys.executable).with_name("videoq")
    # As in the Docker image (PYTHONUNBUFFERED=1), each line is written at once, so the
    # later ones may meet the pipe head closed; `true` is gone before anything is written.
    env = {**os.environ, **cluster.env, "PYTHONUNBUFFERED": "1"}
    for command in (f"status {job_id}", "list"):
        done = subprocess.run(
            [
                "bash",
                "-c",
                f"set +o pipefail; {script} {command} | head -1; {script} {command} | true",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0
        assert done.stderr == "", done.stderr
        assert len(done.stdout.splitlines()) == 1


def test_wait_shows_an_upstream_outage_and_output_json_gives_the_record(
    cluster: Cluster, videoq_cli: Run
) -> None:
    cluster.sim.add_fault(status=503, count=2, method="POST", retry_after=1.5, message="outage")
    done = videoq_cli(
        "submit", "--image-url", IMG, "--prompt", "cli outage", "--wait", "--output", "json"
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # one JSON object, and nothing else
    assert record["state"] == "completed" and record["id"][:12] in done.stderr
    lines = done.stderr.splitlines()
    retrying = [i for i, line in enumerate(lines) if "HTTP 503" in line and "retrying in" in line]
    finished = [i for i, line in enumerate(lines) if "completed" in line]
    assert retrying and finished and retrying[0] < finished[0], done.stderr
