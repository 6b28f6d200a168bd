"""Workers die: SIGKILL one of two, SIGKILL all and restart one, SIGTERM (warm shutdown)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.reliability.conftest import (
    check_invariants,
    held_by_workers,
    repolled_within,
    report,
)
from worker.keys import TICK_TASK
from worker.settings import Settings

GEN = 8.0  # seconds each simulated generation takes
JOBS = 240


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_sigkill_one_of_two_workers_with_many_jobs_in_flight(rig: Any, mode: str) -> None:
    r = rig(workers=2, concurrency=2, generation_time=GEN, poll_interval=2.0, poll_mode=mode)
    rss_before = r.worker_rss_kb(1)
    ids = r.submit(JOBS)
    r.wait_generating(ids)
    killed_at = r.kill_worker(0)

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": JOBS}
    jobs = [r.cluster.client.get(i) for i in ids]
    last = max(j.finished_at or 0 for j in jobs) - killed_at
    # Recovered long before Redis would hand the dead worker's tasks back: by the
    # sweeper (chain), or by the survivor's ticks once the dead one's leases end (batch).
    assert last < r.cluster.settings.visibility_timeout
    if mode == "chain":
        assert "job.resumed" in r.cluster.log_text()
    assert held_by_workers(r, set(ids)) == 0
    rss_after = r.worker_rss_kb(1)
    assert rss_after - rss_before < 64 * 1024, (rss_before, rss_after)
    report(
        f"sigkill_one_of_two ({mode})",
        figures=figures,
        all_done_after_kill_s=round(last, 2),
        every_job_polled_again_within_s=repolled_within(r, ids, killed_at),
        survivor_rss_kb=(rss_before, rss_after),
    )


def test_default_mode_repolls_a_killed_workers_jobs_within_5_s(rig: Any) -> None:
    """With every recovery setting at its default (stall timeout 60 s, sweep every
    10 s, visibility timeout 300 s), a killed worker's jobs are polled again within
    5 s: its ticks' leases run out after ``POLL_LEASE`` and the survivor's pump sends
    a tick for them. (Chain mode would wait for the sweeper: a minute.)"""
    defaults = {
        name: Settings.model_fields[name].default
        for name in ("poll_mode", "stall_timeout", "sweep_interval", "visibility_timeout")
    }
    assert defaults["poll_mode"] == "batch"
    r = rig(workers=2, concurrency=2, generation_time=20.0, poll_interval=1.0, **defaults)
    ids = r.submit(200)
    r.wait_generating(ids)
    # Slow status answers: each tick holds its polls (leased) for half a second, so
    # the killed worker dies holding some.
    r.sim.state.config.latency = 0.5
    time.sleep(2.0)  # the workers' ticks are polling
    # The worker that ran more ticks (at this load one may run most of them) dies.
    ticks = [p.read_text().count(f"Task {TICK_TASK}[") for p in r.cluster.logs]
    killed_at = r.kill_worker(ticks.index(max(ticks)))
    figures = check_invariants(r, ids, generation_time=20.0)
    assert figures.states == {"completed": 200}
    within = repolled_within(r, ids, killed_at)
    assert within <= 5.0, within
    assert "job.resumed" not in r.cluster.log_text()  # no sweeper needed
    report("sigkill_default_mode", figures=figures, every_job_polled_again_within_s=within)


def test_sigkill_all_workers_then_restart_one(rig: Any) -> None:
    r = rig(workers=2, concurrency=2, generation_time=GEN, poll_interval=2.0)
    ids = r.submit(JOBS)
    r.wait_generating(ids)
    r.kill_worker(0)
    r.kill_worker(1)
    time.sleep(3.0)  # nothing runs: every held countdown task died with the workers
    restarted_at = time.time()
    r.cluster.start_worker(concurrency=2)

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": JOBS}
    jobs = [r.cluster.client.get(i) for i in ids]
    last = max(j.finished_at or 0 for j in jobs) - restarted_at
    assert last < r.cluster.settings.visibility_timeout
    assert held_by_workers(r, set(ids)) == 0
    report(
        "sigkill_all_restart_one",
        figures=figures,
        all_done_after_restart_s=round(last, 2),
        every_job_polled_again_within_s=repolled_within(r, ids, restarted_at),
    )


def test_sigterm_warm_shutdown_hands_back_held_tasks(rig: Any) -> None:
    """Chain mode (batch mode holds no countdown tasks): with the sweeper off and a long
    visibility timeout, only the warm shutdown's hand-back can get the stopped worker's
    countdown tasks to the other worker."""
    r = rig(
        workers=2,
        concurrency=2,
        generation_time=GEN,
        poll_interval=2.0,
        poll_mode="chain",
        sweep_interval=0,
        visibility_timeout=600,
    )
    ids = r.submit(60)
    r.wait_generating(ids)
    stopping = r.cluster.workers[0]
    stopping.terminate()
    assert stopping.wait(30) == 0

    figures = check_invariants(r, ids, generation_time=GEN, timeout=60, drain_timeout=10)
    assert figures.states == {"completed": 60}
    log = r.cluster.logs[0].read_text()
    assert "Restoring" in log and "unacknowledged message" in log
    assert "job.resumed" not in r.cluster.log_text()
    report("sigterm_warm_shutdown", figures=figures)
