"""The fault-injection rig: a private AOF Redis, the simulator, real worker processes.

Each test gets its own ``redis-server`` (so Redis can be killed and the broker's own
keys, ``unacked`` included, belong to that test alone), its own simulator (whose
request log is the oracle for "one create per job"), and workers started with
``start_new_session`` so a SIGKILL takes a worker's whole process group, as a crashed
container would.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from producers.local import RedisServer
from simulator import Simulator
from tests.conftest import TEST_KEY
from tests.integration.conftest import Cluster, make_cluster
from tests.reliability.hostile import HostileReceiver, HostileUpstream
from tests.reliability.proxy import CuttableProxy
from worker.job import Job
from worker.states import ErrorKind

pytestmark = pytest.mark.integration

IMG = "https://example.com/cat.png"

# Short timings so that faults and recoveries happen in seconds. The visibility timeout
# is long enough that recovery within it proves the sweeper, not Redis's redelivery,
# brought the jobs back.
RIG_SETTINGS: dict[str, Any] = {
    "poll_interval": 1.0,
    "deadline": 90.0,
    "retry_backoff": 0.5,
    "retry_backoff_max": 2.0,
    "http_connect_timeout": 1.0,
    "http_read_timeout": 2.0,
    "stall_timeout": 3.0,
    "sweep_interval": 1.0,
    "visibility_timeout": 20,
}


@dataclass
class Rig:
    redis_server: RedisServer
    sim: Simulator
    cluster: Cluster
    tmp: Path
    proxies: list[CuttableProxy] = field(default_factory=list)

    @property
    def raw(self) -> redis.Redis:
        """A direct connection to the real Redis (not through any proxy)."""
        return redis.Redis(port=self.redis_server.port, decode_responses=True)

    def submit(self, n: int, tag: str = "", **options: Any) -> list[str]:
        return [
            self.cluster.client.submit(IMG, prompt=f"rel-{i} {tag}".strip(), **options)
            for i in range(n)
        ]

    def wait_generating(self, ids: list[str], timeout: float = 60.0) -> None:
        give_up = time.monotonic() + timeout
        while True:
            jobs = [self.cluster.client.get(i) for i in ids]
            if all(j.generation_id and not j.is_terminal for j in jobs):
                return
            if any(j.is_terminal for j in jobs) or time.monotonic() > give_up:
                states = Counter(j.state.value for j in jobs)
                raise AssertionError(f"not all generating: {dict(states)}")
            time.sleep(0.1)

    def kill_worker(self, index: int) -> float:
        """SIGKILL a worker's whole process group; returns when it happened."""
        proc = self.cluster.workers[index]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return time.time()

    def worker_rss_kb(self, index: int) -> int:
        """Resident memory of a worker's main process (which holds countdown tasks)."""
        status = Path(f"/proc/{self.cluster.workers[index].pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def _task_job_id(raw: str) -> str | None:
    """The job id a kombu Redis message is for (messages carry kwargs only)."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # unacked entries: [message, exchange, routing key]
            message = message[0]
        body = json.loads(base64.b64decode(message["body"]))
        return str(body[1].get("job_id"))
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def messages_for(rig: Rig, ids: set[str]) -> list[str]:
    """Messages about these jobs still in the queue or held unacknowledged."""
    r = rig.raw
    # the connection decodes its replies (decode_responses=True): str, never bytes
    queued = cast(list[str], r.lrange(rig.cluster.settings.queue, 0, -1))
    held = list(cast(dict[str, str], r.hgetall("unacked")).values())
    return [m for m in queued + held if _task_job_id(m) in ids]


@dataclass
class Figures:
    jobs: int
    states: dict[str, int]
    duplicate_creates: int
    missing_creates: int
    lost: int
    lag_p50: float
    lag_max: float
    latest_vs_deadline: float


def check_invariants(
    rig: Rig,
    ids: list[str],
    *,
    generation_time: float,
    timeout: float = 60.0,
    slack: float = 2.0,
    drain_timeout: float | None = None,
) -> Figures:
    """Every job terminal by its deadline + slack; one create per job; no record lost;
    no message left for a finished job; returns the figures for the report."""
    jobs: list[Job] = rig.cluster.wait_all(ids, timeout)
    lost = sum(1 for i in ids if rig.raw.exists(rig.cluster.client.store.keys.job(i)) == 0)
    assert lost == 0, f"{lost} job records lost"
    late = [j for j in jobs if (j.finished_at or 0) > (j.deadline_at or 0) + slack]
    assert not late, f"{len(late)} jobs ended later than deadline + {slack}s"

    creates = Counter(r.prompt for r in rig.sim.creates())
    duplicate = missing = 0
    for job in jobs:
        n = creates[job.request.get("prompt")]
        unknown = job.error is not None and job.error.kind == ErrorKind.CREATE_OUTCOME_UNKNOWN
        duplicate += max(0, n - 1)
        missing += n == 0 and not unknown
    assert duplicate == 0, f"{duplicate} duplicate upstream creates"
    assert missing == 0, f"{missing} jobs with no create and no recorded reason"

    create_at = {r.prompt: r.t for r in rig.sim.creates()}
    lags = [
        j.finished_at - (create_at[j.request["prompt"]] + generation_time)
        for j in jobs
        if j.finished_at and j.request.get("prompt") in create_at
    ]
    give_up = time.monotonic() + (
        drain_timeout if drain_timeout is not None else rig.cluster.settings.visibility_timeout + 25
    )
    wanted = set(ids)
    while leftover := messages_for(rig, wanted):
        assert time.monotonic() < give_up, f"{len(leftover)} messages left for finished jobs"
        time.sleep(0.5)
    if any(w.poll() is None for w in rig.cluster.workers):
        assert held_by_workers(rig, wanted) == 0, "workers still hold tasks of finished jobs"
    return Figures(
        jobs=len(jobs),
        states=dict(Counter(j.state.value for j in jobs)),
        duplicate_creates=duplicate,
        missing_creates=missing,
        lost=lost,
        lag_p50=round(statistics.median(lags), 2) if lags else 0.0,
        lag_max=round(max(lags), 2) if lags else 0.0,
        latest_vs_deadline=round(max((j.finished_at or 0) - (j.deadline_at or 0) for j in jobs), 2),
    )


def held_by_workers(rig: Rig, ids: set[str]) -> int:
    """Countdown tasks for these jobs still held in live workers' memory."""
    inspect = rig.cluster.client._app.control.inspect(timeout=1.5)
    held = 0
    for entries in (inspect.scheduled() or {}).values():
        for entry in entries:
            kwargs = entry.get("request", {}).get("kwargs", {})
            held += kwargs.get("job_id") in ids
    return held


def repolled_within(rig: Rig, ids: list[str], since: float) -> float:
    """Seconds after ``since`` by which every unfinished job was polled upstream again."""
    client = rig.cluster.client
    worst = 0.0
    for job_id in ids:
        job = client.get(job_id)
        if not job.generation_id or (job.finished_at or 0) <= since:
            continue
        after = [p.t for p in rig.sim.polls(job.generation_id) if p.t > since]
        assert after, f"job {job_id} was never polled after {since}"
        worst = max(worst, min(after) - since)
    return round(worst, 2)


def report(name: str, **figures: Any) -> None:
    """Print a figure line (``pytest -s`` shows it; the README quotes these)."""
    print(f"\nFIGURES {name}: " + json.dumps(figures, sort_keys=True, default=vars))


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A factory: ``rig(workers=2, concurrency=2, redis_proxy=False, ...)``."""
    made: list[Rig] = []

    def make(
        *,
        workers: int = 2,
        concurrency: int = 2,
        redis_proxy: bool = False,
        upstream_proxy: bool = False,
        generation_time: float = 5.0,
        **overrides: Any,
    ) -> Rig:
        server = RedisServer(appendonly=True).start()
        sim = Simulator(api_key=TEST_KEY, generation_time=generation_time).start()
        proxies: list[CuttableProxy] = []
        redis_url = server.url
        if redis_proxy:
            proxies.append(CuttableProxy(server.port).start())
            redis_url = f"redis://127.0.0.1:{proxies[-1].port}/0"
        base_url = sim.base_url
        if upstream_proxy:
            proxies.append(CuttableProxy(sim.port).start())
            base_url = f"http://127.0.0.1:{proxies[-1].port}/v2"
        settings = {**RIG_SETTINGS, "aimlapi_base_url": base_url, **overrides}
        name = request.node.name[:40].replace("[", "-").replace("]", "")
        cluster = make_cluster(redis_url, tmp_path, name, sim, **settings)
        rig = Rig(server, sim, cluster, tmp_path, proxies)
        made.append(rig)
        for _ in range(workers):
            cluster.start_worker(concurrency=concurrency)
        return rig

    yield make
    for rig in made:
        rig.cluster.stop()
        for proxy in rig.proxies:
            proxy.stop()
        if request.session.testsfailed:
            tail = rig.cluster.log_text()[-6000:]
            print(f"\n--- worker logs ({request.node.name}) ---\n{tail}")
        rig.sim.stop()
        rig.redis_server.cleanup()


# --- the hostile rig (test_hostile_peers.py, test_hostile_webhooks.py) ----------------------

HOSTILE_GEN = 3.0  # the simulator's generation time for ordinary jobs
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
TOTAL_TIMEOUT = 3.0
WEBHOOK_TIMEOUT = 2.0
WEBHOOK_WINDOW = 8.0
HOSTILE_DEADLINE = 20.0

HOSTILE_SETTINGS: dict[str, Any] = {
    **RIG_SETTINGS,
    "deadline": HOSTILE_DEADLINE,
    "webhook_secret": WEBHOOK_SECRET,
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
    """``hostile_rig(poll_mode)``: one rig per poll mode, shared by a test module's tests:
    a private Redis, the simulator behind the hostile front, a webhook receiver and
    one worker process with ``-c 2``."""
    made: dict[str, HostileRig] = {}

    def get(mode: str) -> HostileRig:
        hr = made.get(mode)
        if hr is None:
            tmp = tmp_path_factory.mktemp(f"hostile-{mode}")
            server = RedisServer(appendonly=True).start()
            sim = Simulator(api_key=TEST_KEY, generation_time=HOSTILE_GEN).start()
            front = HostileUpstream(sim.port).start()
            settings = {**HOSTILE_SETTINGS, "aimlapi_base_url": front.base_url, "poll_mode": mode}
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


def verdict(problems: list[str]) -> None:
    """Fail with every problem found, on one line each."""
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
