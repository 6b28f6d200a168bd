"""``videoq demo`` from the installed console script: runs, prints records, cleans up."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
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


def test_demo_runs_every_job_to_the_end_and_cleans_up() -> None:
    done = subprocess.run(
        [SCRIPT, "demo", "--jobs", "4", "--generation-time", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(chunk) for chunk in re.split(r"(?m)^(?=\{)", done.stdout) if chunk]
    assert len(records) == 4
    states = sorted(r["state"] for r in records)
    assert states == ["completed", "completed", "completed", "failed"]  # job 4 is [sim:error]
    assert all(r["generation_id"] for r in records)
    assert "Flower: http://127.0.0.1:" in done.stderr
    assert "4 upstream creates" in done.stderr and "1 answered 429 and retried" in done.stderr
    pids, port = _pids_and_port(done.stderr)
    assert all(_gone(pid) for pid in pids) and _port_closed(port)


def test_demo_stopped_with_sigterm_cleans_up() -> None:
    proc = subprocess.Popen(
        [SCRIPT, "demo", "--jobs", "2", "--generation-time", "60", "--no-flower"],
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
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted" in rest
    pids, port = _pids_and_port(seen)
    assert all(_gone(pid) for pid in pids) and _port_closed(port)
