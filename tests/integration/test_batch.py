"""Batch mode end to end: a real worker (threads pool), real Redis, the simulator."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from worker.keys import POLL_TASK, TICK_TASK
from worker.states import ErrorKind, JobState

pytestmark = pytest.mark.integration

IMG = "https://example.com/portrait.jpg"


def test_a_burst_completes_with_one_create_each_and_polls_a_tick_apart(clusters: Any) -> None:
    c = clusters(
        "batch",
        poll_mode="batch",
        poll_interval=1.0,
        poll_batch=8,
        poll_concurrency=4,
        poll_tick=0.25,
    )
    c.start_worker(concurrency=4, extra=["--pool", "threads"])
    ids = [c.client.submit(IMG, prompt=f"batch-{i}") for i in range(40)]
    jobs = c.wait_all(ids, timeout=60)
    assert {j.state for j in jobs} == {JobState.COMPLETED}
    for job in jobs:
        assert len(c.sim.creates(prompt=job.request["prompt"])) == 1
        polls = [p.t for p in c.sim.polls(job.generation_id or "")]
        assert job.polls == len(polls) >= 2
        # never sooner than the interval; a tick (0.25 s) is the most it may slip
        assert min(b - a for a, b in pairwise(polls)) >= 1.0 - 0.05
    log = c.log_text()
    # one task per tick, none per poll (the banner lists both; these are task lines)
    assert f"Task {TICK_TASK}[" in log and f"Task {POLL_TASK}[" not in log
    book = c.client.store.redis.zcard(c.client.store.keys.polls())
    assert book == 0  # finished jobs left the poll book


def test_the_deadline_ends_a_job_that_never_finishes(clusters: Any) -> None:
    c = clusters("batch-deadline", poll_mode="batch", poll_interval=1.0, deadline=4.0)
    c.start_worker(concurrency=2, extra=["--pool", "threads"])
    job_id = c.client.submit(IMG, prompt="[sim:never] forever")
    [job] = c.wait_all([job_id], timeout=15)
    assert job.state is JobState.TIMED_OUT
    assert job.error is not None and job.error.kind == ErrorKind.DEADLINE
    assert job.finished_at is not None and job.deadline_at is not None
    assert -0.2 < job.finished_at - job.deadline_at < 1.0
