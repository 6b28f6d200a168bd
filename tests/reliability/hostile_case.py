"""One hostile case on the hostile rig (``hostile_rig`` in conftest.py): hostile jobs
and ordinary ones submitted at the same moment, then what happened to both, the
worker's memory and the peers' records."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.reliability.conftest import HOSTILE_GEN, IMG, RIG_SETTINGS, HostileRig
from tests.reliability.hostile import FrontRecord, ReceiverRecord
from tests.reliability.memory import TreeRSS
from worker.job import Job
from worker.states import JobState

ORDINARY = 6  # ordinary jobs submitted beside each hostile one
MEMORY_GROWTH_MB = 200.0
# Generous: the failure mode was minutes. Ordinary jobs are polled every second; a
# tick takes each answer as it arrives, so a trickling call beside them holds none back.
LAG_BOUND = 3 * RIG_SETTINGS["poll_interval"] + 3.0


def wait_until(
    client: Any, ids: list[str], done: Callable[[Job], bool], timeout: float
) -> list[Job]:
    """The jobs once all are ``done``, or as they are after ``timeout`` (no raise)."""
    give_up = time.monotonic() + timeout
    while True:
        jobs = [client.get(i) for i in ids]
        if all(done(j) for j in jobs) or time.monotonic() > give_up:
            return jobs
        time.sleep(0.1)


def _terminal(job: Job) -> bool:
    return job.is_terminal


def _webhook_settled(job: Job) -> bool:
    return job.is_terminal and job.webhook_state in ("delivered", "failed")


@dataclass
class Case:
    hostile: list[Job]
    ordinary: list[Job]
    lags: list[float]
    memory_growth_mb: float
    seconds: float
    front: FrontRecord
    receiver: ReceiverRecord
    problems: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "hostile": [
                f"{j.state.value}/{j.error.kind if j.error else '-'}" for j in self.hostile
            ],
            "ordinary_completed": f"{sum(j.state is JobState.COMPLETED for j in self.ordinary)}"
            f"/{len(self.ordinary)}",
            "ordinary_lag_max_s": round(max(self.lags), 2) if self.lags else None,
            "worker_tree_rss_growth_mb": self.memory_growth_mb,
            "case_s": round(self.seconds, 1),
        }


def run_case(
    hr: HostileRig,
    hostile_prompts: list[str],
    *,
    hostile_timeout: float,
    webhook_path: str | None = None,
) -> Case:
    """Submit the hostile jobs and ``ORDINARY`` ordinary ones at the same moment; wait
    for all; check the ordinary jobs and the worker's memory (into ``problems``)."""
    client = hr.rig.cluster.client
    sim = hr.rig.sim
    run = uuid.uuid4().hex[:8]
    hook = hr.receiver.url(webhook_path) if webhook_path else None
    ok_hook = hr.receiver.url("/ok") if webhook_path else None
    started = time.monotonic()
    try:
        with TreeRSS(hr.worker_pid, on_exceed=hr.stop_peers) as rss:
            hostile_ids = [client.submit(IMG, prompt=p, webhook_url=hook) for p in hostile_prompts]
            ordinary_ids = [
                client.submit(IMG, prompt=f"ordinary {run} #{i}", webhook_url=ok_hook)
                for i in range(ORDINARY)
            ]
            settled = _webhook_settled if webhook_path else _terminal
            ordinary = wait_until(client, ordinary_ids, settled, 60)
            left = hostile_timeout - (time.monotonic() - started)
            hostile = wait_until(client, hostile_ids, settled, max(left, 0.0))
        seconds = time.monotonic() - started
    finally:
        front, receiver = hr.front.reset(), hr.receiver.reset()
        time.sleep(0.5)  # answers cut by the reset finish recording
    create_at = {r.prompt: r.t for r in sim.creates()}
    lags = [
        j.finished_at - (create_at[j.request["prompt"]] + HOSTILE_GEN)
        for j in ordinary
        if j.finished_at and j.request["prompt"] in create_at
    ]
    case = Case(hostile, ordinary, lags, rss.growth_mb, seconds, front, receiver)
    not_done = [j.state.value for j in ordinary if j.state is not JobState.COMPLETED]
    if not_done:
        case.problems.append(f"ordinary jobs not completed: {not_done}")
    if lags and max(lags) > LAG_BOUND:
        case.problems.append(f"ordinary completion lag {max(lags):.1f}s > {LAG_BOUND}s")
    if webhook_path:
        undelivered = [j.webhook_state for j in ordinary if j.webhook_state != "delivered"]
        if undelivered:
            case.problems.append(f"ordinary webhooks not delivered: {undelivered}")
    if rss.growth_mb > MEMORY_GROWTH_MB:
        case.problems.append(
            f"worker tree RSS grew {rss.growth_mb} MB (> {MEMORY_GROWTH_MB})"
            + (" and the peer was stopped by the safety brake" if rss.tripped else "")
        )
    if hr.rig.cluster.workers[-1].poll() is not None:
        case.problems.append("the worker process died")
    return case


def outcome(job: Job) -> tuple[str, str | None]:
    return job.state.value, job.error.kind if job.error else None


def check_outcome(case: Case, job: Job, state: str, kind: str) -> None:
    if outcome(job) != (state, kind):
        message = job.error.message[:120] if job.error else job.last_error
        case.problems.append(
            f"hostile job ended {outcome(job)} (expected {state}/{kind}); message: {message!r}"
        )


def one_create(case: Case, hr: HostileRig, prompt: str) -> int:
    creates = len(hr.rig.sim.creates(prompt=prompt))
    if creates != 1:
        case.problems.append(f"{creates} creates reached the upstream (expected 1)")
    return creates
