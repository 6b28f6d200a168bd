"""The chain end to end: one real worker process (one prefork slot), real Redis, the
simulator (2 s per 5 s video)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from celery import Celery

from simulator.videos import VIDEO
from tests.integration.conftest import Cluster
from worker.keys import GENERATE_TASK, POLL_TASK
from worker.states import ErrorKind, JobState

pytestmark = pytest.mark.integration

IMG = "https://example.com/portrait.jpg"


def test_job_completes_with_the_simulators_video(cluster: Cluster) -> None:
    started = time.time()
    job_id = cluster.client.submit(IMG, prompt="completes", duration=5)
    job = cluster.client.wait(job_id, timeout=30)
    assert job.state is JobState.COMPLETED
    gen = cluster.sim.state.generations[job.generation_id or ""]
    assert (job.video_url or "").startswith(
        f"http://127.0.0.1:{cluster.sim.port}/_sim/videos/{gen.id}.mp4?expires="
    )
    assert job.credits_used and job.credits_used > 0
    assert job.request == {"image_url": IMG, "prompt": "completes", "duration": 5}
    assert job.created_at and job.submitted_at and job.finished_at and job.deadline_at
    assert started <= job.created_at <= job.submitted_at <= job.finished_at
    assert job.deadline_at == pytest.approx(job.created_at + cluster.settings.deadline)
    assert job.error is None and job.polls >= 2
    assert len(cluster.sim.creates(prompt="completes")) == 1


def test_a_local_image_in_and_the_saved_video_out(cluster: Cluster, tmp_path: Path) -> None:
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200)
    job_id = cluster.client.submit(image=(jpeg, "image/jpeg"), prompt="local image")
    job = cluster.client.wait(job_id, timeout=30)
    assert job.state is JobState.COMPLETED
    assert job.request["image_url"].startswith("data:image/jpeg;base64,")
    allow_private = cluster.settings.allow_private_urls  # the simulator is on loopback
    saved = job.save(tmp_path / "video.mp4", allow_private=allow_private)
    assert saved.read_bytes() == VIDEO  # the simulator's MP4, whole
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_one_create_even_when_generate_is_delivered_again(cluster: Cluster) -> None:
    client = cluster.client
    job_id = client.submit(IMG, prompt="delivered thrice")
    job = client.get(job_id)
    for _ in range(3):  # the same message again, as a redelivery would bring it
        client._app.send_task(
            GENERATE_TASK,
            kwargs={"job_id": job_id, "deadline_at": job.deadline_at},
            queue=cluster.settings.queue,
        )
    done = client.wait(job_id, timeout=30)
    assert done.state is JobState.COMPLETED
    time.sleep(1.5)  # let any stray duplicate run
    assert len(cluster.sim.creates(prompt="delivered thrice")) == 1


def test_polls_are_spaced_by_the_interval(cluster: Cluster) -> None:
    job_id = cluster.client.submit(IMG, prompt="spacing [sim:time=4]")
    job = cluster.client.wait(job_id, timeout=30)
    assert job.state is JobState.COMPLETED
    create = cluster.sim.creates(prompt="spacing [sim:time=4]")[0]
    times = [create.t] + [r.t for r in cluster.sim.polls(job.generation_id or "")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    interval = cluster.settings.poll_interval
    assert len(gaps) >= 3
    assert all(gap >= interval * 0.9 for gap in gaps), gaps
    assert all(gap <= interval + 1.5 for gap in gaps), gaps


def test_one_worker_slot_keeps_fifty_jobs_in_flight(cluster: Cluster) -> None:
    """50 jobs of 2 s each on ONE prefork slot end in about one generation time:
    nothing blocks the slot while the upstream works."""
    client = cluster.client
    started = time.monotonic()
    ids = [client.submit(IMG, prompt=f"fifty {i}") for i in range(50)]
    jobs = cluster.wait_all(ids, timeout=60)
    elapsed = time.monotonic() - started
    assert all(j.state is JobState.COMPLETED for j in jobs)
    # Peak in flight, from the simulator's log: generations created but not yet finished.
    events = []
    for job in jobs:
        gen = cluster.sim.state.generations[job.generation_id or ""]
        last_poll = cluster.sim.polls(gen.id)[-1].t
        events += [(gen.created_at, 1), (last_poll, -1)]
    in_flight = peak = 0
    for _, delta in sorted(events):
        in_flight += delta
        peak = max(peak, in_flight)
    print(f"\n50 jobs on one slot: {elapsed:.1f}s, peak {peak} in flight")
    assert peak >= 40, f"only {peak} of 50 jobs were ever in flight at once"
    # Serially this would take 50 x 2 s = 100 s; generous bound for a shared machine.
    assert elapsed < 40, f"50 jobs took {elapsed:.1f}s"


def test_deadline_times_out_a_job_that_never_finishes_with_a_clamped_last_poll(
    cluster: Cluster,
) -> None:
    from producers.client import Client

    # Polls run 1 s apart from the create (just after acceptance): at about 1, 2, 3, 4 s.
    # With a 4.3 s deadline an unclamped chain would poll once more at about 5 s, 0.7 s
    # late; the clamped chain makes its last countdown 0.3 s and ends at the deadline.
    short = Client(settings=cluster.settings.model_copy(update={"deadline": 4.3}))
    job_id = short.submit(IMG, prompt="forever [sim:never]")
    job = short.wait(job_id, timeout=20)
    assert job.state is JobState.TIMED_OUT
    assert job.error and job.error.kind == ErrorKind.DEADLINE
    assert job.finished_at and job.deadline_at
    late = job.finished_at - job.deadline_at
    polls = cluster.sim.polls(job.generation_id or "")
    print(f"\ntimed out {late:+.3f}s from the deadline after {len(polls)} polls")
    assert -0.05 <= late <= 0.4, f"ended {late:+.2f}s from the deadline"
    assert len(polls) >= 3
    assert polls[-1].t <= job.deadline_at + 0.4


@pytest.mark.parametrize(
    ("tag", "kind", "text"),
    [
        ("[sim:error]", ErrorKind.UPSTREAM_ERROR, "simulated"),
        ("[sim:unknown]", ErrorKind.UPSTREAM_PROTOCOL, "unknown upstream status"),
        ("[sim:novideo]", ErrorKind.UPSTREAM_PROTOCOL, "no video URL"),
    ],
)
def test_upstream_failures_fail_the_job_with_a_clear_error(
    cluster: Cluster, tag: str, kind: ErrorKind, text: str
) -> None:
    job = cluster.client.wait(cluster.client.submit(IMG, prompt=f"fails {tag}"), timeout=30)
    assert job.state is JobState.FAILED
    assert job.error and job.error.kind == kind
    assert text in job.error.message


def test_4xx_on_create_fails_at_once_without_retry(cluster: Cluster) -> None:
    cluster.sim.add_fault(status=422, method="POST", message="image_url is not reachable")
    job = cluster.client.wait(cluster.client.submit(IMG, prompt="rejected"), timeout=30)
    assert job.state is JobState.FAILED
    assert job.error and job.error.kind == ErrorKind.UPSTREAM_REJECTED
    assert "image_url is not reachable" in job.error.message
    posts = [r for r in cluster.sim.requests() if r.method == "POST" and r.prompt == "rejected"]
    assert [r.status_code for r in posts] == [422]


@pytest.mark.parametrize(
    ("fault", "label"),
    [
        ({"status": 429, "retry_after": 2, "method": "POST"}, "429 create"),
        ({"status": 500, "count": 2, "method": "POST"}, "500 create"),
        ({"status": 503, "count": 2, "method": "GET"}, "503 polls"),
        ({"status": 429, "retry_after": 2, "method": "GET"}, "429 poll"),
        ({"kind": "disconnect", "count": 2, "method": "GET"}, "dropped polls"),
        ({"kind": "delay", "seconds": 5.5, "method": "GET"}, "slow poll"),  # read timeout 5 s
    ],
)
def test_transient_upstream_errors_are_retried_and_the_job_completes(
    cluster: Cluster, fault: dict[str, object], label: str
) -> None:
    cluster.sim.add_fault(**fault)
    prompt = f"retried {label}"
    job = cluster.client.wait(cluster.client.submit(IMG, prompt=prompt), timeout=40)
    assert job.state is JobState.COMPLETED, job.error
    assert len(cluster.sim.creates(prompt=prompt)) == 1
    faulted = [r for r in cluster.sim.requests() if r.fault]
    assert faulted, "the fault was never hit"
    if fault.get("retry_after"):
        hit = faulted[-1]
        later = [
            r.t
            for r in cluster.sim.requests()
            if r.t > hit.t and (r.prompt == prompt or r.generation_id == job.generation_id)
        ]
        assert later and later[0] - hit.t >= 1.9, "Retry-After was not honoured"


def test_late_poll_never_changes_a_terminal_record(cluster: Cluster) -> None:
    client = cluster.client
    job_id = client.submit(IMG, prompt="late poll")
    job = client.wait(job_id, timeout=30)
    assert job.state is JobState.COMPLETED
    key = client.store.keys.job(job_id)
    before = client.store.redis.hgetall(key)
    polls_before = len(cluster.sim.polls(job.generation_id or ""))
    for seq in (job.polls, job.polls + 1, 99):
        client._app.send_task(
            POLL_TASK,
            kwargs={"job_id": job_id, "deadline_at": job.deadline_at, "seq": seq},
            queue=cluster.settings.queue,
        )
    give_up = time.monotonic() + 15
    dropped = f"event=task.dropped job_id={job_id} step=poll"
    while cluster.log_text().count(dropped) < 3:  # all three late polls ran, and dropped
        assert time.monotonic() < give_up, "the late polls were not all dropped"
        time.sleep(0.2)
    time.sleep(0.5)
    assert client.store.redis.hgetall(key) == before
    assert len(cluster.sim.polls(job.generation_id or "")) == polls_before


def test_apps_without_videoq_can_send_the_task_by_name(cluster: Cluster) -> None:
    foreign = Celery(broker=cluster.settings.redis_url)
    result = foreign.send_task(
        "videoq.generate_video",
        kwargs={"image_url": IMG, "prompt": "from another app", "duration": "5"},
        queue=cluster.settings.queue,
    )
    client = cluster.client
    give_up = time.monotonic() + 10
    while client.store.get(result.id) is None:
        assert time.monotonic() < give_up, "the foreign task never created its job"
        time.sleep(0.1)
    job = client.wait(result.id, timeout=30)
    assert job.state is JobState.COMPLETED
    bad = foreign.send_task(
        "videoq.generate_video", kwargs={"image_url": "not a url"}, queue=cluster.settings.queue
    )
    give_up = time.monotonic() + 10
    while (refused := client.store.get(bad.id)) is None:
        assert time.monotonic() < give_up
        time.sleep(0.1)
    assert refused.state is JobState.FAILED
    assert refused.error and refused.error.kind == ErrorKind.VALIDATION
    assert "image_url" in refused.error.message
    foreign.close()


def test_a_create_whose_answer_is_lost_is_recorded_never_repeated(cluster: Cluster) -> None:
    """The upstream takes longer than the read timeout to answer the create: it may have
    created (and will charge for) a generation, so videoq must not create another."""
    cluster.sim.add_fault(kind="delay", seconds=5.5, method="POST")
    job = cluster.client.wait(cluster.client.submit(IMG, prompt="slow create"), timeout=30)
    assert job.state is JobState.FAILED
    assert job.error and job.error.kind == ErrorKind.CREATE_OUTCOME_UNKNOWN
    assert "read timeout" in job.error.message
    time.sleep(1.0)
    posts = [r for r in cluster.sim.requests() if r.method == "POST" and r.prompt == "slow create"]
    assert len(posts) == 1
