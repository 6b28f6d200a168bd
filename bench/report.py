"""Turn a contender's run and the simulator's log into the figures the report lists.

What comes from the simulator's log alone (true in flight, intake, polls, 429s) is in
:mod:`bench.upstream`. Here, what also needs the contender's records and meters:

- completion lag: the job record's terminal time minus the moment the simulator's
  generation was done (created_at + generation_time);
- detection delay: the job record's terminal time minus the simulator's first answer
  that said ``completed`` (:func:`bench.upstream.completed_answers`);
- poll lateness: each poll's time minus when it was due, i.e. the previous poll for
  that generation (the create, for the first) plus the poll interval; 429s are not polls;
- peak in flight: generations created and not yet done upstream (the simulator's log);
  memory "at peak" is the largest sample taken while at least 95% of that peak was in
  flight, and memory per job divides its rise over the baseline by that peak;
- records in flight at t (the old definition, ``peak_records_in_flight``): jobs whose
  generation exists upstream and whose record is not yet terminal.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from bench import upstream
from bench.contenders import Run
from bench.harness import Sample, Scenario
from bench.upstream import count_at

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
    done_at = upstream.done_times(generations)
    created_at = {g["id"]: g["created_at"] for g in generations}
    api = upstream.api_requests(requests, run.t0)
    polls_by_gen = upstream.polls_by_generation(api)
    polls = sum(len(v) for v in polls_by_gen.values())
    answered = upstream.completed_answers(generations, polls_by_gen)

    lags, detection, terminal_times = [], [], []
    states: dict[str, int] = defaultdict(int)
    for terminal_t, state, gen_id in run.results.values():
        states[state] += 1
        terminal_times.append(terminal_t)
        if state == "completed" and gen_id in done_at:
            lags.append(terminal_t - done_at[gen_id])
        if state == "completed" and gen_id in answered:
            detection.append(terminal_t - answered[gen_id])

    peak = upstream.peak_in_flight(generations)
    records = records_in_flight_series(run, created_at)
    at_peak = memory_at_peak(run, generations, peak)
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
    calls = upstream.request_figures(api)
    intake = upstream.intake(generations, run.submitted)
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
        "peak_in_flight": peak,
        "all_created_before_first_done": upstream.all_created_before_first_done(generations),
        "peak_records_in_flight": max((n for _, n in records), default=0),
        "creates": len(generations),
        "creates_after_last_submit_s": _r(intake["creates_after_last_submit_s"], 2),
        "first_to_last_create_s": _r(intake["first_to_last_create_s"], 2),
        "create_rate_per_s": _r(intake["create_rate_per_s"], 1),
        "completion_lag_s": spread(lags),
        "detection_delay_s": spread(detection),
        "poll_lateness_s": spread(
            upstream.lateness(generations, polls_by_gen, scenario.poll_interval)
        ),
        "poll_gap_s": spread(upstream.poll_gaps(polls_by_gen)),
        "upstream_requests": calls["upstream_requests"],
        "upstream_requests_per_job": _r(calls["upstream_requests"] / max(1, len(run.results)), 2),
        "upstream_429": calls["upstream_429"],
        "upstream_429_share": _r(calls["upstream_429_share"], 4),
        "request_rate_per_s": _r(calls["request_rate_per_s"], 1),
        "answered_rate_per_s": _r(calls["answered_rate_per_s"], 1),
        "polls": polls,
        "cpu_s": {
            "worker": _r(run.worker_cpu, 2),
            "redis": _r(run.redis_cpu, 2),
            "simulator": _r(run.sim_cpu, 2),
        },
        "cpu_ms_per_poll": {
            "worker": _per_poll(run.worker_cpu, polls),
            "redis": _per_poll(run.redis_cpu, polls),
            "simulator": _per_poll(run.sim_cpu, polls),
        },
        "cpu_ms_per_poll_after_creates": steady,
        "cores_used_avg": {
            "worker": _r(run.worker_cpu / makespan if makespan else None, 2),
            "redis": _r(
                run.redis_cpu / makespan if makespan and run.redis_cpu is not None else None, 2
            ),
            "simulator": _r(run.sim_cpu / makespan if makespan else None, 2),
        },
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
            "in_flight": [
                [_r(t - run.t0, 2), n] for t, n in true_in_flight_series(run, generations)
            ],
            "records_in_flight": [[_r(t - run.t0, 2), n] for t, n in records],
            "lag": sorted(
                [_r(t - run.t0, 2), _r(t - done_at[g], 3)]
                for t, s, g in run.results.values()
                if s == "completed" and g in done_at
            ),
        },
    }


def _per_poll(cpu_s: float | None, polls: int) -> float | None:
    """CPU milliseconds per poll."""
    return _r(1000 * cpu_s / polls) if polls and cpu_s is not None else None


def _times(run: Run, end: float, step: float) -> list[float]:
    out, t = [], run.t0
    while t <= end + step:
        out.append(t)
        t += step
    return out


def true_in_flight_series(
    run: Run, generations: list[dict[str, Any]], step: float = 0.25
) -> list[tuple[float, int]]:
    """Generations in flight upstream, every ``step`` seconds of the run."""
    starts, ends = upstream.flight_bounds(generations)
    end = max([run.ended, *ends[-1:]])
    return [(t, count_at(t, starts, ends)) for t in _times(run, end, step)]


def records_in_flight_series(
    run: Run, created_at: dict[str, float], step: float = 0.25
) -> list[tuple[float, int]]:
    """Jobs whose generation exists upstream and whose record is not yet terminal; a
    generation whose job never ended stays in flight to the end of the run."""
    all_starts = sorted(created_at.values())
    ends = sorted(t for t, _, g in run.results.values() if g in created_at)
    end = max([run.ended, *ends])
    return [(t, count_at(t, all_starts, ends)) for t in _times(run, end, step)]


def steady_cpu(
    run: Run, created_at: dict[str, float], polls_by_gen: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """CPU per poll once every create is done: polls alone, without the creates.

    The window runs from the first sample after the last create to the last sample;
    its polls are the status calls not answered 429 that the simulator logged inside it.
    """
    none: dict[str, Any] = {"worker": None, "redis": None, "simulator": None}
    if not created_at or len(run.samples) < 2:
        return {**none, "window_s": None, "polls": 0}
    last_create = max(created_at.values())
    window = [s for s in run.samples if s.t >= last_create]
    if len(window) < 2:
        return {**none, "window_s": None, "polls": 0}
    first, last = window[0], window[-1]
    polls = sum(1 for calls in polls_by_gen.values() for r in calls if first.t <= r["t"] <= last.t)
    if not polls:
        return {**none, "window_s": _r(last.t - first.t, 1), "polls": 0}
    redis = (last.redis_cpu - first.redis_cpu) if run.redis_cpu is not None else None
    return {
        "worker": _per_poll(last.cpu - first.cpu, polls),
        "redis": _per_poll(redis, polls),
        "simulator": _per_poll(last.sim_cpu - first.sim_cpu, polls),
        "window_s": _r(last.t - first.t, 1),
        "polls": polls,
    }


def memory_at_peak(run: Run, generations: list[dict[str, Any]], peak: int) -> Sample | None:
    """The most contender memory and the most Redis memory sampled while at least 95%
    of ``peak`` generations were in flight upstream."""
    starts, ends = upstream.flight_bounds(generations)
    near = [s for s in run.samples if peak and count_at(s.t, starts, ends) >= 0.95 * peak]
    if not near:
        return None
    return Sample(near[0].t, max(s.memory for s in near), max(s.redis_memory for s in near))
