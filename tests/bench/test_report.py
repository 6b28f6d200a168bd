"""The benchmark's arithmetic, on a made-up run: lag, detection, lateness, 429s, gaps,
in flight, CPU and memory."""

from __future__ import annotations

from typing import Any

import pytest

from bench.contenders import Run
from bench.harness import Sample, Scenario
from bench.report import figures, percentile
from bench.run import table

API = "/v2/generate/video/kling/generation"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def call(t: float, method: str, gen_id: str | None, code: int = 200) -> dict[str, Any]:
    return {"t": t, "method": method, "path": API, "generation_id": gen_id, "status_code": code}


def _made_up() -> tuple[Run, Scenario, list[dict[str, Any]], list[dict[str, Any]]]:
    scenario = Scenario(n=2, generation_time=5.0, poll_interval=1.0)
    run = Run(
        "x",
        {},
        t0=100.0,
        submitted=100.5,
        ended=110.0,
        worker_cpu=2.0,
        redis_cpu=0.5,
        sim_cpu=1.0,
    )
    # job a: created at 101, done upstream at 106, said completed at 106.3, terminal 106.4
    # job b: created at 102, done upstream at 107, said completed at 107.5, terminal 108.0
    run.results = {"a": (106.4, "completed", "ga"), "b": (108.0, "completed", "gb")}
    run.baseline = Sample(100.0, 50_000_000, 1_000_000)
    run.samples = [
        Sample(101.0, 50_000_000, 1_000_000, 0.0, 0.0, 0.0),
        Sample(103.0, 50_010_000, 1_006_000, 1.0, 0.2, 0.2),  # both in flight here
        Sample(107.0, 50_000_000, 1_000_000, 1.5, 0.4, 0.6),
        Sample(109.0, 50_000_000, 1_000_000, 2.0, 0.5, 1.0),
    ]
    generations = [
        {"id": "ga", "created_at": 101.0, "generation_time": 5.0},
        {"id": "gb", "created_at": 102.0, "generation_time": 5.0},
    ]
    requests = [
        call(101.0, "POST", "ga"),
        call(101.5, "POST", None, 429),  # a refused create
        call(102.0, "POST", "gb"),
        call(99.0, "GET", "old"),  # before t0
        call(102.1, "GET", "ga"),  # 0.1 late
        call(103.6, "GET", "gb"),  # 0.6 late
        call(104.1, "GET", "gb"),  # 0.5 early
        call(105.0, "GET", "gb", 429),  # refused: not a poll
        call(106.3, "GET", "ga"),  # 3.2 late; said completed
        call(107.5, "GET", "gb"),  # 2.4 late (due 104.1 + 1); said completed
    ]
    return run, scenario, generations, requests


def test_figures_from_a_made_up_run() -> None:
    run, scenario, generations, requests = _made_up()
    row = figures(run, scenario, generations, requests)
    assert row["completed"] == 2 and row["jobs_lost"] == 0
    assert row["completion_lag_s"]["max"] == 1.0  # b: 108.0 - 107.0
    assert row["completion_lag_s"]["p50"] == 0.4  # a: 106.4 - 106.0
    assert row["detection_delay_s"]["p50"] == 0.1  # a: 106.4 - 106.3
    assert row["detection_delay_s"]["max"] == 0.5  # b: 108.0 - 107.5
    # lateness, sorted: -0.5, 0.1, 0.6, 2.4, 3.2 (with the 429 as a poll, p50 would be 0.1)
    assert row["poll_lateness_s"]["p50"] == 0.6
    assert row["poll_lateness_s"]["max"] == 3.2
    # gaps: a 4.2; b 0.5 and 3.4 (with the 429 as a poll: 0.5, 0.9, 2.5)
    assert row["poll_gap_s"] == {"p50": 3.4, "p95": 4.2, "p99": 4.2, "max": 4.2}
    assert row["polls"] == 5 and row["upstream_requests"] == 9
    assert row["upstream_429"] == 2 and row["upstream_429_share"] == 0.2222
    assert row["request_rate_per_s"] == 1.4  # 9 calls from 101.0 to 107.5
    assert row["answered_rate_per_s"] == 1.1  # 7 of them not refused
    assert row["upstream_requests_per_job"] == 4.5
    assert row["makespan_s"] == 8.0
    assert row["peak_in_flight"] == 2 and row["all_created_before_first_done"] is True
    assert row["creates"] == 2
    assert row["creates_after_last_submit_s"] == 1.5  # 102.0 - 100.5
    assert row["first_to_last_create_s"] == 1.0
    assert row["create_rate_per_s"] == 2.0
    assert row["cpu_ms_per_poll"] == {"worker": 400.0, "redis": 100.0, "simulator": 200.0}
    # after the last create (102): samples 103..109, 4 polls in that window
    steady = row["cpu_ms_per_poll_after_creates"]
    assert (steady["worker"], steady["redis"], steady["simulator"]) == (250.0, 75.0, 200.0)
    assert steady["polls"] == 4
    memory = row["memory_at_peak"]
    assert memory["worker_bytes_per_in_flight_job"] == 5000
    assert memory["redis_bytes_per_in_flight_job"] == 3000


def test_peak_in_flight_is_upstream_and_memory_per_job_is_against_it() -> None:
    """Records stay open after their generation is done upstream: the old definition
    (records in flight) would say 3 here, the simulator says 2."""
    scenario = Scenario(n=3, generation_time=2.0, poll_interval=1.0)
    run = Run("x", {}, t0=10.0, submitted=10.1, ended=22.0, worker_cpu=1.0, redis_cpu=0.1)
    run.results = {
        "1": (14.0, "completed", "g1"),  # done upstream at 12, noticed at 14
        "2": (14.0, "completed", "g2"),  # done upstream at 13
        "3": (21.0, "completed", "g3"),  # done upstream at 20
    }
    generations = [
        {"id": "g1", "created_at": 10.0, "generation_time": 2.0},
        {"id": "g2", "created_at": 11.0, "generation_time": 2.0},
        {"id": "g3", "created_at": 12.5, "generation_time": 7.5},
    ]
    run.baseline = Sample(10.0, 1_000_000, 500_000)
    run.samples = [
        Sample(10.5, 1_000_000, 500_000),  # 1 in flight upstream: not near the peak
        Sample(12.6, 1_030_000, 506_000),  # g2 and g3 upstream; three records open
        Sample(15.0, 1_000_000, 500_000),  # g3 alone
    ]
    row = figures(run, scenario, generations, [])
    assert row["peak_in_flight"] == 2
    assert row["peak_records_in_flight"] == 3
    assert row["all_created_before_first_done"] is False  # g3 came after g1 was done
    assert row["memory_at_peak"]["worker_bytes_per_in_flight_job"] == 15000
    assert row["memory_at_peak"]["redis_bytes_per_in_flight_job"] == 3000
    assert row["detection_delay_s"]["max"] is None  # no polls logged, so no answers


def test_a_job_that_never_ended_is_lost_unless_the_run_was_cut_off() -> None:
    run, scenario, generations, requests = _made_up()
    del run.results["b"]
    assert figures(run, scenario, generations, requests)["jobs_lost"] == 1
    run.capped = True
    row = figures(run, scenario, generations, requests)
    assert row["jobs_lost"] is None and row["unfinished_at_cap"] == 1


def test_the_table_shows_the_new_figures() -> None:
    run, scenario, generations, requests = _made_up()
    row = figures(run, scenario, generations, requests)
    row["scenario"] = {"n": 2, "poll_interval_s": 1.0, "sim_rate_limit": 50.0}
    lines = table([row]).splitlines()
    cells = dict(zip(lines[0].split(" | "), lines[2].split(" | "), strict=True))
    assert cells["scenario"] == "2 @ 1s rl50"
    assert cells["peak fly"] == "2"
    assert cells["detect p50/p99/max"] == "0.1/0.5/0.5"
    assert cells["429 (share)"] == "2 (22.2%)"
    assert cells["ms/poll w+r+s after creates"] == "250+75+200"
    assert cells["B/job w/r"] == "5000/3000"
    row["all_created_before_first_done"] = False
    assert table([row]).splitlines()[2].split(" | ")[5] == "2*"


@pytest.mark.parametrize("field", ["poll_gap_s", "detection_delay_s", "poll_lateness_s"])
def test_spreads_have_percentiles_and_max(field: str) -> None:
    run, scenario, generations, requests = _made_up()
    assert set(figures(run, scenario, generations, requests)[field]) == {
        "p50",
        "p95",
        "p99",
        "max",
    }
