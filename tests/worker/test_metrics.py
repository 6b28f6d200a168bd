"""Job metrics: counted in the store's scripts, rendered in Prometheus's text format."""

from __future__ import annotations

import re
from collections.abc import Callable

import requests

from producers.local import free_port
from tests.conftest import settings_for
from tests.worker.conftest import World
from worker.answers import Status
from worker.errors import Rejected, Transient
from worker.metrics import MetricsExporter, render
from worker.store import JobStore, connect


def parse(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_states_latency_errors_and_credits_are_counted(world: Callable[..., World]) -> None:
    w = world(poll_interval=10.0, deadline=1000.0)
    for job_id in ("a", "b", "c"):
        w.job(job_id)
    m = parse(render(w.store))
    assert m['videoq_jobs{state="queued"}'] == 3
    assert m["videoq_jobs_in_flight"] == 3

    # a: completes 40 s after acceptance, after one 429 on a poll
    w.generate("a")
    w.clock.advance(20)
    w.upstream.status_answers.append(Transient("HTTP 429", kind="rate_limited"))
    w.poll(1, job_id="a")
    w.clock.advance(20)
    w.upstream.status_answers.append(
        Status("gen-1", "completed", video_url="https://v/a.mp4", credits_used=126000)
    )
    w.poll(2, job_id="a")
    # b: refused by the upstream
    w.upstream.create_answers.append(Rejected(401, "bad key"))
    w.generate("b")
    # c: still generating
    w.generate("c")

    m = parse(render(w.store))
    assert m['videoq_jobs{state="queued"}'] == 0
    assert m['videoq_jobs{state="generating"}'] == 1
    assert m["videoq_jobs_in_flight"] == 1
    assert m['videoq_jobs_finished_total{state="completed"}'] == 1
    assert m['videoq_jobs_finished_total{state="failed"}'] == 1
    assert m['videoq_jobs_failed_total{kind="upstream_rejected"}'] == 1
    assert m['videoq_upstream_errors_total{kind="rate_limited"}'] == 1
    assert m['videoq_upstream_errors_total{kind="rejected"}'] == 1
    assert m["videoq_credits_used_total"] == 126000
    assert m["videoq_completion_seconds_count"] == 1
    assert m["videoq_completion_seconds_sum"] == 40.0
    assert m['videoq_completion_seconds_bucket{le="30"}'] == 0
    assert m['videoq_completion_seconds_bucket{le="60"}'] == 1
    assert m['videoq_completion_seconds_bucket{le="+Inf"}'] == 1


def test_the_exporter_serves_the_page_and_says_when_redis_is_down(
    world: Callable[..., World],
) -> None:
    w = world()
    w.job()
    exporter = MetricsExporter(w.store, port=0).start()
    try:
        page = requests.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=5)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert re.search(r"^videoq_jobs_in_flight 1$", page.text, re.M)
        assert requests.get(f"http://127.0.0.1:{exporter.port}/x", timeout=5).status_code == 404
    finally:
        exporter.stop()
    dead = settings_for(f"redis://127.0.0.1:{free_port()}/0", "dead", redis_retries=0)
    exporter = MetricsExporter(JobStore(connect(dead), dead), port=0).start()
    try:
        page = requests.get(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10)
        assert page.status_code == 503 and "cannot read the stats" in page.text
    finally:
        exporter.stop()
