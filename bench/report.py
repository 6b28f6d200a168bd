"""Turn a contender's run and the simulator's log into the figures the report lists.

- completion lag: the job record's terminal time minus the moment the simulator's
  generation was done (created_at + generation_time);
- poll lateness: each status request's time minus when it was due, i.e. the previous
  request for that generation (the create, for the first poll) plus the poll interval;
- in flight at t: jobs whose generation exists upstream and whose record is not yet
  terminal; memory "at peak" is the largest sample taken while at least 95% of the
  peak in-flight count was in flight.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any

from bench.contenders import Run
from bench.harness import Sample, Scenario

PERCENTILES = (50, 95, 99)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"p{p}": _r(percentile(values, p)) for p in PERCENTILES}
    out["max"] = _r(max(values)) if values else None
    return out


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def figures(
    run: Run,
    scenario: Scenario,
    generations: list[dict[str, Any]],
    requests: list[dict[str, Any]],
) -> dict[str, Any]:
    done_at = {g["id"]: g["created_at"] + g["generation_time"] for g in generations}
    created_at = {g["id"]: g["created_at"] for g in generations}
    api = [r for r in requests if r["path"].startswith("/v2/") and run.t0 <= r["t"]]
    polls_by_gen: dict[str, list[float]] = defaultdict(list)
    for r in api:
        if r["method"] == "GET" and r["generation_id"]:
            polls_by_gen[r["generation_id"]].append(r["t"])
    polls = sum(len(v) for v in polls_by_gen.values())

    lateness: list[float] = []
    for gen_id, times in polls_by_gen.items():
        due = created_at.get(gen_id)
        for t in sorted(times):
            if due is not None:
                lateness.append(t - (due + scenario.poll_interval))
            due = t

    lags, terminal_times, states = [], [], defaultdict(int)
    for terminal_t, state, gen_id in run.results.values():
        states[state] += 1
        terminal_times.append(terminal_t)
        if state == "completed" and gen_id in done_at:
            lags.append(terminal_t - done_at[gen_id])

    series = in_flight_series(run, created_at)
    peak = max((n for _, n in series), default=0)
    at_peak = memory_at_peak(run, created_at, peak)
    base = run.baseline
    mem_per_job = redis_per_job = None
    if at_peak is not None and base is not None and peak:
        mem_per_job = (at_peak.memory - base.memory) / peak
        redis_per_job = (
            (at_peak.redis_memory - base.redis_memory) / peak if run.redis_cpu is not None else None
        )
    steady = steady_cpu(run, created_at, polls_by_gen)
    completed = states.get("completed", 0)
    makespan = (max(terminal_times) - run.t0) if terminal_times else None
    unfinished = scenario.n - len(run.results)
    return {
        "contender": run.name,
        "config": run.config,
        "jobs": scenario.n,
        "completed": completed,
        "states": dict(states),
        "unfinished_at_cap": unfinished if run.capped else 0,
        "jobs_lost": None if run.capped else unfinished,
        "capped": run.capped,
        "submit_s": _r(run.submitted - run.t0, 2),
        "makespan_s": _r(makespan, 2),
        "throughput_jobs_per_s": _r(completed / makespan if makespan else None, 2),
        "completion_lag_s": spread(lags),
        "poll_lateness_s": spread(lateness),
        "upstream_requests": len(api),
        "upstream_requests_per_job": _r(len(api) / max(1, len(run.results)), 2),
        "polls": polls,
        "cpu_s": {
            "worker": _r(run.worker_cpu, 2),
            "redis": _r(run.redis_cpu, 2),
            "simulator": _r(run.sim_cpu, 2),
        },
        "cpu_s_per_1000_polls": {
            "worker": _r(1000 * run.worker_cpu / polls if polls else None),
            "redis": _r(
                1000 * run.redis_cpu / polls if polls and run.redis_cpu is not None else None
            ),
        },
        "cpu_ms_per_poll_after_creates": steady,
        "cores_used_avg": {
            "worker": _r(run.worker_cpu / makespan if makespan else None, 2),
            "redis": _r(
                run.redis_cpu / makespan if makespan and run.redis_cpu is not None else None, 2
            ),
        },
        "peak_in_flight": peak,
        "memory_at_peak": {
            "worker_pss_mb": _r(at_peak.memory / 2**20, 1) if at_peak else None,
            "worker_pss_baseline_mb": _r(base.memory / 2**20, 1) if base else None,
            "worker_bytes_per_in_flight_job": _r(mem_per_job, 0),
            "redis_used_mb": _r(at_peak.redis_memory / 2**20, 1)
            if at_peak and run.redis_cpu is not None
            else None,
            "redis_bytes_per_in_flight_job": _r(redis_per_job, 0),
        },
        "series": {
            "in_flight": [[_r(t - run.t0, 2), n] for t, n in series],
            "lag": sorted(
                [_r(t - run.t0, 2), _r(t - done_at[g], 3)]
                for t, s, g in run.results.values()
                if s == "completed" and g in done_at
            ),
        },
    }


def in_flight_series(
    run: Run, created_at: dict[str, float], step: float = 0.25
) -> list[tuple[float, int]]:
    # a generation whose job never ended stays in flight to the end of the run
    all_starts = sorted(created_at.values())
    ends = sorted(t for t, _, g in run.results.values() if g in created_at)
    end_t = max([run.ended, *ends]) if ends else run.ended
    series = []
    t = run.t0
    while t <= end_t + step:
        series.append((t, in_flight_at(t, all_starts, ends)))
        t += step
    return series


def steady_cpu(
    run: Run, created_at: dict[str, float], polls_by_gen: dict[str, list[float]]
) -> dict[str, Any]:
    """CPU per poll once every create is done: polls alone, without the creates.

    The window runs from the first sample after the last create to the last sample;
    its polls are the status requests the simulator logged inside it.
    """
    if not created_at or len(run.samples) < 2:
        return {"worker": None, "redis": None, "window_s": None, "polls": 0}
    last_create = max(created_at.values())
    window = [s for s in run.samples if s.t >= last_create]
    if len(window) < 2:
        return {"worker": None, "redis": None, "window_s": None, "polls": 0}
    first, last = window[0], window[-1]
    polls = sum(1 for times in polls_by_gen.values() for t in times if first.t <= t <= last.t)
    if not polls:
        return {"worker": None, "redis": None, "window_s": _r(last.t - first.t, 1), "polls": 0}
    redis = (last.redis_cpu - first.redis_cpu) if run.redis_cpu is not None else None
    return {
        "worker": _r(1000 * (last.cpu - first.cpu) / polls),
        "redis": _r(1000 * redis / polls) if redis is not None else None,
        "window_s": _r(last.t - first.t, 1),
        "polls": polls,
    }


def in_flight_at(t: float, starts: list[float], ends: list[float]) -> int:
    return bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t)


def memory_at_peak(run: Run, created_at: dict[str, float], peak: int) -> Sample | None:
    """The most contender memory and the most Redis memory sampled while at least 95%
    of ``peak`` jobs were in flight."""
    starts = sorted(created_at.values())
    ends = sorted(t for t, _, g in run.results.values() if g in created_at)
    near = [s for s in run.samples if peak and in_flight_at(s.t, starts, ends) >= 0.95 * peak]
    if not near:
        return None
    return Sample(near[0].t, max(s.memory for s in near), max(s.redis_memory for s in near))
