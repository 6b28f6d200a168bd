"""An upstream that is down when the job starts (connection refused): the create is
retried by rescheduling and the job completes once the upstream is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.local import free_port
from simulator import Simulator
from tests.conftest import TEST_KEY
from tests.integration.conftest import Cluster, make_cluster
from worker.states import JobState

pytestmark = pytest.mark.integration

IMG = "https://example.com/portrait.jpg"


@pytest.fixture
def down_upstream(redis_url: str, tmp_path: Path) -> Iterator[tuple[Cluster, int]]:
    port = free_port()
    placeholder = Simulator(port=port)  # only for its base_url; never started
    placeholder.stop()
    c = make_cluster(redis_url, tmp_path, "outage", placeholder)
    c.start_worker(concurrency=1)
    yield c, port
    c.stop()


def test_connection_refused_is_retried_until_the_upstream_is_back(
    down_upstream: tuple[Cluster, int],
) -> None:
    cluster, port = down_upstream
    client = cluster.client
    job_id = client.submit(IMG, prompt="outage")
    give_up = time.monotonic() + 15
    while "event=create.retry" not in cluster.log_text():
        assert time.monotonic() < give_up, "no retry was logged"
        time.sleep(0.2)
    job = client.get(job_id)
    assert job.state is JobState.QUEUED and job.last_error and "connection" in job.last_error
    sim = Simulator(port=port, api_key=TEST_KEY, generation_time=1.0).start()
    try:
        done = client.wait(job_id, timeout=30)
        assert done.state is JobState.COMPLETED, done.error
        assert len(sim.creates(prompt="outage")) == 1
        assert done.attempts >= 2
    finally:
        sim.stop()
