"""The chain's test world: a fake clock, a scripted upstream, a recording scheduler and
the real job store (Redis)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import pytest

from simulator import Simulator
from tests.fakes import FakeClock, FakeUpstream, RecordingScheduler
from tests.rawhttp import Handler, RawServer
from worker.chain import PollStep, run_generate, run_poll
from worker.http import EventLoop
from worker.request import parse_request
from worker.runtime import Runtime
from worker.settings import Settings
from worker.states import JobState
from worker.store import JobStore, connect

IMG = "https://example.com/cat.png"
SIM_KEY = "sk-sim-secret-0123"  # the API key of the ``sim`` fixture


class CreateTimes(TypedDict):
    """``JobStore.create``'s times and idempotency key, passed as ``**times``."""

    accepted_at: float
    deadline_at: float
    idempotency_key: str


class World:
    def __init__(self, settings: Settings) -> None:
        self.clock = FakeClock()
        self.upstream = FakeUpstream()
        self.scheduler = RecordingScheduler()
        self.store = JobStore(connect(settings), settings)
        self.rt = Runtime(
            settings=settings,
            store=self.store,
            upstream=self.upstream,  # type: ignore[arg-type]
            scheduler=self.scheduler,
            clock=self.clock,
            rng=random.Random(7),
        )
        self.deadline_at = self.clock.now + settings.deadline

    def job(self, job_id: str = "job-1") -> str:
        self.store.create(
            job_id,
            parse_request({"image_url": IMG, "prompt": "p"}),
            accepted_at=self.clock.now,
            deadline_at=self.deadline_at,
        )
        return job_id

    def state(self, job_id: str = "job-1") -> JobState:
        job = self.store.get(job_id)
        assert job is not None
        return job.state

    def generate(self, job_id: str = "job-1", attempt: int = 1) -> None:
        run_generate(self.rt, job_id, self.deadline_at, attempt)

    def poll(self, seq: int, errors: int = 0, job_id: str = "job-1") -> None:
        run_poll(self.rt, PollStep(job_id, self.deadline_at, seq, errors))


def generating(w: World) -> None:
    """The first job created, its create answered: now generating, its poll popped."""
    w.job()
    w.generate()
    w.scheduler.pop()


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Callable[..., World]:
    def make(**overrides: Any) -> World:
        base: dict[str, Any] = {
            "poll_interval": 10.0,
            "deadline": 100.0,
            "retry_backoff": 2.0,
            "retry_backoff_max": 30.0,
            "poll_mode": "chain",  # batch mode's tests ask for it
        }
        base.update(overrides)
        return World(make_settings(**base))

    return make


@pytest.fixture(scope="module")
def io_loop() -> Iterator[EventLoop]:
    """An event loop in a thread, as a worker process has, for a test module."""
    loop = EventLoop()
    yield loop
    running = loop.get()
    running.call_soon_threadsafe(running.stop)


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    """Start raw HTTP peers on 127.0.0.1 (``raw_server(handler)``); all closed after."""
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """The threaded simulator, every generation finished at once; its key is SIM_KEY."""
    server = Simulator(api_key=SIM_KEY, generation_time=0.0).start()
    yield server
    server.stop()
