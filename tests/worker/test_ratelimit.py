"""The fleet-wide upstream rate limit (``worker/ratelimit.py``, ``worker/lua/rate.lua``)
on the real Redis, with a fake Redis clock (the script's ``now``), so that seconds of
traffic from many workers run in milliseconds and the figures are exact."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from pydantic import SecretStr, ValidationError

from simulator import Simulator
from tests.worker.conftest import SIM_KEY
from tests.worker.ratelimit_world import World, most_in_any_window, run
from tests.worker.upstream_fakes import all_answers
from worker.answers import MAX_BODY_BYTES, Status
from worker.errors import Throttled, Transient
from worker.http import BoundedHttp, EventLoop
from worker.metrics import render
from worker.ratelimit import HORIZON, REFRESH, RateLimiter, Refused
from worker.settings import Settings
from worker.store import JobStore, connect
from worker.upstream import UpstreamClient


@pytest.fixture
def world(rclient: redis.Redis, unique: str) -> Iterator[World]:
    w = World(rclient, f"rl{unique}")
    yield w
    rclient.delete(w.keys.rate(), w.keys.stats(), w.keys.polls())


# --- the script: rate, batches, fairness, pause ------------------------------------------


def test_a_batch_gets_its_slots_spread_at_the_rate_and_the_rest_refused(world: World) -> None:
    answers = world.raw(8.0, "poll", *([HORIZON] * 20))
    granted = [a for a in answers if a >= 0]
    refused = [-a for a in answers if a < 0]
    # Starts 0, 1/8, ... up to the one-second horizon: 9 calls, 1/8 s apart.
    assert granted == pytest.approx([i / 8 for i in range(9)])
    assert len(refused) == 11
    # Each refused call is told when a slot is expected, and they do not all come back
    # at once: one schedule step apart.
    assert refused[0] == pytest.approx(1 / 8)
    assert all(b - a == pytest.approx(1 / 8) for a, b in itertools.pairwise(refused))
    assert world.stat("upstream_calls:poll") == 9
    assert world.stat("upstream_throttled:poll") == 11


def test_a_calls_own_horizon_bounds_its_wait(world: World) -> None:
    # The second call may wait at most 0.05 s (half a short timeout): its slot, 0.125 s
    # away, is out of reach; the third, with the full horizon, takes it.
    answers = world.raw(8.0, "poll", HORIZON, 0.05, HORIZON)
    assert answers[0] == 0 and answers[1] < 0 and answers[2] == pytest.approx(1 / 8)


def test_the_rate_holds_in_every_one_second_window_across_processes(world: World) -> None:
    # Three processes ask for far more than the rate, at different paces.
    starts, _ = run(world, 8.0, 10.0, {"poll": (0.25, 40), "create": (0.0625, 1)})
    every = starts["poll"] + starts["create"]
    assert most_in_any_window(every) <= 8
    # ... and the rate is used, not wasted.
    assert len(every) >= 8 * 10 - 2


def test_one_kind_alone_may_use_the_whole_rate(world: World) -> None:
    starts, _ = run(world, 8.0, 10.0, {"poll": (0.25, 40)})
    assert len(starts["poll"]) >= 8 * 10 - 2


@pytest.mark.parametrize("flooding", ["poll", "create"])
def test_a_flood_of_one_kind_does_not_starve_the_other(world: World, flooding: str) -> None:
    # Both kinds want more than half the rate; one of them far more, in big batches.
    other = "create" if flooding == "poll" else "poll"
    flood = (0.25, 100) if flooding == "poll" else (0.0625, 4)  # 400/s, 64/s
    starts, _ = run(world, 8.0, 12.0, {flooding: flood, other: (0.125, 1)})
    # Each gets about half the rate (8/s for 12 s: at least 40% of it each).
    assert len(starts[other]) >= 0.4 * 8 * 12
    assert len(starts[flooding]) >= 0.4 * 8 * 12
    assert most_in_any_window(starts[flooding] + starts[other]) <= 8


def test_a_trickle_of_creates_leaves_polls_the_rest(world: World) -> None:
    # One create a second: it is served (within the horizon), and polls get most of
    # what it leaves, not a fixed half.
    starts, latency = run(world, 8.0, 12.0, {"poll": (0.25, 100), "create": (1.0, 1)})
    assert len(starts["create"]) >= 11 and max(latency["create"]) <= 2 * HORIZON
    assert len(starts["poll"]) >= 0.7 * 8 * 12


def test_a_pause_refuses_every_call_until_its_end_then_the_rate_resumes(world: World) -> None:
    limiter = world.limiter(8.0)
    limiter.pause(2.0)
    # Another process (its own limiter) learns of the pause from Redis.
    other = world.limiter(8.0)
    world.clock.advance(0.5)
    slots = other.reserve("create", [30.0, 30.0])
    assert all(isinstance(s, Refused) and s.reason == "paused" for s in slots)
    retry = [s.retry_after for s in slots if isinstance(s, Refused)]
    assert retry[0] == pytest.approx(1.5) and retry[1] == pytest.approx(1.5 + 1 / 8)
    world.clock.advance(1.0)  # 0.5 s of pause left: still refused, though within reach
    assert world.raw(8.0, "poll", HORIZON)[0] < 0
    world.clock.advance(0.6)  # past the pause
    answers = world.raw(8.0, "poll", *([HORIZON] * 3))
    assert answers[0] >= 0 and answers[1] - answers[0] == pytest.approx(1 / 8)


def test_a_shorter_pause_never_shortens_a_longer_one(world: World) -> None:
    limiter = world.limiter(8.0)
    limiter.pause(5.0)
    limiter.pause(1.0)
    world.clock.advance(2.0)
    assert world.raw(8.0, "poll", HORIZON)[0] == pytest.approx(-3.0)


def test_bad_input_fails_the_script_before_any_write(world: World) -> None:
    with pytest.raises(redis.ResponseError, match="not a finite number"):
        world.raw(8.0, "poll", math.nan)
    with pytest.raises(redis.ResponseError, match="unknown call kind"):
        world.raw(8.0, "upload", HORIZON)
    assert world.redis.exists(world.keys.rate()) == 0


# --- the client side ---------------------------------------------------------------------


def test_a_granted_call_starts_at_its_slot_on_redis_time(world: World) -> None:
    limiter = world.limiter(4.0, fake_clock=False)
    before = time.monotonic()
    slots = limiter.reserve("poll", [30.0] * 3)
    after = time.monotonic()
    starts = [s for s in slots if isinstance(s, float)]
    assert len(starts) == 3
    assert before <= starts[0] <= after + 0.01
    assert starts[2] - starts[0] == pytest.approx(0.5)


def test_unlimited_makes_no_script_call_per_call_but_honours_the_pause(world: World) -> None:
    limiter = world.limiter(0.0)
    for _ in range(200):
        slots = limiter.reserve("poll", [30.0] * 50)
        assert not any(isinstance(s, Refused) for s in slots)
    assert world.script_calls <= 1  # the pause's refresh, at most once per REFRESH

    world.limiter(8.0).pause(3.0)  # another process meets a 429
    calls = world.script_calls
    time.sleep(REFRESH)
    slots = limiter.reserve("poll", [30.0] * 50)
    assert world.script_calls == calls + 1  # one refresh for the whole batch
    assert all(isinstance(s, Refused) and s.reason == "paused" for s in slots)
    assert world.stat("upstream_throttled:poll") == 50


# --- through the upstream client, against the simulator ----------------------------------


@pytest.fixture
def client_for(
    io_loop: EventLoop, world: World
) -> Iterator[Callable[[Simulator, RateLimiter], UpstreamClient]]:
    made: list[BoundedHttp] = []

    def make(sim: Simulator, limiter: RateLimiter) -> UpstreamClient:
        http = BoundedHttp(
            io_loop,
            connect_timeout=1.0,
            read_timeout=5.0,
            total_timeout=10.0,
            max_bytes=MAX_BODY_BYTES,
            concurrency=50,
        )
        made.append(http)
        return UpstreamClient(sim.base_url, SecretStr(SIM_KEY), http, limiter=limiter)

    yield make
    for http in made:
        io_loop.run(http.aclose(), 5)


def _generations(client: UpstreamClient, n: int) -> list[str]:
    return [
        client.create(
            {"model": "kling-video/v2.1/pro/image-to-video", "image_url": "https://x/y.png"}
        ).generation_id
        for _ in range(n)
    ]


def test_a_batch_reserves_once_sends_the_granted_spread_and_throttles_the_rest(
    world: World, sim: Simulator, client_for: Callable[..., UpstreamClient]
) -> None:
    ids = _generations(client_for(sim, world.limiter(0.0, fake_clock=False)), 20)
    sent_before = len(sim.requests())
    client = client_for(sim, world.limiter(8.0, fake_clock=False))
    world.ops.clear()
    answers = all_answers(client, [(g, 10.0) for g in ids])
    assert world.ops.count("reserve") == 1  # one reservation for the whole batch
    # ... and, while the granted calls wait, the pause is read again at most every REFRESH
    assert world.ops.count("peek") <= HORIZON / REFRESH + 1
    done = [a for a in answers if isinstance(a, Status)]
    throttled = [a for a in answers if isinstance(a, Throttled)]
    assert len(done) + len(throttled) == 20 and 8 <= len(done) <= 9
    for exc in throttled:
        assert isinstance(exc, Transient) and exc.kind == "throttled"
        assert not exc.outcome_unknown and exc.retry_after and exc.retry_after > 0
    sent = sim.requests()[sent_before:]
    assert len(sent) == len(done)  # a throttled call is never sent
    times = sorted(r.t for r in sent)
    assert most_in_any_window(times, 0.95) <= 8  # real time: a little jitter
    assert times[-1] - times[0] >= (len(done) - 1) / 8 - 0.05  # spread, not a burst


def test_a_429_with_retry_after_pauses_every_process(
    world: World, sim: Simulator, client_for: Callable[..., UpstreamClient]
) -> None:
    [gen] = _generations(client_for(sim, world.limiter(0.0, fake_clock=False)), 1)
    sim.add_fault(status=429, count=1, retry_after=2, method="GET")
    first = client_for(sim, world.limiter(0.0, fake_clock=False))
    with pytest.raises(Transient) as hit:
        first.status(gen)
    assert hit.value.kind == "rate_limited"
    sent = len(sim.requests())
    # The same process, and another one (its own limiter, limited or not), hold back.
    second = client_for(sim, world.limiter(8.0, fake_clock=False))
    for client in (first, second):
        with pytest.raises(Throttled) as held:
            client.status(gen)
        assert held.value.reason == "paused" and 1.0 < (held.value.retry_after or 0) <= 2.0
    [answer] = all_answers(second, [(gen, 10.0)])
    assert isinstance(answer, Throttled)
    with pytest.raises(Throttled):
        second.create({"model": "m", "image_url": "https://x/y.png"})
    assert len(sim.requests()) == sent


def test_a_create_without_a_slot_in_reach_is_throttled_and_not_sent(
    world: World, sim: Simulator, client_for: Callable[..., UpstreamClient]
) -> None:
    client = client_for(sim, world.limiter(0.2, fake_clock=False))  # one call per 5 s
    body = {"model": "kling-video/v2.1/pro/image-to-video", "image_url": "https://x/y.png"}
    assert client.create(body).status == "queued"
    with pytest.raises(Throttled) as held:
        client.create(body)
    assert held.value.kind == "throttled" and not held.value.outcome_unknown
    assert 3.0 < (held.value.retry_after or 0) <= 5.0
    assert len(sim.creates()) == 1


def test_a_granted_call_waits_for_its_slot_within_its_timeout(
    world: World, sim: Simulator, client_for: Callable[..., UpstreamClient]
) -> None:
    [gen] = _generations(client_for(sim, world.limiter(0.0, fake_clock=False)), 1)
    client = client_for(sim, world.limiter(2.0, fake_clock=False))
    client.status(gen)
    began = time.monotonic()
    client.status(gen)  # its slot is half a second later: it waits, then is sent
    assert time.monotonic() - began >= 0.45
    polls = sim.polls(gen)
    assert polls[-1].t - polls[-2].t >= 0.45


def test_a_waiting_call_is_not_sent_when_another_process_pauses_the_fleet(
    world: World, sim: Simulator, client_for: Callable[..., UpstreamClient]
) -> None:
    [gen] = _generations(client_for(sim, world.limiter(0.0, fake_clock=False)), 1)
    client = client_for(sim, world.limiter(2.0, fake_clock=False))
    client.status(gen)
    sent = len(sim.requests())
    # Another process meets a 429 while this one waits for its next slot (0.5 s on).
    other = world.limiter(2.0, fake_clock=False)
    threading.Timer(0.2, other.pause, args=(3.0,)).start()
    with pytest.raises(Throttled) as held:
        client.status(gen)
    assert held.value.reason == "paused" and 2.0 < (held.value.retry_after or 0) <= 3.0
    assert len(sim.requests()) == sent


# --- settings and metrics ------------------------------------------------------------------


def test_the_setting_is_a_finite_rate(make_settings: Callable[..., Settings]) -> None:
    assert make_settings().upstream_rate == 0
    assert make_settings(upstream_rate="2.5").upstream_rate == 2.5
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(ValidationError, match="upstream_rate"):
            make_settings(upstream_rate=bad)


def test_metrics_show_the_rate_the_calls_and_the_poll_lag(
    world: World, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(key_prefix=world.keys.prefix)
    store = JobStore(connect(settings), settings)
    world.raw(8.0, "poll", *([HORIZON] * 12))
    world.raw(8.0, "create", HORIZON)
    world.redis.zadd(world.keys.polls(), {"late": 990.0, "later": 1010.0})
    page = render(store, upstream_rate=8.0, now=1000.0)
    assert "videoq_upstream_rate_limit 8\n" in page
    assert 'videoq_upstream_calls_total{kind="poll"} 9\n' in page
    assert 'videoq_upstream_throttled_total{kind="poll"} 3\n' in page
    assert 'videoq_upstream_throttled_total{kind="create"} 1\n' in page
    assert "videoq_poll_lag_seconds 10\n" in page
    world.redis.delete(world.keys.polls())
    assert "videoq_poll_lag_seconds 0\n" in render(store, now=1000.0)
