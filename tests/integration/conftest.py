"""Integration fixtures: real worker processes, real Redis, the simulator in a thread."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

from producers.client import Client
from producers.local import start_worker, stop_process
from simulator import Simulator
from tests.conftest import TEST_KEY, settings_for
from tests.integration.gateway import ALICE, BOB, LIMIT, ROOT, TOKEN, WEBHOOK_SECRET, Gateway
from worker.job import Job
from worker.settings import Settings

pytestmark = pytest.mark.integration

READY_TIMEOUT = 30.0


@dataclass
class Cluster:
    """Workers on one queue and key prefix, with a client and the worker logs."""

    settings: Settings
    sim: Simulator
    env: dict[str, str]
    logdir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @cached_property
    def client(self) -> Client:
        return Client(settings=self.settings)

    def start_worker(self, concurrency: int = 1, extra: list[str] | None = None) -> None:
        path = self.logdir / f"worker{len(self.workers)}.log"
        with path.open("wb") as log:
            proc = start_worker(
                self.env, log, name=f"w{len(self.workers)}", concurrency=concurrency, extra=extra
            )
        self.workers.append(proc)
        self.logs.append(path)
        give_up = time.monotonic() + READY_TIMEOUT
        while b" ready." not in path.read_bytes():
            if proc.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"worker did not start:\n{path.read_text()[-3000:]}")
            time.sleep(0.1)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs)

    def wait_all(self, ids: list[str], timeout: float) -> list[Job]:
        client = self.client
        give_up = time.monotonic() + timeout
        while True:
            jobs = [client.get(i) for i in ids]
            if all(j.is_terminal for j in jobs):
                return jobs
            if time.monotonic() > give_up:
                states = sorted({j.state.value for j in jobs})
                raise AssertionError(f"jobs not terminal after {timeout}s: {states}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.workers:
            stop_process(proc, grace=10)


def cluster_env(settings: Settings) -> dict[str, str]:
    return {
        "VIDEOQ_REDIS_URL": settings.redis_url,
        "VIDEOQ_QUEUE": settings.queue,
        "VIDEOQ_KEY_PREFIX": settings.key_prefix,
        "AIMLAPI_BASE_URL": settings.aimlapi_base_url,
        "AIMLAPI_KEY": settings.aimlapi_key.get_secret_value(),
        "VIDEOQ_UPSTREAM_PATH": settings.upstream_path,
        "VIDEOQ_POLL_INTERVAL": str(settings.poll_interval),
        "VIDEOQ_POLL_MODE": settings.poll_mode,
        "VIDEOQ_POLL_TICK": str(settings.poll_tick),
        "VIDEOQ_POLL_BATCH": str(settings.poll_batch),
        "VIDEOQ_POLL_CONCURRENCY": str(settings.poll_concurrency),
        "VIDEOQ_DEADLINE": str(settings.deadline),
        "VIDEOQ_RETRY_BACKOFF": str(settings.retry_backoff),
        "VIDEOQ_RETRY_BACKOFF_MAX": str(settings.retry_backoff_max),
        "VIDEOQ_HTTP_READ_TIMEOUT": str(settings.http_read_timeout),
        "VIDEOQ_VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
        "VIDEOQ_HTTP_CONNECT_TIMEOUT": str(settings.http_connect_timeout),
        "VIDEOQ_STALL_TIMEOUT": str(settings.stall_timeout),
        "VIDEOQ_SWEEP_INTERVAL": str(settings.sweep_interval),
        "VIDEOQ_MAX_IN_FLIGHT": str(settings.max_in_flight),
        "VIDEOQ_UPSTREAM_RATE": str(settings.upstream_rate),
        "VIDEOQ_WEBHOOK_SECRET": settings.webhook_secret.get_secret_value(),
        "VIDEOQ_WEBHOOK_WINDOW": str(settings.webhook_window),
        "VIDEOQ_ALLOW_PRIVATE_URLS": "true" if settings.allow_private_urls else "false",
        "VIDEOQ_API_TOKENS": settings.api_tokens.get_secret_value(),
        "VIDEOQ_API_ADMINS": settings.api_admins,
        "VIDEOQ_MAX_REQUEST_BYTES": str(settings.max_request_bytes),
        "VIDEOQ_LOG_LEVEL": "DEBUG",
        "VIDEOQ_HTTP_TOTAL_TIMEOUT": str(settings.upstream_call_timeout),
        "VIDEOQ_WEBHOOK_TIMEOUT": str(settings.webhook_timeout),
    }


def make_cluster(redis_url: str, tmp: Path, name: str, sim: Simulator, **overrides: Any) -> Cluster:
    base: dict[str, Any] = {
        "aimlapi_base_url": sim.base_url,
        "deadline": 60.0,
        "retry_backoff_max": 2.0,
    }
    base.update(overrides)
    settings = settings_for(redis_url, f"it-{name}-{os.getpid()}", **base)
    return Cluster(settings=settings, sim=sim, env=cluster_env(settings), logdir=tmp)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    server = Simulator(api_key=TEST_KEY, generation_time=2.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    redis_url: str,
    sim: Simulator,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Cluster]:
    """One worker process with one prefork slot (-c 1) on a shared simulator."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    c = make_cluster(redis_url, tmp_path_factory.mktemp(name), name, sim)
    c.start_worker(concurrency=1)
    yield c
    c.stop()
    if request.session.testsfailed:
        sys.stderr.write(f"\n--- worker log ({name}) ---\n{c.log_text()[-5000:]}\n")


@pytest.fixture
def videoq_cli(cluster: Cluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).with_name("videoq")  # the installed console script
        return subprocess.run(
            [str(script), *args],
            env={**os.environ, **cluster.env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def clusters(
    redis_url: str, sim: Simulator, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Cluster]]:
    """A factory of clusters on the shared simulator: ``clusters(name, **settings)``;
    start their workers with ``cluster.start_worker``. All are stopped at the end."""
    made: list[Cluster] = []

    def make(name: str, **overrides: Any) -> Cluster:
        cluster = make_cluster(redis_url, tmp_path, name, sim, **overrides)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.stop()
        if request.session.testsfailed:
            sys.stderr.write(
                f"\n--- worker logs ({request.node.name}) ---\n{cluster.log_text()[-4000:]}\n"
            )


@pytest.fixture(scope="module")
def web(
    redis_url: str, sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Gateway]]:
    """A worker and the gateway in front of it, for a test_gateway*.py module."""
    tmp = tmp_path_factory.mktemp("gateway")
    cluster = make_cluster(
        redis_url,
        tmp,
        "gateway",
        sim,
        api_tokens=f"{TOKEN},other-token,alice:{ALICE},bob:{BOB},root:{ROOT}",
        api_admins="root",
        max_request_bytes=LIMIT,
        webhook_secret=WEBHOOK_SECRET,
        webhook_window=4.0,
        retry_backoff=0.5,
    )
    cluster.start_worker(concurrency=2)
    gateway = Gateway(cluster, tmp / "gateway.log")
    yield cluster, gateway
    stop_process(gateway.proc)
    cluster.stop()
