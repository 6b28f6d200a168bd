"""The upstream breaks: outages shorter and longer than the deadline, 429 with
Retry-After, hostile answers; and the broker delivers every message twice."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from itertools import pairwise
from typing import Any

import pytest

from tests.reliability.conftest import IMG, check_invariants, report
from worker.answers import MAX_BODY_BYTES
from worker.keys import GENERATE_TASK, POLL_TASK
from worker.states import ErrorKind, JobState

GEN = 4.0


def test_upstream_outage_shorter_than_the_deadline(rig: Any) -> None:
    """Refused connections at create time, then 500s and answers slower than the read
    timeout mid-chain: every job completes, each with one create."""
    r = rig(upstream_proxy=True, generation_time=GEN)
    upstream = r.proxies[0]
    upstream.cut()  # connection refused
    ids = r.submit(40)
    time.sleep(5.0)
    # nothing reached the upstream; each job is waiting for its next create attempt
    # (or is in the middle of one: a snapshot can catch a job in `submitting`)
    down = [r.cluster.client.get(i) for i in ids]
    assert {j.state for j in down} <= {JobState.QUEUED, JobState.SUBMITTING}
    assert not any(j.generation_id for j in down) and r.sim.creates() == []
    upstream.restore()
    r.wait_generating(ids)
    r.sim.add_fault(status=500, count=40, method="GET")
    r.sim.add_fault(kind="delay", seconds=3.0, count=10, method="GET")  # read timeout: 2 s

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": 40}
    faulted = Counter(q.fault for q in r.sim.requests() if q.fault)
    assert faulted["status"] == 40 and faulted["delay"] == 10, faulted
    log = r.cluster.log_text()
    assert "event=create.retry" in log and "event=poll.transient_error" in log
    report("upstream_outage_short", figures=figures, faults_answered=dict(faulted))


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_upstream_outage_longer_than_the_deadline(rig: Any, mode: str) -> None:
    r = rig(upstream_proxy=True, generation_time=60.0, deadline=10.0, poll_mode=mode)
    ids = r.submit(20)
    r.wait_generating(ids)
    r.proxies[0].cut()

    figures = check_invariants(r, ids, generation_time=60.0, timeout=30, slack=1.0)
    assert figures.states == {"timed_out": 20}
    for job_id in ids:
        job = r.cluster.client.get(job_id)
        assert job.error is not None and job.error.kind == ErrorKind.DEADLINE
        assert job.last_error and "connection" in job.last_error, job.last_error
        assert "unreachable" in job.error.message
        assert job.finished_at is not None and job.deadline_at is not None
        assert -0.2 < job.finished_at - job.deadline_at < 1.0
    report(f"upstream_outage_long ({mode})", figures=figures)


def _timelines(r: Any, ids: list[str]) -> dict[str, list[Any]]:
    """Each job's upstream requests, in order (creates by prompt, polls by id)."""
    by_prompt: dict[str, str] = {}
    by_generation: dict[str, str] = {}
    for job_id in ids:
        job = r.cluster.client.get(job_id)
        by_prompt[job.request["prompt"]] = job_id
        if job.generation_id:
            by_generation[job.generation_id] = job_id
    out: dict[str, list[Any]] = defaultdict(list)
    for req in r.sim.requests():
        owner = by_generation.get(req.generation_id or "") or by_prompt.get(req.prompt or "")
        if owner:
            out[owner].append(req)
    return out


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_429_retry_after_is_honoured(rig: Any, mode: str) -> None:
    r = rig(generation_time=3.0, poll_mode=mode)
    r.sim.add_fault(status=429, retry_after=2, count=40)
    ids = r.submit(20)
    figures = check_invariants(r, ids, generation_time=3.0)
    assert figures.states == {"completed": 20}
    gaps = []
    for reqs in _timelines(r, ids).values():
        for hit, following in pairwise(reqs):
            if hit.status_code == 429:
                gaps.append(following.t - hit.t)
    assert len(gaps) == 40
    assert min(gaps) >= 2.0 - 0.05, min(gaps)  # Retry-After: 2
    report(f"retry_after ({mode})", figures=figures, retry_gap_min_s=round(min(gaps), 2))


@pytest.mark.parametrize("mode", ["chain", "batch"])
def test_retry_after_never_pushes_a_job_past_its_deadline(rig: Any, mode: str) -> None:
    r = rig(generation_time=60.0, deadline=8.0, poll_mode=mode)
    ids = r.submit(10)
    r.wait_generating(ids)
    r.sim.add_fault(status=429, retry_after=120, count=1000, method="GET")
    figures = check_invariants(r, ids, generation_time=60.0, timeout=30, slack=1.0)
    assert figures.states == {"timed_out": 10}
    # The first 429's Retry-After (120 s) pauses every worker's calls (worker/ratelimit.py):
    # no poll reaches the upstream after it (but one already on its way), and still every
    # chain is clamped to its deadline: each job ends timed_out on time (the invariants),
    # with the 429 as its last error.
    first = min(q.t for q in r.sim.requests() if q.status_code == 429)
    assert all(q.t <= first + 0.4 for q in r.sim.requests() if q.method == "GET")
    for job_id in ids:
        job = r.cluster.client.get(job_id)
        assert job.last_error and "429" in job.last_error
    report(f"retry_after_past_deadline ({mode})", figures=figures)


def test_every_message_delivered_twice(rig: Any) -> None:
    """Chain mode, where every step is a message (batch mode's ticks claim in one
    script, so a duplicate tick finds nothing left to claim)."""
    r = rig(generation_time=GEN, poll_mode="chain")
    client = r.cluster.client
    send = client._app.send_task
    queue = r.cluster.settings.queue
    ids = r.submit(30)
    for job_id in ids:  # the generate message, again
        job = client.get(job_id)
        send(
            GENERATE_TASK,
            kwargs={"job_id": job_id, "deadline_at": job.deadline_at, "attempt": 1},
            queue=queue,
        )
    r.wait_generating(ids)
    for job_id in ids:  # the chain's next poll, twice more
        job = client.get(job_id)
        for _ in range(2):
            send(
                POLL_TASK,
                kwargs={"job_id": job_id, "deadline_at": job.deadline_at, "seq": job.polls + 1},
                queue=queue,
            )

    figures = check_invariants(r, ids, generation_time=GEN)
    assert figures.states == {"completed": 30}
    records = {i: client.store.redis.hgetall(client.store.keys.job(i)) for i in ids}
    polls = {i: len(r.sim.polls(client.get(i).generation_id or "")) for i in ids}
    dropped_before = r.cluster.log_text().count("event=task.dropped")
    assert dropped_before >= 30 + 60  # every duplicate so far ran and was dropped
    for job_id in ids:  # and once more, after the end
        job = client.get(job_id)
        send(GENERATE_TASK, kwargs={"job_id": job_id, "deadline_at": job.deadline_at}, queue=queue)
        send(
            POLL_TASK,
            kwargs={"job_id": job_id, "deadline_at": job.deadline_at, "seq": job.polls + 1},
            queue=queue,
        )
    give_up = time.monotonic() + 20
    while r.cluster.log_text().count("event=task.dropped") < dropped_before + 60:
        assert time.monotonic() < give_up, "the late duplicates did not all run"
        time.sleep(0.2)
    assert {i: client.store.redis.hgetall(client.store.keys.job(i)) for i in ids} == records
    assert {i: len(r.sim.polls(client.get(i).generation_id or "")) for i in ids} == polls
    report("duplicates", figures=figures)


HOSTILE = [
    # (which call, fault, expected state, words in the error)
    ("POST", {"status": 200, "body": "not json at all"}, "failed", "not JSON"),
    ("POST", {"status": 200, "body": "<html><h1>Welcome</h1></html>"}, "failed", "not JSON"),
    (
        "POST",
        {
            "status": 200,
            "body": json.dumps({"status": "queued"}),
            "content_type": "application/json",
        },
        "failed",
        "no generation id",
    ),
    ("POST", {"status": 502, "body": "<html>Bad gateway</html>"}, "completed", None),
    (
        "GET",
        {
            "status": 200,
            "body": json.dumps({"id": "x", "status": "completed"}),
            "content_type": "application/json",
        },
        "failed",
        "no video URL",
    ),
    (
        "GET",
        {"status": 200, "body": "[1, 2, 3]", "content_type": "application/json"},
        "failed",
        "not a JSON object",
    ),
    (
        "GET",
        {"status": 200, "body": "x", "size": MAX_BODY_BYTES * 3},
        "failed",
        f"over {MAX_BODY_BYTES} bytes",
    ),
    (
        "GET",
        {
            "status": 200,
            "body": json.dumps({"id": "x", "status": "exploded"}),
            "content_type": "application/json",
        },
        "failed",
        "unknown upstream status",
    ),
]


def test_hostile_upstream_answers_fail_the_job_and_leave_the_worker_healthy(rig: Any) -> None:
    r = rig(workers=1, concurrency=1, generation_time=2.0)
    client = r.cluster.client
    for n, (method, fault, state, words) in enumerate(HOSTILE):
        if method == "POST":
            r.sim.add_fault(kind="body", method="POST", **fault)
            job_id = client.submit(IMG, prompt=f"hostile {n}")
        else:
            job_id = client.submit(IMG, prompt=f"hostile {n}")
            r.wait_generating([job_id])
            r.sim.add_fault(kind="body", method="GET", **fault)
        job = client.wait(job_id, timeout=30)
        assert job.state.value == state, (n, job)
        if words:
            assert job.error is not None and words in job.error.message, (n, job.error)
        # one create each: a create answered with garbage may have been made; not repeated
        assert len(r.sim.creates(prompt=f"hostile {n}")) == 1
    assert r.cluster.workers[0].poll() is None
    healthy = client.wait(client.submit(IMG, prompt="after the hostile answers"), timeout=30)
    assert healthy.state is JobState.COMPLETED
