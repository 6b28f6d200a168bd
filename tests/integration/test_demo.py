"""``videoq demo`` from the installed console script: runs, prints a table of the jobs,
cleans up all but its logs, whose directory is its last line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = str(Path(sys.executable).with_name("videoq"))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOQ_", "AIMLAPI_"))}
    return env  # nothing configured: the demo starts its own Redis


def _pids_and_port(stderr: str) -> tuple[list[int], int]:
    worker = int(re.search(r"Worker: pid (\d+)", stderr).group(1))  # type: ignore[union-attr]
    port = int(re.search(r"redis://127\.0\.0\.1:(\d+)/0", stderr).group(1))  # type: ignore[union-attr]
    return [worker], port


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie is gone for our purposes
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def kept() -> Iterator[list[Path]]:
    """The log directories a demo kept: removed after the test."""
    dirs: list[Path] = []
    yield dirs
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


def _logs_line(stdout: str, kept: list[Path]) -> Path:
    """The demo's last line names its logs' directory (kept, then removed by the test)."""
    last = stdout.rstrip("\n").splitlines()[-1]
    match = re.fullmatch(r"Logs: (\S+)  \(([a-z., ]+); kept after the demo\)", last)
    assert match and "worker.log" in match.group(2).split(", "), stdout[-2000:]
    kept.append(Path(match.group(1)))
    return kept[-1]


def test_demo_runs_every_job_to_the_end_and_cleans_up(kept: list[Path]) -> None:
    done = subprocess.run(
        [SCRIPT, "demo", "--jobs", "4", "--generation-time", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    logs = _logs_line(done.stdout, kept)
    assert done.returncode == 0, done.stderr[-3000:]
    # A short table (a header and a row per job), the summary, the logs' directory.
    lines = done.stdout.rstrip("\n").splitlines()
    assert len(lines) == 1 + 4 + 2, done.stdout
    assert lines[0].split() == ["job", "state", "seconds", "credits", "video", "or", "error"]
    rows = [line.split(maxsplit=4) for line in lines[1:5]]
    assert all(re.fullmatch(r"[0-9a-f]{12}", row[0]) for row in rows)
    assert sorted(row[1] for row in rows) == ["completed", "completed", "completed", "failed"]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)  # seconds, credits
    for _, state, _, _, outcome in rows:  # job 4 is [sim:error]
        if state == "completed":
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\S+\.mp4\S*", outcome)
        else:
            assert outcome == "upstream_error: GenerationError: simulated failure"
    assert lines[5].startswith("Done: 4 jobs, 4 upstream creates, ")
    assert lines[5].endswith(", 1 answered 429 and retried.")
    # The logs outlive the demo, in the system's temporary directory.
    assert logs.parent == Path(tempfile.gettempdir()) and logs.name.startswith("videoq-demo-")
    assert b" ready." in (logs / "worker.log").read_bytes()
    assert (logs / "flower.log").stat().st_size > 0
    assert f"(log: {logs / 'worker.log'})" in done.stderr
    assert "Flower: http://127.0.0.1:" in done.stderr
    pids, port = _pids_and_port(done.stderr)
    assert all(_gone(pid) for pid in pids) and _port_closed(port)


def test_demo_stopped_with_sigterm_cleans_up(tmp_path: Path, kept: list[Path]) -> None:
    logs = ["--logs", str(tmp_path / "logs")]
    proc = subprocess.Popen(
        [SCRIPT, "demo", "--jobs", "2", "--generation-time", "60", "--no-flower", *logs],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = ""
    give_up = time.monotonic() + 60
    while "progress:" not in seen:
        line = proc.stderr.readline()
        assert line and time.monotonic() < give_up, seen
        seen += line
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in rest
    assert _logs_line(out, kept) == tmp_path / "logs"  # --logs: there, and kept
    assert (tmp_path / "logs" / "worker.log").exists()
    pids, port = _pids_and_port(seen)
    assert all(_gone(pid) for pid in pids) and _port_closed(port)
