"""The rate limit's test world (tests/worker/test_ratelimit.py): limiters sharing one
fleet on the real Redis with a fake Redis clock, and a traffic simulation on it."""

from __future__ import annotations

import heapq
from typing import Any

import redis

from tests.fakes import FakeClock
from worker.keys import Keys
from worker.ratelimit import HORIZON, PRESSED_FOR, SCRIPT, RateLimiter


class World:
    """Limiters sharing one prefix (one fleet), each like a worker process, on a fake
    Redis clock; every script call is counted."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.clock = FakeClock(1_000.0)
        self.script_calls = 0
        self.ops: list[str] = []  # each script call's op: reserve, pause, peek

    def limiter(self, rate: float, *, fake_clock: bool = True) -> RateLimiter:
        limiter = RateLimiter(self.redis, self.keys, rate, clock=self.clock if fake_clock else None)
        script = limiter._script

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.script_calls += 1
            self.ops.append(kwargs["args"][0])
            return script(*args, **kwargs)

        limiter._script = counted  # type: ignore[assignment]
        return limiter

    def raw(self, rate: float, kind: str, *horizons: float) -> list[float]:
        """The script itself: per call its wait (>= 0) or minus its retry-after."""
        script = self.redis.register_script(SCRIPT)
        reply = script(
            keys=[self.keys.rate(), self.keys.stats()],
            args=["reserve", repr(self.clock.now), rate, kind, HORIZON, PRESSED_FOR, *horizons],
        )
        return [float(r) for r in reply[1:]]

    def stat(self, name: str) -> float:
        return float(self.redis.hget(self.keys.stats(), name) or 0)


def most_in_any_window(starts: list[float], width: float = 1.0) -> int:
    """The most starts in any half-open window [t, t + width)."""
    starts = sorted(starts)
    best = 0
    j = 0
    for i, s in enumerate(starts):
        while starts[j] <= s - width:
            j += 1
        best = max(best, i - j + 1)
    return best


STEP = 1 / 64  # the fake clock's step: exact in binary, as are 1/8 s slots


def run(
    world: World, rate: float, seconds: float, demand: dict[str, tuple[float, int]]
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Simulate ``seconds`` of traffic on the fake clock: for each kind, ``n`` new calls
    every ``every`` seconds. Due polls reserve as one batch (up to 200, as a tick
    does); due creates one at a time (up to 5 a step, as 5 processes would). A refused
    call comes back after its retry-after, as its caller reschedules it. Returns each
    kind's granted starts and each granted call's latency (start minus arrival), on
    the Redis clock."""
    pending: dict[str, list[tuple[float, float]]] = {kind: [] for kind in demand}  # heaps
    next_at = {kind: world.clock.now for kind in demand}
    starts: dict[str, list[float]] = {kind: [] for kind in demand}
    latency: dict[str, list[float]] = {kind: [] for kind in demand}
    end = world.clock.now + seconds
    while world.clock.now < end:
        now = world.clock.now
        for kind, (every, n) in demand.items():
            queue = pending[kind]
            if now >= next_at[kind]:
                next_at[kind] += every
                for _ in range(n):
                    heapq.heappush(queue, (now, now))  # (due, arrival)
            due: list[tuple[float, float]] = []
            while queue and queue[0][0] <= now and len(due) < (200 if kind == "poll" else 5):
                due.append(heapq.heappop(queue))
            batches = [due] if kind == "poll" else [[call] for call in due]
            for batch in batches:
                if not batch:
                    continue
                answers = world.raw(rate, kind, *([HORIZON] * len(batch)))
                for (_, arrival), answer in zip(batch, answers, strict=True):
                    if answer >= 0:
                        starts[kind].append(now + answer)
                        latency[kind].append(now + answer - arrival)
                    else:
                        heapq.heappush(queue, (now - answer, arrival))
        world.clock.advance(STEP)
    return starts, latency
