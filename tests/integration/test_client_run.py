"""``Client.run`` and ``AsyncClient.run`` end to end: a real worker, real Redis, the
simulator. One call makes a video; a job that fails raises ``JobFailed``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from producers import AsyncClient, DownloadFailed, Job, JobFailed, JobState, Update
from simulator.videos import VIDEO
from tests.integration.conftest import Cluster

pytestmark = pytest.mark.integration

IMG = "https://example.com/portrait.jpg"


def test_run_makes_a_video_in_one_call_sync_and_async(cluster: Cluster, tmp_path: Path) -> None:
    seen: list[Update] = []
    job = cluster.client.run(
        IMG, prompt="run sync", timeout=45, interval=0.2, on_update=seen.append
    )
    assert job.state is JobState.COMPLETED and job.video_url and job.generation_id
    assert cluster.client.save(job, tmp_path / "sync.mp4").read_bytes() == VIDEO
    assert seen[-1].job == job and seen[-1].seconds_left is None
    assert seen[0].seconds_left is not None and 0 < seen[0].seconds_left <= 60.0
    assert job.polls >= 1 and max(u.polls for u in seen) == job.polls

    async def both() -> tuple[Job, BaseException | Job]:
        async with AsyncClient(settings=cluster.settings) as client:
            made, failed = await asyncio.gather(
                client.run(IMG, prompt="run async", timeout=45, interval=0.2),
                client.run(IMG, prompt="[sim:error] run async", timeout=45, interval=0.2),
                return_exceptions=True,
            )
            assert isinstance(made, Job)
            saved = await client.save(made, tmp_path / "async.mp4")  # on this loop
            assert saved.read_bytes() == VIDEO
            if isinstance(failed, JobFailed):
                with pytest.raises(DownloadFailed, match="has no video"):
                    await client.save(failed.job, tmp_path / "none.mp4")
        return made, failed

    made, failed = asyncio.run(both())
    assert made.state is JobState.COMPLETED and made.video_url
    assert made.request["prompt"] == "run async"
    assert isinstance(failed, JobFailed), failed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "async.mp4",
        "sync.mp4",
    ]  # no partial file
    assert failed.job.state is JobState.FAILED and failed.kind == "upstream_error"
    assert str(failed).startswith(f"job {failed.job_id} failed: upstream_error: ")
