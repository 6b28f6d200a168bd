"""Hostile webhook receivers: they trickle, answer 1.5 GB, never end their answer, or
redirect. Every delivery attempt is cut (total deadline, size cap, no redirect) with
an error recorded and retried until the window ends; never two deliveries of one job
at once; the ordinary jobs beside them, and their webhooks, are unaffected (one
worker process with ``-c 2``, as in test_hostile_peers.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from tests.reliability.conftest import (
    WEBHOOK_TIMEOUT,
    WEBHOOK_WINDOW,
    HostileRig,
    report,
    verdict,
)
from tests.reliability.hostile_case import outcome, run_case
from worker.states import JobState

pytestmark = pytest.mark.integration


# --- webhook receivers misbehave ----------------------------------------------------------------

WEBHOOK_CASES = ["trickle", "huge", "chunked", "redirect"]


@pytest.mark.parametrize("mode", WEBHOOK_CASES)
def test_hostile_webhook_receiver(hostile_rig: Callable[[str], HostileRig], mode: str) -> None:
    """Two jobs whose receivers trickle, answer 1.5 GB, never end their answer, or
    redirect: each attempt is cut (total deadline, size cap, no redirect) with an
    error recorded, retried until the window ends, then ``failed``; never two
    deliveries of one job at once; the ordinary jobs and their webhooks are unaffected."""
    hr = hostile_rig("chain")
    run = uuid.uuid4().hex[:8]
    prompts = [f"webhook {mode} {run} #{i} [sim:time=1]" for i in range(2)]
    settle = 1.0 + 2 + WEBHOOK_WINDOW + WEBHOOK_TIMEOUT + 8
    case = run_case(hr, prompts, hostile_timeout=settle, webhook_path=f"/{mode}")
    state = case.receiver
    at_once: dict[str, int] = {}
    cut_after: list[float] = []
    attempts: list[int] = []
    for job in case.hostile:
        webhook_id = f"{job.id}.{job.state.value}"
        deliveries = [d for d in state.deliveries if d.webhook_id == webhook_id]
        at_once[job.id] = state.most_at_once[webhook_id]
        cut_after += [d.seconds for d in deliveries]
        attempts.append(len(job.webhook_attempts))
        if job.state is not JobState.COMPLETED:
            case.problems.append(f"hostile job ended {outcome(job)}")
        if job.webhook_state != "failed":
            case.problems.append(
                f"webhook_state {job.webhook_state!r} (expected failed) "
                f"after {len(job.webhook_attempts)} attempts"
            )
        if len(job.webhook_attempts) < 2:
            case.problems.append(f"{len(job.webhook_attempts)} webhook attempts (not retried)")
        no_error = [a for a in job.webhook_attempts if not a.get("error")]
        if no_error:
            case.problems.append(f"attempts without an error: {no_error}")
        if at_once[job.id] > 1:
            case.problems.append(f"{at_once[job.id]} deliveries of one job at once")
        # an attempt scheduled inside the window may start up to one delivery late
        last = max((float(a.get("at", 0)) for a in job.webhook_attempts), default=0.0)
        if job.finished_at and last > job.finished_at + WEBHOOK_WINDOW + WEBHOOK_TIMEOUT + 1:
            case.problems.append(
                f"an attempt {last - job.finished_at:.1f}s after the end (window {WEBHOOK_WINDOW}s)"
            )
    held = [s for s in cut_after if s > WEBHOOK_TIMEOUT + 1.5]
    if held:
        case.problems.append(
            f"deliveries held open for {sorted(held)}s (webhook deadline {WEBHOOK_TIMEOUT}s)"
        )
    if state.redirect_hits:
        case.problems.append(f"the redirect was followed: {state.redirect_hits}")
    errors = sorted({str(a.get("error")) for j in case.hostile for a in j.webhook_attempts})
    report(
        f"hostile_webhook ({mode})",
        **case.figures(),
        attempts=attempts,
        most_at_once=max(at_once.values(), default=0),
        delivery_s_max=max(cut_after, default=0.0),
        errors=errors,
        redirect_hits=len(state.redirect_hits),
    )
    verdict(case.problems)
