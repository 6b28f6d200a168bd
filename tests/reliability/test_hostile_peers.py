"""Hostile upstreams: a front for the simulator that trickles, redirects, sends endless
or huge answers, or completes with untrustworthy values (a video URL that is not
http(s), credits that are NaN, Infinity or negative).

The contract under test: every outbound call has a total deadline, a cap on the
answer's size (read streaming) and follows no redirect; what the upstream says is
checked before it is stored; one hostile peer never slows the other jobs on the same
worker nor grows the worker's memory. Webhook receivers that misbehave are in
test_hostile_webhooks.py; a Redis that refuses writes in test_redis_faults.py.

Each case runs one worker process with two prefork slots (``-c 2``) and submits
ordinary jobs at the same moment as the hostile one; they must complete as if nothing
were wrong (``hostile_case.run_case``). The worker's whole process tree is sampled for
RSS every 0.2 s.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import cast

import pytest

from tests.reliability.conftest import (
    HOSTILE_DEADLINE,
    TOTAL_TIMEOUT,
    HostileRig,
    report,
    verdict,
)
from tests.reliability.hostile import REWRITES, hostile_tag
from tests.reliability.hostile_case import Case, check_outcome, one_create, outcome, run_case
from worker.job import Job
from worker.states import JobState

pytestmark = pytest.mark.integration


# --- the upstream misbehaves on the create ------------------------------------------------

CREATE_CASES = [
    "trickle_headers",
    "trickle_body",
    "redirect_302",
    "redirect_301",
    "redirect_307",
    "huge",
    "chunked",
]


@pytest.mark.parametrize("mode", CREATE_CASES)
def test_hostile_create_answer(hostile_rig: Callable[[str], HostileRig], mode: str) -> None:
    """A create answered too slowly (total deadline), with a redirect, or with a body
    too big: the job fails at once, one create, no redirect followed."""
    hr = hostile_rig("chain")
    prompt = f"create {mode} {uuid.uuid4().hex[:8]} {hostile_tag(mode, 'create')}"
    case = run_case(hr, [prompt], hostile_timeout=HOSTILE_DEADLINE + 5)
    misbehaved = case.front.misbehaviours("create", prompt)
    job = case.hostile[0]
    trickle = mode.startswith("trickle")
    check_outcome(case, job, "failed", "create_outcome_unknown" if trickle else "upstream_protocol")
    creates = one_create(case, hr, prompt)
    took = (job.finished_at or time.time()) - (job.created_at or 0)
    if trickle and took > TOTAL_TIMEOUT + 3:
        case.problems.append(f"the create took {took:.1f}s (total deadline {TOTAL_TIMEOUT}s)")
    hits = case.front.redirect_hits
    if hits:
        case.problems.append(f"the redirect was followed: {hits}")
    report(
        f"hostile_create ({mode})",
        **case.figures(),
        creates=creates,
        hostile_job_s=round(took, 1),
        redirect_hits=len(hits),
        front=[(m.seconds, m.sent, m.ended) for m in misbehaved],
    )
    verdict(case.problems)


# --- the upstream misbehaves on status calls ------------------------------------------------

STATUS_CASES = ["trickle", "huge", "chunked", "redirect"]


@pytest.mark.parametrize("poll_mode", ["chain", "batch"])
@pytest.mark.parametrize("mode", STATUS_CASES)
def test_hostile_status_answer(
    hostile_rig: Callable[[str], HostileRig], mode: str, poll_mode: str
) -> None:
    """Status answers that trickle under the read timeout end the job at its deadline
    (polls retried, each cut at the total deadline); huge, endless or redirected ones
    fail it as a protocol error."""
    hr = hostile_rig(poll_mode)
    prompt = f"status {mode} {uuid.uuid4().hex[:8]} {hostile_tag(mode, 'status')}"
    case = run_case(hr, [prompt], hostile_timeout=HOSTILE_DEADLINE + 6)
    job = case.hostile[0]
    misbehaved = case.front.misbehaviours("status", job.generation_id)
    polls = len(hr.rig.sim.polls(job.generation_id or ""))
    if mode == "trickle":
        check_outcome(case, job, "timed_out", "deadline")
        late = (job.finished_at or time.time()) - (job.deadline_at or 0)
        if late > 1.5:
            case.problems.append(f"ended {late:.1f}s after its deadline (allowed 1.5s)")
        if polls < 2:
            case.problems.append(f"{polls} status calls: polls were not retried")
        slow = [m.seconds for m in misbehaved if m.seconds > TOTAL_TIMEOUT + 1.5]
        if slow:
            case.problems.append(
                f"status calls held open for {slow}s (total deadline {TOTAL_TIMEOUT}s)"
            )
    else:
        check_outcome(case, job, "failed", "upstream_protocol")
    one_create(case, hr, prompt)
    hits = case.front.redirect_hits
    if hits:
        case.problems.append(f"the redirect was followed: {hits}")
    report(
        f"hostile_status ({mode}, {poll_mode})",
        **case.figures(),
        status_calls=polls,
        redirect_hits=len(hits),
        front=[(m.seconds, m.sent, m.ended) for m in misbehaved],
    )
    verdict(case.problems)


# --- completed, but with values that cannot be trusted ------------------------------------------


def _check_untrustworthy(case: Case, mode: str, job: Job, raw: dict[str, str]) -> None:
    """A video URL that is not http(s) fails the job, stored nowhere; credits that
    cannot be trusted are dropped with a note (``raw``: the job's Redis hash)."""
    if mode.startswith("url_"):
        check_outcome(case, job, "failed", "upstream_protocol")
        if job.video_url is not None:
            case.problems.append(f"{mode}: video_url {job.video_url!r} was stored")
        return
    if job.state is not JobState.COMPLETED:
        case.problems.append(f"{mode}: ended {outcome(job)} (expected completed)")
    if job.credits_used is not None:
        case.problems.append(f"{mode}: credits_used {job.credits_used!r} stored")
    notes = str(job.to_dict().get("notes") or raw.get("notes") or "")
    if "credit" not in notes.lower():
        case.problems.append(f"{mode}: no note about the credits ({notes!r})")


def _name_the_mode(case: Case, mode: str, since: int) -> None:
    """Prefix the problems found since index ``since`` with the mode, if they lack it."""
    for i in range(since, len(case.problems)):
        if not case.problems[i].startswith(mode):
            case.problems[i] = f"{mode}: {case.problems[i]}"


@pytest.mark.parametrize("poll_mode", ["chain", "batch"])
def test_completed_answer_with_untrustworthy_values(
    hostile_rig: Callable[[str], HostileRig], poll_mode: str
) -> None:
    """A video URL that is not http(s) fails the job (no URL stored); credits that are
    NaN, Infinity or negative are dropped with a note, and the job still completes and
    is counted."""
    hr = hostile_rig(poll_mode)
    r = hr.rig.raw
    keys = hr.rig.cluster.client.store.keys
    stats_key = keys.stats()

    def completed_records() -> int:
        return sum(r.hget(k, "state") == "completed" for k in r.scan_iter(keys.job("*")))

    def counters() -> tuple[int, int]:
        return (
            int(r.hget(stats_key, "state:completed") or 0),
            int(r.hget(stats_key, "latency_count") or 0),
        )

    give_up = time.monotonic() + 30  # let jobs of earlier cases end (bounded) ...
    while r.zcard(keys.active()) and time.monotonic() < give_up:
        time.sleep(0.2)
    counted_before = counters()  # ... so that these snapshots do not race them
    records_before = completed_records()
    run = uuid.uuid4().hex[:8]
    prompts = {mode: f"completed {mode} {run} {hostile_tag(mode, 'status')}" for mode in REWRITES}
    case = run_case(hr, list(prompts.values()), hostile_timeout=30)
    counted_after = counters()
    counted = counted_after[0] - counted_before[0]
    timed = counted_after[1] - counted_before[1]
    records = completed_records() - records_before
    outcomes: dict[str, str] = {}
    for mode, job in zip(prompts, case.hostile, strict=True):
        raw = cast(dict[str, str], r.hgetall(keys.job(job.id)))  # decode_responses=True
        outcomes[mode] = f"{job.state.value}/{job.error.kind if job.error else '-'}"
        before = len(case.problems)
        _check_untrustworthy(case, mode, job, raw)
        one_create(case, hr, prompts[mode])
        _name_the_mode(case, mode, before)
    if counted != records or timed != records:
        case.problems.append(
            f"stats state:completed rose by {counted} and latency_count by "
            f"{timed} while {records} records became completed"
        )
    report(
        f"hostile_completed ({poll_mode})",
        **case.figures(),
        outcomes=outcomes,
        completed_counted=counted,
        completed_latency_counted=timed,
        completed_records=records,
    )
    verdict(case.problems)
