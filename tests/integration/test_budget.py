"""The concurrency clusters (``VIDEOQ_MAX_IN_FLIGHT``): a cap on upstream generations in
flight, shared by all workers through Redis, in submission order, with every slot
released on every terminal path (SIGKILL included). And the example web app."""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from simulator import Simulator
from tests.integration.conftest import Cluster

IMG = "https://example.com/cat.png"
ROOT = Path(__file__).resolve().parents[2]


def _spans(sim: Simulator, prompts: list[str]) -> dict[str, tuple[float, float]]:
    """Each generation's span upstream: its create until the poll that saw it end."""
    spans = {}
    for create in sim.creates():
        if create.prompt in prompts:
            ended = [p.t for p in sim.polls(create.generation_id or "") if p.status_code == 200]
            spans[create.prompt] = (create.t, max(ended))
    return spans


def _most_at_once(spans: dict[str, tuple[float, float]]) -> int:
    edges = sorted(
        [(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
        key=lambda e: (e[0], e[1]),
    )
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def test_jobs_over_the_cap_wait_and_start_in_submission_order(
    clusters: Callable[..., Cluster],
) -> None:
    cluster = clusters("cap2", max_in_flight=2, poll_interval=0.5)
    cluster.start_worker(concurrency=2)
    cluster.start_worker(concurrency=2)
    prompts = [f"capped {i} [sim:time=3]" for i in range(8)]
    ids = []
    for prompt in prompts:
        ids.append(cluster.client.submit(IMG, prompt=prompt))
        time.sleep(0.02)  # distinct acceptance times: a well-defined order
    time.sleep(1.0)
    waiting = [cluster.client.get(i) for i in ids[2:]]
    assert {j.state.value for j in waiting} == {"queued"}  # waiting, no upstream calls
    assert all(j.generation_id is None for j in waiting)
    jobs = cluster.wait_all(ids, 60)
    assert {j.state.value for j in jobs} == {"completed"}
    spans = _spans(cluster.sim, prompts)
    assert len(spans) == 8
    assert _most_at_once(spans) <= 2
    # In line order: a job starts only when every job before it in line has started or
    # takes one of the other free slots at the same moment, so no job gets ahead of
    # more than (cap - 1) jobs accepted before it.
    start = {p: spans[p][0] for p in prompts}
    for j, later in enumerate(prompts):
        overtaken = [p for p in prompts[:j] if start[p] > start[later]]
        assert len(overtaken) <= 1, (later, overtaken)
    assert cluster.client.store.budget.in_flight_slots() == 0


def test_a_slot_is_released_when_its_worker_is_killed(clusters: Callable[..., Cluster]) -> None:
    cluster = clusters(
        "cap1kill", max_in_flight=1, poll_interval=0.5, stall_timeout=2.0, sweep_interval=0.5
    )
    cluster.start_worker(concurrency=1)
    first = cluster.client.submit(IMG, prompt="holds the slot [sim:time=4]")
    time.sleep(0.05)
    second = cluster.client.submit(IMG, prompt="waits [sim:time=1]")
    give_up = time.monotonic() + 20
    while not cluster.client.get(first).generation_id:
        assert time.monotonic() < give_up
        time.sleep(0.1)
    os.killpg(cluster.workers[0].pid, signal.SIGKILL)  # the slot holder's worker dies
    cluster.workers[0].wait()
    assert cluster.client.get(second).state.value == "queued"
    cluster.start_worker(concurrency=1)
    jobs = cluster.wait_all([first, second], 60)
    assert [j.state.value for j in jobs] == ["completed", "completed"]
    spans = _spans(cluster.sim, ["holds the slot [sim:time=4]", "waits [sim:time=1]"])
    assert _most_at_once(spans) == 1
    assert cluster.client.store.budget.in_flight_slots() == 0


def test_every_terminal_path_frees_the_slot(clusters: Callable[..., Cluster]) -> None:
    """One slot; each job is submitted when the one before it has ended. Had an ending
    kept its slot, the next job would wait in line until its own deadline."""
    cluster = clusters("cap1paths", max_in_flight=1, poll_interval=0.5, deadline=6.0)
    cluster.start_worker(concurrency=1)
    client = cluster.client
    failed = client.wait(client.submit(IMG, prompt="fails [sim:error] [sim:time=0.5]"), 20)
    timed_out = client.wait(client.submit(IMG, prompt="times out [sim:never]"), 20)
    cancelled_id = client.submit(IMG, prompt="cancelled [sim:time=30]")
    give_up = time.monotonic() + 20
    while not client.get(cancelled_id).generation_id:
        assert time.monotonic() < give_up
        time.sleep(0.1)
    cancelled = client.cancel(cancelled_id)
    completed = client.wait(client.submit(IMG, prompt="completes [sim:time=0.5]"), 20)
    assert [j.state.value for j in (failed, timed_out, cancelled, completed)] == [
        "failed",
        "timed_out",
        "cancelled",
        "completed",
    ]
    assert client.store.budget.in_flight_slots() == 0


def _example_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flask_app", ROOT / "examples" / "flask_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_flask_app_submits_and_shows_progress(
    clusters: Callable[..., Cluster],
) -> None:
    cluster = clusters("flaskapp")
    cluster.start_worker(concurrency=1)
    app = _example_app().create_app(cluster.client)
    web = app.test_client()
    assert b"<form" in web.get("/").data
    bad = web.post("/jobs", data={"image_url": "file:///etc/passwd"})
    assert bad.status_code == 422 and b"image_url" in bad.data
    posted = web.post(
        "/jobs", data={"image_url": IMG, "prompt": "from flask [sim:time=1]", "duration": "5"}
    )
    assert posted.status_code == 303
    page_url = posted.headers["Location"]
    first = web.get(page_url).get_data(as_text=True)
    assert 'http-equiv="refresh"' in first or "completed" in first
    give_up = time.monotonic() + 30
    while "completed" not in (page := web.get(page_url).get_data(as_text=True)):
        assert time.monotonic() < give_up, page
        time.sleep(0.3)
    assert "Your video" in page and 'http-equiv="refresh"' not in page
    assert web.get("/jobs/nope").status_code == 404
