"""The concurrency budget on a fake clock: a line in acceptance order, slots freed by
every terminal state, the waiting job woken by the one that frees its slot."""

from __future__ import annotations

from collections.abc import Callable

from tests.worker.conftest import IMG, World
from worker.answers import Status
from worker.request import parse_request
from worker.states import JobState


def submit(w: World, job_id: str) -> None:
    w.store.create(
        job_id,
        parse_request({"image_url": IMG}),
        accepted_at=w.clock.now,
        deadline_at=w.deadline_at,
    )
    w.clock.advance(1.0)


def test_only_the_cap_runs_and_the_rest_wait_in_order(world: Callable[..., World]) -> None:
    w = world(max_in_flight=2)
    for job_id in ("a", "b", "c", "d"):
        submit(w, job_id)
    for job_id in ("d", "c", "b", "a"):  # generate messages arrive in any order
        w.generate(job_id)
    # the first two accepted run, whatever order their messages came in
    assert {j for j in "abcd" if w.state(j) is JobState.GENERATING} == {"a", "b"}
    assert {j for j in "abcd" if w.state(j) is JobState.QUEUED} == {"c", "d"}
    assert w.store.budget.in_flight_slots() == 2
    assert len(w.upstream.creates) == 2
    # d and c, finding free slots that were not theirs, woke the jobs first in line
    woken = {c.job_id for c in w.scheduler.calls if c.step == "generate"}
    assert woken == {"a", "b"}


def test_a_finished_job_frees_its_slot_and_wakes_the_next(world: Callable[..., World]) -> None:
    w = world(max_in_flight=1)
    submit(w, "a")
    submit(w, "b")
    w.generate("a")
    w.scheduler.calls.clear()
    w.generate("b")
    assert w.state("b") is JobState.QUEUED and w.upstream.creates and len(w.upstream.creates) == 1
    w.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    w.poll(1, job_id="a")
    assert w.store.budget.in_flight_slots() == 0
    woken = [c for c in w.scheduler.calls if c.step == "generate"]
    assert [c.job_id for c in woken] == ["b"]
    w.generate("b", attempt=woken[0].attempt)
    assert w.state("b") is JobState.GENERATING


def test_without_a_cap_nothing_waits(world: Callable[..., World]) -> None:
    w = world(max_in_flight=0)
    for job_id in "abc":
        submit(w, job_id)
        w.generate(job_id)
    assert all(w.state(j) is JobState.GENERATING for j in "abc")
    assert w.store.budget.in_flight_slots() == 0
