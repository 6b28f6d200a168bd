"""Hostile peers: an upstream and webhook receivers that trickle, redirect, send
endless or huge answers or untrustworthy values, and a Redis that refuses writes.

The contract under test: every outbound call has a total deadline, a cap on the
answer's size (read streaming) and follows no redirect; what the upstream says is
checked before it is stored; one hostile peer never slows the other jobs on the same
worker nor grows the worker's memory; a Redis that refuses writes never kills a worker
and loses no job.

Each case runs one worker process with two prefork slots (``-c 2``) and submits
ordinary jobs at the same moment as the hostile one; they must complete as if nothing
were wrong. The worker's whole process tree is sampled for RSS every 0.2 s.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from producers.local import RedisServer
from simulator import Simulator
from tests.conftest import TEST_KEY
from tests.integration.conftest import make_cluster
from tests.reliability.conftest import IMG, RIG_SETTINGS, Rig, check_invariants, report
from tests.reliability.hostile import (
    REWRITES,
    FrontRecord,
    HostileReceiver,
    HostileUpstream,
    ReceiverRecord,
    TreeRSS,
    hostile_tag,
)
from worker.errors import Unavailable
from worker.job import Job
from worker.states import JobState

pytestmark = pytest.mark.integration

GEN = 3.0  # the simulator's generation time for ordinary jobs
ORDINARY = 6  # ordinary jobs submitted beside each hostile one
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
TOTAL_TIMEOUT = 3.0
WEBHOOK_TIMEOUT = 2.0
WEBHOOK_WINDOW = 8.0
DEADLINE = 20.0
MEMORY_GROWTH_MB = 200.0
# Generous: the failure mode was minutes. Ordinary jobs are polled every second; a
# tick takes each answer as it arrives, so a trickling call beside them holds none back.
LAG_BOUND = 3 * RIG_SETTINGS["poll_interval"] + 3.0

SETTINGS: dict[str, Any] = {
    **RIG_SETTINGS,
    "deadline": DEADLINE,
    "webhook_secret": SECRET,
    "webhook_window": WEBHOOK_WINDOW,
    "http_total_timeout": TOTAL_TIMEOUT,
    "webhook_timeout": WEBHOOK_TIMEOUT,
    "allow_private_urls": True,
}


@dataclass
class HostileRig:
    rig: Rig
    front: HostileUpstream
    receiver: HostileReceiver
    restarts: int = 0

    @property
    def worker_pid(self) -> int:
        return self.rig.cluster.workers[-1].pid

    def stop_peers(self) -> None:
        """Stop what the peers are sending now (the memory watchdog's brake)."""
        self.front.state.stop.set()
        self.receiver.state.stop.set()


@pytest.fixture(scope="module")
def hostile_rig(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], HostileRig]]:
    """``hostile_rig(poll_mode)``: one rig per poll mode, shared by this module's tests:
    a private Redis, the simulator behind the hostile front, a webhook receiver and
    one worker process with ``-c 2``."""
    made: dict[str, HostileRig] = {}

    def get(mode: str) -> HostileRig:
        hr = made.get(mode)
        if hr is None:
            tmp = tmp_path_factory.mktemp(f"hostile-{mode}")
            server = RedisServer(appendonly=True).start()
            sim = Simulator(api_key=TEST_KEY, generation_time=GEN).start()
            front = HostileUpstream(sim.port).start()
            settings = {**SETTINGS, "aimlapi_base_url": front.base_url, "poll_mode": mode}
            cluster = make_cluster(server.url, tmp, f"hostile-{mode}", sim, **settings)
            hr = HostileRig(Rig(server, sim, cluster, tmp), front, HostileReceiver().start())
            made[mode] = hr
            cluster.start_worker(concurrency=2)
        elif hr.rig.cluster.workers[-1].poll() is not None:  # a previous case killed it
            hr.restarts += 1
            hr.rig.cluster.start_worker(concurrency=2)
        return hr

    yield get
    for hr in made.values():
        hr.front.reset()
        hr.receiver.reset()
        hr.rig.cluster.stop()
        if request.session.testsfailed:
            print(f"\n--- worker log (hostile rig) ---\n{hr.rig.cluster.log_text()[-4000:]}")
        hr.front.stop()
        hr.receiver.stop()
        hr.rig.sim.stop()
        hr.rig.redis_server.cleanup()


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
    hook = {"webhook_url": hr.receiver.url(webhook_path)} if webhook_path else {}
    ok_hook = {"webhook_url": hr.receiver.url("/ok")} if webhook_path else {}
    started = time.monotonic()
    try:
        with TreeRSS(hr.worker_pid, on_exceed=hr.stop_peers) as rss:
            hostile_ids = [client.submit(IMG, prompt=p, **hook) for p in hostile_prompts]
            ordinary_ids = [
                client.submit(IMG, prompt=f"ordinary {run} #{i}", **ok_hook)
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
        j.finished_at - (create_at[j.request["prompt"]] + GEN)
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


def verdict(problems: list[str]) -> None:
    """Fail with every problem found, on one line each."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _outcome(job: Job) -> tuple[str, str | None]:
    return job.state.value, job.error.kind if job.error else None


def _check_outcome(case: Case, job: Job, state: str, kind: str) -> None:
    if _outcome(job) != (state, kind):
        message = job.error.message[:120] if job.error else job.last_error
        case.problems.append(
            f"hostile job ended {_outcome(job)} (expected {state}/{kind}); message: {message!r}"
        )


def _one_create(case: Case, hr: HostileRig, prompt: str) -> int:
    creates = len(hr.rig.sim.creates(prompt=prompt))
    if creates != 1:
        case.problems.append(f"{creates} creates reached the upstream (expected 1)")
    return creates


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
    case = run_case(hr, [prompt], hostile_timeout=DEADLINE + 5)
    misbehaved = case.front.misbehaviours("create", prompt)
    job = case.hostile[0]
    trickle = mode.startswith("trickle")
    _check_outcome(
        case, job, "failed", "create_outcome_unknown" if trickle else "upstream_protocol"
    )
    creates = _one_create(case, hr, prompt)
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
    case = run_case(hr, [prompt], hostile_timeout=DEADLINE + 6)
    job = case.hostile[0]
    misbehaved = case.front.misbehaviours("status", job.generation_id)
    polls = len(hr.rig.sim.polls(job.generation_id or ""))
    if mode == "trickle":
        _check_outcome(case, job, "timed_out", "deadline")
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
        _check_outcome(case, job, "failed", "upstream_protocol")
    _one_create(case, hr, prompt)
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
        raw = r.hgetall(keys.job(job.id))
        outcomes[mode] = f"{job.state.value}/{job.error.kind if job.error else '-'}"
        before = len(case.problems)
        if mode.startswith("url_"):
            _check_outcome(case, job, "failed", "upstream_protocol")
            if job.video_url is not None:
                case.problems.append(f"{mode}: video_url {job.video_url!r} was stored")
        else:
            if job.state is not JobState.COMPLETED:
                case.problems.append(f"{mode}: ended {_outcome(job)} (expected completed)")
            if job.credits_used is not None:
                case.problems.append(f"{mode}: credits_used {job.credits_used!r} stored")
            notes = str(job.to_dict().get("notes") or raw.get("notes") or "")
            if "credit" not in notes.lower():
                case.problems.append(f"{mode}: no note about the credits ({notes!r})")
        _one_create(case, hr, prompts[mode])
        for i in range(before, len(case.problems)):
            if not case.problems[i].startswith(mode):
                case.problems[i] = f"{mode}: {case.problems[i]}"
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
            case.problems.append(f"hostile job ended {_outcome(job)}")
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


# --- Redis refuses writes ---------------------------------------------------------------------


def _fill_until_oom(r: redis.Redis, value_bytes: int = 64 * 1024, most: int = 5000) -> int:
    """Write filler keys until Redis refuses a write for lack of memory, then pin
    ``maxmemory`` 1 MB under what is used, so that the memory freed when a connection's
    buffers shrink never lets a write through. Returns the number of filler keys."""
    blob = b"f" * value_bytes
    for n in range(most):
        try:
            r.set(f"filler:{n}", blob)
        except redis.exceptions.OutOfMemoryError:
            used = int(r.info("memory")["used_memory"])
            r.config_set("maxmemory", str(used - (1 << 20)))
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                r.set("filler:probe", "1")
            return n
    raise AssertionError(f"Redis still took writes after {most} filler keys")


def test_redis_refusing_writes_kills_no_worker_and_loses_no_job(rig: Any) -> None:
    """Redis at ``maxmemory`` (noeviction) for ~5 s with jobs in flight: workers stay
    up, producers get ``Unavailable``, and once memory is freed every accepted job
    completes with one create."""
    r = rig(workers=2, concurrency=2, generation_time=4.0)
    raw = r.raw
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", "20mb")
    ids = r.submit(20)
    r.wait_generating(ids)
    problems: list[str] = []
    filled = _fill_until_oom(raw)
    full_at = time.monotonic()
    submit_error: BaseException | None = None
    try:
        ids.append(r.cluster.client.submit(IMG, prompt="submitted while redis is full"))
        problems.append("Client.submit succeeded while Redis refused writes")
    except Unavailable as exc:
        submit_error = exc
    except Exception as exc:  # the wrong exception is the finding
        submit_error = exc
        problems.append(f"Client.submit raised {type(exc).__name__}, not Unavailable: {exc}")
    died_during: list[int] = []
    while time.monotonic() - full_at < 5.0:
        died_during = [i for i, w in enumerate(r.cluster.workers) if w.poll() is not None]
        time.sleep(0.2)
    held_s = round(time.monotonic() - full_at, 1)
    if died_during:
        exits = [r.cluster.workers[i].returncode for i in died_during]
        problems.append(f"workers {died_during} exited while Redis was full (codes {exits})")
    for key in raw.scan_iter("filler:*"):
        raw.delete(key)
    log = r.cluster.log_text()
    unrecoverable = log.count("Unrecoverable error")
    figures = None
    if all(w.poll() is not None for w in r.cluster.workers):
        problems.append("no worker left to finish the jobs")
    else:
        try:
            figures = check_invariants(r, ids, generation_time=4.0, timeout=60)
            if figures.states != {"completed": len(ids)}:
                problems.append(f"accepted jobs ended {figures.states}")
        except AssertionError as exc:
            problems.append(f"after memory was freed: {exc}")
    report(
        "redis_refuses_writes",
        filler_keys=filled,
        held_full_s=held_s,
        submit_raised=type(submit_error).__name__ if submit_error else None,
        workers_alive=sum(w.poll() is None for w in r.cluster.workers),
        unrecoverable_errors_logged=unrecoverable,
        figures=figures,
    )
    verdict(problems)
