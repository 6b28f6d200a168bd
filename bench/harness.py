"""What every contender runs against: a private Redis, the asyncio simulator, and meters.

Meters:
- :class:`ProcessTree` sums memory (PSS) and CPU seconds over a process and its children
  (a prefork worker's pool processes included);
- :class:`Sampler` records, every ``period`` seconds, the contender's memory and CPU,
  Redis's ``used_memory`` and CPU, and the simulator's CPU, so that memory can be read
  at the moment of peak in-flight count and CPU over any window (e.g. after the creates).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from producers.local import RedisServer, free_port, stop_process

SIM_KEY = "sim-key"


@dataclass(frozen=True)
class Scenario:
    """One benchmark point: ``n`` jobs submitted at once, compressed upstream time."""

    n: int
    generation_time: float = 5.0
    poll_interval: float = 1.0
    cap: float = 120.0  # give a contender at most this long after submitting
    sim_rate: float = 0.0  # the simulator's limit, API requests/s in any 1 s window (0: none)

    @property
    def label(self) -> str:
        rate = f" sim-rate={self.sim_rate:g}/s" if self.sim_rate else ""
        return f"n={self.n} gen={self.generation_time:g}s poll={self.poll_interval:g}s{rate}"


class ProcessTree:
    """Memory and CPU of a set of root processes and all their descendants."""

    def __init__(self, pids: list[int]) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self._cpu_seen: dict[int, float] = {}

    def _members(self) -> list[psutil.Process]:
        members = []
        for root in self.roots:
            try:
                members.append(root)
                members.extend(root.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return members

    def memory(self) -> int:
        """Proportional set size (PSS) in bytes: RSS would count the pages a prefork
        pool process shares with its parent twice."""
        total = 0
        for proc in self._members():
            try:
                total += proc.memory_full_info().pss
            except psutil.NoSuchProcess:
                continue
        return total

    def cpu(self) -> float:
        """CPU seconds (user + system) of every member seen so far, dead ones included."""
        for proc in self._members():
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            self._cpu_seen[proc.pid] = times.user + times.system
        return sum(self._cpu_seen.values())


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


@dataclass
class Sample:
    t: float
    memory: int  # the contender's PSS, bytes
    redis_memory: int
    cpu: float = 0.0  # the contender's CPU seconds so far
    redis_cpu: float = 0.0
    sim_cpu: float = 0.0  # the simulator's CPU seconds since it started


@dataclass
class Sampler:
    """Samples a process tree's PSS and CPU, Redis's memory and CPU, and the simulator's
    CPU, in a background thread."""

    tree: ProcessTree
    client: redis.Redis | None
    sim: psutil.Process | None = None
    period: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.period)

    def take(self) -> Sample:
        mem = rcpu = 0.0
        if self.client is not None:
            mem, rcpu = redis_memory(self.client), redis_cpu(self.client)
        scpu = 0.0
        if self.sim is not None:
            times = self.sim.cpu_times()
            scpu = times.user + times.system
        sample = Sample(time.time(), self.tree.memory(), int(mem), self.tree.cpu(), rcpu, scpu)
        self.samples.append(sample)
        return sample

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Stage:
    """A fresh simulator per scenario, on the bench's private Redis (one for the whole
    run: a Celery app keeps its broker connection pool for life)."""

    def __init__(self, scenario: Scenario, workdir: Path, redis_server: RedisServer) -> None:
        self.scenario = scenario
        self.workdir = workdir
        self.redis = redis_server
        self.sim_port = free_port()
        self.sim: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}/v2"

    def start(self) -> Stage:
        self.client().flushall()
        self.sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulator.aio",
                "--port",
                str(self.sim_port),
                "--generation-time",
                str(self.scenario.generation_time),
                "--api-key",
                SIM_KEY,
                "--rate-limit",
                str(self.scenario.sim_rate),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        give_up = time.monotonic() + 10
        while True:
            try:
                self.sim_get("/_sim/generations")
                break
            except OSError:
                if time.monotonic() > give_up:
                    raise RuntimeError("the simulator did not start") from None
                time.sleep(0.05)
        return self

    def sim_get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.sim_port}{path}"
        with urllib.request.urlopen(url, timeout=60) as answer:
            return json.loads(answer.read())

    def sim_reset(self) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.sim_port}/_sim/reset", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (loopback)
            pass

    def sim_process(self) -> psutil.Process:
        assert self.sim is not None
        return psutil.Process(self.sim.pid)

    def sim_cpu(self) -> float:
        times = self.sim_process().cpu_times()
        return float(times.user + times.system)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.redis.port)

    def stop(self) -> None:
        if self.sim is not None:
            stop_process(self.sim, grace=5)
