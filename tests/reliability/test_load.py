"""A burst of 10,000 jobs at once on 2 workers: nothing lost, nothing duplicated.

Opt-in (minutes): ``pytest -m load -s tests/reliability/test_load.py``.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from producers import Client
from tests.reliability.conftest import IMG, check_invariants, report

pytestmark = pytest.mark.load

JOBS = int(os.environ.get("VIDEOQ_LOAD_JOBS", "10000"))
GEN = 10.0


def test_a_burst_of_ten_thousand_jobs(rig: Any) -> None:
    r = rig(
        workers=2,
        concurrency=2,
        generation_time=GEN,
        poll_interval=5.0,
        deadline=900.0,
        stall_timeout=30.0,
        visibility_timeout=120,
    )
    raw = r.raw
    baseline = int(raw.info("memory")["used_memory"])

    def submit_share(share: int) -> list[str]:
        client = Client(settings=r.cluster.settings)
        return [client.submit(IMG, prompt=f"load-{share}-{i}") for i in range(JOBS // 4)]

    started = time.time()
    with ThreadPoolExecutor(4) as pool:
        ids = [i for share in pool.map(submit_share, range(4)) for i in share]
    submitted_s = time.time() - started

    peak_in_flight = peak_memory = 0
    give_up = time.monotonic() + 900
    while (active := r.cluster.client.store.active_count()) > 0:
        peak_in_flight = max(peak_in_flight, active)
        peak_memory = max(peak_memory, int(raw.info("memory")["used_memory"]))
        assert time.monotonic() < give_up, f"{active} jobs still active"
        time.sleep(1.0)
    makespan_s = time.time() - started

    figures = check_invariants(r, ids, generation_time=GEN, timeout=60)
    assert figures.states == {"completed": len(ids)}
    after = int(raw.info("memory")["used_memory"])
    report(
        "load",
        figures=figures,
        jobs=len(ids),
        submitted_in_s=round(submitted_s, 1),
        makespan_s=round(makespan_s, 1),
        peak_active=peak_in_flight,
        redis_used_memory_mb={
            "baseline": round(baseline / 2**20, 1),
            "peak": round(peak_memory / 2**20, 1),
            "after": round(after / 2**20, 1),
        },
        redis_bytes_per_active_job=round((peak_memory - baseline) / max(1, peak_in_flight)),
        upstream_requests=len(r.sim.requests()),
    )
