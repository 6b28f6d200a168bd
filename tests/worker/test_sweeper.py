"""The sweeper and the active set, on a fake clock with the real job store."""

from __future__ import annotations

from collections.abc import Callable

from tests.fakes import Scheduled
from tests.worker.conftest import World
from worker.answers import Status
from worker.states import JobState
from worker.sweeper import SweeperThread, sweep


def _drain(w: World) -> list[Scheduled]:
    calls = list(w.scheduler.calls)
    w.scheduler.calls.clear()
    return calls


def test_a_job_whose_generate_never_ran_is_resumed_after_the_stall_timeout(
    world: Callable[..., World],
) -> None:
    w = world(stall_timeout=20.0)
    w.job()
    w.clock.advance(19.0)
    assert sweep(w.rt, backlog=0).overdue == 0
    w.clock.advance(2.0)
    report = sweep(w.rt, backlog=0)
    assert report.resumed == {"queued": 1}
    [call] = _drain(w)
    assert (call.step, call.job_id, call.countdown, call.attempt) == ("generate", "job-1", 0, 1)
    assert call.deadline_at == w.deadline_at
    # Resumed once per stall period, not on every sweep.
    w.clock.advance(5.0)
    assert sweep(w.rt, backlog=0).resumed == {}


def test_a_generating_job_whose_poll_vanished_gets_the_next_poll_number(
    world: Callable[..., World],
) -> None:
    w = world(stall_timeout=20.0, poll_interval=10.0)
    w.job()
    w.generate()
    first = w.scheduler.pop()
    assert (first.step, first.seq) == ("poll", 1)
    w.upstream.status_answers.append(Status("gen-1", "generating"))
    w.poll(1)
    assert w.scheduler.pop().seq == 2  # the held poll #2 is then lost with its worker
    w.clock.advance(10.0 + 19.0)
    assert sweep(w.rt, backlog=0).overdue == 0  # not yet: 20 s of grace after the due poll
    w.clock.advance(2.0)
    assert sweep(w.rt, backlog=0).resumed == {"generating": 1}
    [call] = _drain(w)
    assert (call.step, call.seq, call.countdown) == ("poll", 2, 0)
    # The resumed poll runs the chain on; the lost one, should it come back, is a no-op.
    w.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    w.poll(2)
    assert w.state().value == "completed"
    w.poll(2)
    assert len(w.upstream.polls) == 2


def test_a_job_alive_and_on_schedule_is_never_resumed(world: Callable[..., World]) -> None:
    # Polls far apart (longer than a claim's lease of one upstream call and the stall
    # timeout): only the due time each poll step writes keeps the job off the sweep.
    w = world(stall_timeout=5.0, poll_interval=30.0, deadline=1000.0)
    w.job()
    w.generate()
    for _ in range(8):  # a poll every 30 s, sweeps in between
        w.clock.advance(29.0)
        assert sweep(w.rt, backlog=0).overdue == 0
        w.clock.advance(1.0)
        w.upstream.status_answers.append(Status("gen-1", "generating"))
        w.poll(w.scheduler.pop().seq)
    assert len(w.upstream.polls) == 8
    assert sweep(w.rt, backlog=0).resumed == {}


def test_terminal_jobs_leave_the_active_set(world: Callable[..., World]) -> None:
    w = world(stall_timeout=5.0)
    w.job()
    assert w.store.active_count() == 1
    w.generate()
    w.scheduler.pop()
    w.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    w.poll(1)
    assert w.store.active_count() == 0
    w.clock.advance(1000.0)
    assert sweep(w.rt, backlog=0).overdue == 0


def test_an_expired_record_is_forgotten_not_resumed(world: Callable[..., World]) -> None:
    w = world(stall_timeout=5.0)
    w.job()
    w.store.redis.delete(w.store.keys.job("job-1"))
    w.clock.advance(10.0)
    report = sweep(w.rt, backlog=0)
    assert (report.forgotten, report.resumed) == (1, {})
    assert w.store.active_count() == 0
    assert _drain(w) == []


def test_a_backlog_defers_the_sweep(world: Callable[..., World]) -> None:
    w = world(stall_timeout=5.0)
    w.job()
    w.clock.advance(10.0)
    report = sweep(w.rt, backlog=3)
    assert (report.overdue, report.resumed) == (1, {})
    assert _drain(w) == []
    assert sweep(w.rt, backlog=0).resumed == {"queued": 1}


def test_a_stuck_create_is_settled_not_repeated(world: Callable[..., World]) -> None:
    """A worker died during the create: the sweeper sends the generate step again,
    which records the unknown outcome instead of creating a second time."""
    w = world(stall_timeout=5.0)
    w.job()
    timeout = w.rt.settings.create_claim_timeout
    w.store.transition(
        "job-1",
        [JobState.QUEUED],
        JobState.SUBMITTING,
        {"claim_token": "dead-worker", "claim_at": w.clock.now},
        now=w.clock.now,
        due_at=w.clock.now + timeout,
    )
    w.clock.advance(timeout + 1)
    assert sweep(w.rt, backlog=0).resumed == {"submitting": 1}
    call = w.scheduler.pop()
    w.generate(attempt=call.attempt)
    job = w.store.get("job-1")
    assert job is not None and job.state.value == "failed"
    assert job.error is not None and job.error.kind == "create_outcome_unknown"
    assert w.upstream.creates == []


def test_only_one_sweeper_per_interval(world: Callable[..., World]) -> None:
    w = world(stall_timeout=5.0, sweep_interval=30.0)
    one, two = SweeperThread(w.rt, "one"), SweeperThread(w.rt, "two")
    assert one.sweep_once() is not None
    assert two.sweep_once() is None
    assert one.sweep_once() is None
