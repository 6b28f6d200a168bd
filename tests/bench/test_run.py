"""``python -m bench`` end to end, small: every contender runs, the report adds up.

No timing is asserted here: the figures are the benchmark's to report, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_a_small_bench_run_writes_a_consistent_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--scenario",
            "30:2:0.5",
            "--contenders",
            "videoq,videoq-batch,videoq-chain,blocking,asyncio",
            "--cap",
            "60",
            "--blocking-cap",
            "3",
            "--blocking-concurrency",
            "2",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = {r["contender"]: r for r in report["rows"]}
    assert set(rows) == {"videoq", "videoq-batch", "videoq-chain", "blocking", "asyncio"}
    for name in ("videoq", "videoq-batch", "videoq-chain", "asyncio"):
        row = rows[name]
        assert (row["completed"], row["jobs_lost"], row["capped"]) == (30, 0, False), name
        assert row["states"] == {"completed": 30}
        # at least a create and a poll per job; the simulator's log is the source
        assert row["upstream_requests"] >= 60 and row["polls"] >= 30
        assert row["completion_lag_s"]["p50"] is not None
        assert row["detection_delay_s"]["p50"] is not None
        assert 0 < row["peak_in_flight"] <= 30 and row["creates"] == 30
        assert row["upstream_429"] == 0  # no --sim-rate
        assert row["cpu_ms_per_poll"]["simulator"] is not None
    # "videoq" runs the worker's default mode; the others set theirs
    default = Settings.model_fields["poll_mode"].default
    assert rows["videoq"]["config"]["mode"] == default
    assert rows["videoq"]["config"]["mode_set_by_bench"] is False
    assert rows["videoq-batch"]["config"]["mode"] == "batch"
    assert rows["videoq-chain"]["config"]["mode"] == "chain"
    assert rows["videoq-batch"]["memory_at_peak"]["redis_used_mb"] > 0
    assert rows["asyncio"]["memory_at_peak"]["redis_used_mb"] is None  # it uses no Redis
    blocking = rows["blocking"]
    assert blocking["capped"] and blocking["config"]["concurrency"] == 2
    assert blocking["completed"] + blocking["unfinished_at_cap"] == 30
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in rows:
        assert name in done.stdout  # the printed table
