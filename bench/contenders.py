"""The three contenders, each run the same way: start, submit N at once, wait, collect.

A run returns a :class:`Run`: when submission started and ended, each job's terminal
time, state and generation id, the memory samples, and the CPU seconds its processes
and Redis used during the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from bench import seed_app
from bench.harness import SIM_KEY, ProcessTree, Sample, Sampler, Scenario, Stage, redis_cpu
from producers.local import start_worker, stop_process

IMAGE = "https://example.com/cat.png"


@dataclass
class Run:
    name: str
    config: dict[str, Any]
    t0: float = 0.0
    submitted: float = 0.0
    ended: float = 0.0
    results: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    baseline: Sample | None = None
    worker_cpu: float = 0.0
    redis_cpu: float | None = None
    sim_cpu: float = 0.0
    capped: bool = False


def _wait_until(done: Any, cap_at: float, period: float = 0.25) -> bool:
    """Poll ``done()`` until it is true (True) or ``cap_at`` passes (False)."""
    while time.time() < cap_at:
        if done():
            return True
        time.sleep(period)
    return bool(done())


class _Workers:
    """Worker subprocesses with their meters; the common part of (a) and (b)."""

    def __init__(self, stage: Stage, log: IO[bytes]) -> None:
        self.stage = stage
        self.log = log
        self.procs: list[subprocess.Popen[bytes]] = []

    def measure(self, run: Run, submit: Any, finished: Any, scenario: Scenario) -> None:
        client = self.stage.client()
        tree = ProcessTree([p.pid for p in self.procs])
        sampler = Sampler(tree, client, self.stage.sim_process())
        run.baseline = sampler.take()
        cpu0, rcpu0, scpu0 = tree.cpu(), redis_cpu(client), self.stage.sim_cpu()
        sampler.start()
        run.t0 = time.time()
        submit()
        run.submitted = time.time()
        run.capped = not _wait_until(finished, run.submitted + scenario.cap)
        run.ended = time.time()
        sampler.stop()
        run.samples = sampler.samples
        run.worker_cpu = tree.cpu() - cpu0
        run.redis_cpu = redis_cpu(client) - rcpu0
        run.sim_cpu = self.stage.sim_cpu() - scpu0

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc, grace=15)


def run_videoq(
    stage: Stage,
    scenario: Scenario,
    workdir: Path,
    *,
    mode: str | None,
    workers: int,
    pool: str,
    concurrency: int,
    upstream_rate: float | None = None,
    name: str | None = None,
    watch: Callable[[list[int]], None] | None = None,
) -> Run:
    """Contender (a): videoq's workers, submitting through ``producers.Client``.

    ``mode`` None runs the worker's default poll mode: ``VIDEOQ_POLL_MODE`` is then left
    out of the workers' environment (and removed if the bench's own has it).
    ``upstream_rate``, if given, is passed as ``VIDEOQ_UPSTREAM_RATE``.
    ``watch(pids)``, if given, runs in a thread from submission on (the profiler)."""
    from producers.client import Client
    from worker.settings import Settings, load_settings

    env = {
        "VIDEOQ_REDIS_URL": stage.redis.url,
        "AIMLAPI_KEY": SIM_KEY,
        "AIMLAPI_BASE_URL": stage.base_url,
        "VIDEOQ_POLL_INTERVAL": str(scenario.poll_interval),
        "VIDEOQ_DEADLINE": str(max(1000.0, 4 * scenario.cap)),
        "VIDEOQ_LOG_LEVEL": "WARNING",
        "VIDEOQ_ALLOW_PRIVATE_URLS": "true",  # the simulator's videos are on 127.0.0.1
    }
    inherited = {k: v for k, v in os.environ.items() if k != "VIDEOQ_POLL_MODE"}
    if mode is not None:
        env["VIDEOQ_POLL_MODE"] = mode
    if upstream_rate is not None:
        env["VIDEOQ_UPSTREAM_RATE"] = f"{upstream_rate:g}"
    effective = mode or str(Settings.model_fields["poll_mode"].default)
    name = name or f"videoq-{effective}"
    run = Run(
        name,
        {
            "mode": effective,
            "mode_set_by_bench": mode is not None,
            "upstream_rate": upstream_rate,
            "workers": workers,
            "pool": pool,
            "concurrency": concurrency,
        },
    )
    settings = load_settings(
        redis_url=stage.redis.url,
        poll_interval=scenario.poll_interval,
        poll_mode=effective,
    )
    client = Client(settings=settings)
    with open(workdir / f"{name}-n{scenario.n}.log", "wb") as log:
        group = _Workers(stage, log)
        for i in range(workers):
            group.procs.append(
                start_worker(
                    {**inherited, **env},
                    log,
                    name=f"bench{i}",
                    concurrency=concurrency,
                    extra=["--pool", pool],
                )
            )
        _wait_for_workers(client._app, workers)
        ids: list[str] = []

        def submit() -> None:
            def share(k: int) -> list[str]:
                mine = Client(settings=settings)
                return [
                    mine.submit(IMAGE, prompt=f"bench-{k}-{i}") for i in range(k, scenario.n, 4)
                ]

            with ThreadPoolExecutor(4) as threads:
                ids.extend(i for part in threads.map(share, range(4)) for i in part)

        def finished() -> bool:
            return len(ids) == scenario.n and client.store.active_count() == 0

        if watch is not None:
            pids = [p.pid for p in group.procs]
            threading.Thread(target=watch, args=(pids,), daemon=True).start()
        try:
            group.measure(run, submit, finished, scenario)
        finally:
            group.stop()
    for job_id in ids:
        job = client.store.get(job_id)
        if job is not None and job.finished_at:
            run.results[job_id] = (job.finished_at, job.state.value, job.generation_id or "")
    return run


def _wait_for_workers(app: Any, count: int, timeout: float = 60.0) -> None:
    give_up = time.time() + timeout
    while time.time() < give_up:
        if len(app.control.ping(timeout=0.5) or []) >= count:
            return
    raise RuntimeError(f"{count} workers did not answer a ping in {timeout:.0f}s")


def run_blocking(stage: Stage, scenario: Scenario, workdir: Path, *, concurrency: int) -> Run:
    """Contender (b): the seed's loop as a Celery task on ``concurrency`` pool processes."""
    run = Run("blocking", {"pool": "prefork", "concurrency": concurrency})
    client = stage.client()
    with open(workdir / f"blocking-n{scenario.n}.log", "wb") as log:
        group = _Workers(stage, log)
        group.procs.append(start_blocking_worker(stage, scenario, concurrency, log))

        def submit() -> None:
            for i in range(scenario.n):
                seed_app.seed_video.apply_async(args=(f"seed-{i}", IMAGE, f"seed-{i}"))

        def finished() -> bool:
            return int(client.hlen(seed_app.DONE_KEY)) >= scenario.n

        try:
            group.measure(run, submit, finished, scenario)
        finally:
            group.stop()
    for job_id, raw in client.hgetall(seed_app.DONE_KEY).items():
        t, status, gen_id = json.loads(raw)
        key = job_id.decode() if isinstance(job_id, bytes) else str(job_id)
        run.results[key] = (t, str(status), str(gen_id))
    return run


def start_blocking_worker(
    stage: Stage, scenario: Scenario, concurrency: int, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """The seed's Celery worker (prefork, ``concurrency`` processes), once it answers."""
    env = {
        **os.environ,
        "BENCH_REDIS_URL": stage.redis.url,
        "BENCH_BASE_URL": stage.base_url,
        "BENCH_POLL_INTERVAL": str(scenario.poll_interval),
        "BENCH_KEY": SIM_KEY,
    }
    seed_app.app.conf.broker_url = stage.redis.url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.seed_app",
            "worker",
            "-c",
            str(concurrency),
            "--pool",
            "prefork",
            "-Q",
            seed_app.QUEUE,
            "-n",
            "seed@%h",
            "--without-mingle",
            "--without-gossip",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    _wait_for_workers(seed_app.app, 1)
    return proc


def blocking_concurrency(stage: Stage, scenario: Scenario, workdir: Path, budget: int) -> int:
    """How many prefork processes of the blocking worker fit in ``budget`` bytes (PSS):
    measured on a probe worker (its main process plus one pool process)."""
    with open(workdir / "blocking-probe.log", "wb") as log:
        proc = start_blocking_worker(stage, scenario, 1, log)
        try:
            main = psutil.Process(proc.pid)
            parent = main.memory_full_info().pss
            child = sum(c.memory_full_info().pss for c in main.children(recursive=True))
        finally:
            stop_process(proc)
    return max(1, int((budget - parent) // max(1, child)))


def run_asyncio(
    stage: Stage,
    scenario: Scenario,
    workdir: Path,
    *,
    connections: int,
    upstream_rate: float | None = None,
) -> Run:
    """Contender (c): one asyncio process; it submits and polls by itself.

    ``upstream_rate``, if given, spaces its API calls at most that many a second."""
    run = Run("asyncio", {"connections": connections, "upstream_rate": upstream_rate})
    out = workdir / f"asyncio-n{scenario.n}.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.aio_poller",
            "--n",
            str(scenario.n),
            "--base-url",
            stage.base_url,
            "--key",
            SIM_KEY,
            "--interval",
            str(scenario.poll_interval),
            "--cap",
            str(scenario.cap),
            "--connections",
            str(connections),
            "--out",
            str(out),
            "--rate",
            str(upstream_rate or 0),
        ],
    )
    tree = ProcessTree([proc.pid])
    sampler = Sampler(tree, None, stage.sim_process())
    scpu0 = stage.sim_cpu()
    run.baseline = sampler.take()
    sampler.start()
    try:
        proc.wait(scenario.cap + 120)
    finally:
        stop_process(proc)
        sampler.stop()
    run.sim_cpu = stage.sim_cpu() - scpu0
    report = json.loads(out.read_text())
    run.t0, run.submitted, run.worker_cpu = report["t0"], report["submitted"], report["cpu"]
    run.samples = [s for s in sampler.samples if s.t >= run.t0]
    run.baseline = Sample(run.t0, report["pss_before"], 0)
    run.results = {k: (v[0], str(v[1]), str(v[2])) for k, v in report["results"].items()}
    run.ended = time.time()
    run.capped = len(run.results) < scenario.n
    return run
