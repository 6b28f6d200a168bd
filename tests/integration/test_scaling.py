"""Horizontal scaling: 1, 2 and 4 worker processes on one Redis share the work, no job
is done twice, and a worker added mid-run starts taking polls. Also: JSON logs and the
job metrics from a real run."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import Cluster
from worker.metrics import MetricsExporter

IMG = "https://example.com/cat.png"
SUCCEEDED = re.compile(r"Task (videoq\.\w+)\[[0-9a-f-]+\] succeeded")


def tasks_done(log: Path) -> Counter[str]:
    return Counter(SUCCEEDED.findall(log.read_text(errors="replace")))


def finished_events(cluster: Cluster) -> Counter[str]:
    return Counter(re.findall(r"event=job\.finished job_id=(\w+)", cluster.log_text()))


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_share_the_work_and_no_job_is_done_twice(
    clusters: Callable[..., Cluster], workers: int
) -> None:
    cluster = clusters(f"scale{workers}", poll_interval=0.5)
    for _ in range(workers):
        cluster.start_worker(concurrency=1)
    prompts = [f"scale{workers}-{i} [sim:time=2]" for i in range(40)]
    ids = [cluster.client.submit(IMG, prompt=p) for p in prompts]
    jobs = cluster.wait_all(ids, 60)
    assert {j.state.value for j in jobs} == {"completed"}
    creates = Counter(r.prompt for r in cluster.sim.creates())
    assert all(creates[p] == 1 for p in prompts)
    assert finished_events(cluster) == Counter({i: 1 for i in ids})
    per_worker = [sum(tasks_done(log).values()) for log in cluster.logs]
    assert all(n > 0 for n in per_worker), per_worker
    print(f"\nFIGURES scaling {workers} workers: tasks per worker {per_worker}")


def test_a_worker_added_mid_run_takes_polls(clusters: Callable[..., Cluster]) -> None:
    cluster = clusters("midrun", poll_interval=0.5)
    cluster.start_worker(concurrency=1)
    ids = [cluster.client.submit(IMG, prompt=f"midrun-{i} [sim:time=6]") for i in range(30)]
    time.sleep(1.0)
    cluster.start_worker(concurrency=1)
    jobs = cluster.wait_all(ids, 60)
    assert {j.state.value for j in jobs} == {"completed"}
    added = tasks_done(cluster.logs[1])
    assert added["videoq.poll_tick"] > 0, added  # batch mode: the ticks share the polls
    polled = re.findall(r"event=tick.done .*?polled=(\d+)", cluster.logs[1].read_text())
    assert sum(int(n) for n in polled) > 0
    assert finished_events(cluster) == Counter({i: 1 for i in ids})


def test_json_logs_and_job_metrics_from_a_real_run(clusters: Callable[..., Cluster]) -> None:
    cluster = clusters("jsonlogs")
    cluster.env["VIDEOQ_LOG_FORMAT"] = "json"
    cluster.start_worker(concurrency=1)
    ok = cluster.client.submit(IMG, prompt="metrics ok [sim:time=1]")
    bad = cluster.client.submit(IMG, prompt="metrics bad [sim:error] [sim:time=1]")
    jobs = {j.id: j for j in cluster.wait_all([ok, bad], 30)}

    events = []
    for line in cluster.logs[0].read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    finished = [e for e in events if e.get("event") == "job.finished"]
    assert {(e["job_id"], e["state"]) for e in finished} == {(ok, "completed"), (bad, "failed")}
    assert all("attempt" in e and "ts" in e for e in finished)

    exporter = MetricsExporter(cluster.client.store, port=0).start()
    try:
        page = requests.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5).text
    finally:
        exporter.stop()
    assert 'videoq_jobs_finished_total{state="completed"} 1' in page
    assert 'videoq_jobs_failed_total{kind="upstream_error"} 1' in page
    assert "videoq_jobs_in_flight 0" in page
    assert "videoq_completion_seconds_count 1" in page
    credits = sum(j.credits_used or 0 for j in jobs.values())
    assert f"videoq_credits_used_total {int(credits)}" in page
