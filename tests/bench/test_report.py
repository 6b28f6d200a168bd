"""The benchmark's arithmetic, on a made-up run: lag, lateness, in-flight, memory."""

from __future__ import annotations

from bench.contenders import Run
from bench.harness import Sample, Scenario
from bench.report import figures, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def _made_up() -> tuple[Run, Scenario, list[dict[str, object]], list[dict[str, object]]]:
    scenario = Scenario(n=2, generation_time=5.0, poll_interval=1.0)
    run = Run("x", {}, t0=100.0, submitted=100.5, ended=110.0, worker_cpu=2.0, redis_cpu=0.5)
    # job a: created at 101, done upstream at 106, record terminal at 106.4
    # job b: created at 102, done upstream at 107, record terminal at 108.0
    run.results = {"a": (106.4, "completed", "ga"), "b": (108.0, "completed", "gb")}
    run.baseline = Sample(100.0, 50_000_000, 1_000_000)
    run.samples = [
        Sample(101.0, 50_000_000, 1_000_000, 0.0, 0.0),
        Sample(103.0, 50_010_000, 1_006_000, 1.0, 0.2),  # both in flight here
        Sample(107.0, 50_000_000, 1_000_000, 1.5, 0.4),
        Sample(109.0, 50_000_000, 1_000_000, 2.0, 0.5),
    ]
    generations = [
        {"id": "ga", "created_at": 101.0, "generation_time": 5.0},
        {"id": "gb", "created_at": 102.0, "generation_time": 5.0},
    ]
    api = "/v2/generate/video/kling/generation"
    requests: list[dict[str, object]] = [
        {"t": 101.0, "method": "POST", "path": api, "generation_id": "ga"},
        {"t": 102.0, "method": "POST", "path": api, "generation_id": "gb"},
        {"t": 99.0, "method": "GET", "path": api, "generation_id": "old"},  # before t0
        {"t": 102.1, "method": "GET", "path": api, "generation_id": "ga"},  # 0.1 late
        {"t": 103.6, "method": "GET", "path": api, "generation_id": "gb"},  # 0.6 late
        {"t": 104.1, "method": "GET", "path": api, "generation_id": "gb"},  # 0.5 early
        {"t": 106.4, "method": "GET", "path": api, "generation_id": "ga"},  # 3.3 late
        {"t": 108.0, "method": "GET", "path": api, "generation_id": "gb"},
    ]
    return run, scenario, generations, requests


def test_figures_from_a_made_up_run() -> None:
    run, scenario, generations, requests = _made_up()
    row = figures(run, scenario, generations, requests)
    assert row["completed"] == 2 and row["jobs_lost"] == 0
    assert row["completion_lag_s"]["max"] == 1.0  # b: 108.0 - 107.0
    assert row["completion_lag_s"]["p50"] == 0.4  # a: 106.4 - 106.0
    assert row["poll_lateness_s"]["max"] == 3.3
    assert row["polls"] == 5 and row["upstream_requests"] == 7
    assert row["upstream_requests_per_job"] == 3.5
    assert row["makespan_s"] == 8.0
    assert row["peak_in_flight"] == 2
    assert row["cpu_s_per_1000_polls"] == {"worker": 400.0, "redis": 100.0}
    memory = row["memory_at_peak"]
    assert memory["worker_bytes_per_in_flight_job"] == 5000
    assert memory["redis_bytes_per_in_flight_job"] == 3000


def test_a_job_that_never_ended_is_lost_unless_the_run_was_cut_off() -> None:
    run, scenario, generations, requests = _made_up()
    del run.results["b"]
    assert figures(run, scenario, generations, requests)["jobs_lost"] == 1
    run.capped = True
    row = figures(run, scenario, generations, requests)
    assert row["jobs_lost"] is None and row["unfinished_at_cap"] == 1
