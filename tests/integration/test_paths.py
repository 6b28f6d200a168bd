"""The universal upstream path (``VIDEOQ_UPSTREAM_PATH=universal``) end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator import Simulator
from tests.integration.conftest import Cluster, make_cluster
from worker.states import JobState

pytestmark = pytest.mark.integration


@pytest.fixture
def universal(redis_url: str, sim: Simulator, tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(redis_url, tmp_path, "universal", sim, upstream_path="universal")
    c.start_worker(concurrency=1)
    yield c
    c.stop()


def test_a_job_on_the_universal_path(universal: Cluster) -> None:
    job_id = universal.client.submit("https://example.com/a.png", prompt="universal path")
    job = universal.client.wait(job_id, timeout=30)
    assert job.state is JobState.COMPLETED
    paths = {r.path for r in universal.sim.requests() if r.prompt == "universal path"}
    assert paths == {"/v2/video/generations"}
