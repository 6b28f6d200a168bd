"""The fleet-wide upstream rate limit (``VIDEOQ_UPSTREAM_RATE``) and the fleet pause.

The upstream limits requests per second per key, not per worker: every worker process
on every host must share one budget, so the budget lives in Redis, in one hash
(:meth:`Keys.rate`) that one Lua script (``worker/lua/rate.lua``) reads and writes
atomically, on Redis's own clock (``TIME``), so that hosts whose clocks differ agree.

- **A schedule, not a counter (GCRA).** The script keeps the fleet's next free start
  time (``tat``). A reservation of ``n`` calls gets starts ``tat, tat + 1/rate, ...``,
  spread in time, so the upstream sees an even rate, never a burst at a window's edge.
  A call is granted only if its start is within its *horizon* (:data:`HORIZON`, and at
  most half the call's own timeout); it then waits for its start on the process's
  event loop (a timer, never a blocking sleep). A call out of reach is refused: it is
  not sent, and :class:`Refused` says when a slot is expected, so the caller
  reschedules it (``worker.upstream.Throttled``).
- **One round trip per batch.** A tick's status calls reserve their slots with one
  script call (:meth:`RateLimiter.reserve`); a create or a single poll reserves one.
- **Fairness between creates and polls.** Each kind has a meter at half the rate. A
  kind whose calls were held back (refused, or made to wait over half the horizon)
  stamps itself *pressed*; for :data:`PRESSED_FOR` seconds after that, the other kind
  may not run over its half. So a flood of polls cannot starve creates, nor the
  reverse, and a kind alone (or one whose calls are served promptly) may use the whole
  rate.
- **The fleet pause.** A 429 with ``Retry-After`` stops every process's calls for that
  long (:meth:`RateLimiter.pause`): the script refuses every reservation until then,
  and restarts the schedule at the pause's end. A granted call checks the pause again
  after its wait, from this process's view.
- **Unlimited (rate 0, the default): no Redis per call.** Only the pause is honoured,
  from a per-process copy refreshed at most every :data:`REFRESH` seconds (one script
  call, whoever asks first after that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from . import logs
from .keys import Keys
from .store import lua_script

Kind = Literal["create", "poll"]

# Longest a granted call waits for its slot, in seconds (also capped at half the call's
# timeout, so the call keeps time to be made). Longer would hold calls in memory; shorter
# refuses calls that a short wait would serve.
HORIZON = 1.0
# Seconds a kind's held-back demand keeps the other kind to half the rate.
PRESSED_FOR = 3.0
# Unlimited mode: the most often one process reads the fleet's pause from Redis.
REFRESH = 0.25
# Longest fleet pause one Retry-After may impose: a bad header must not stop the fleet
# for hours (each job's own retry still honours the full value).
MAX_PAUSE = 300.0
# A call refused because Redis could not be asked is retried after this long.
UNAVAILABLE_RETRY = 1.0

SCRIPT = lua_script("rate")


@dataclass(frozen=True, slots=True)
class Refused:
    """A call that must not be sent now: a slot is expected in ``retry_after`` seconds.
    ``reason``: ``rate`` (no slot within the horizon), ``paused`` (the fleet pause) or
    ``unavailable`` (Redis could not be asked)."""

    retry_after: float
    reason: Literal["rate", "paused", "unavailable"]


# A reservation's answer for one call: when it may start (``time.monotonic()``), or why not.
Slot = float | Refused


class RateLimiter:
    """This process's handle on the fleet's limit. ``rate`` 0: unlimited (pause only).
    ``clock`` overrides Redis's clock in the script (tests); None: Redis ``TIME``."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        rate: float,
        *,
        horizon: float = HORIZON,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not (math.isfinite(rate) and rate >= 0):
            raise ValueError(f"the rate must be a finite number >= 0, not {rate!r}")
        self.rate = rate
        self.horizon = horizon
        self._keys = [keys.rate(), keys.stats()]
        self._stats = keys.stats()
        self._redis = client
        self._script = client.register_script(SCRIPT)
        self._clock = clock
        self._paused_until = 0.0  # time.monotonic() at which this process's view ends
        self._checked_at = -math.inf
        self._reading: asyncio.Future[float] | None = None  # a pause read under way

    # --- reservations --------------------------------------------------------------------

    def reserve(self, kind: Kind, timeouts: Sequence[float]) -> list[Slot]:
        """Slots for ``len(timeouts)`` calls of one kind (each call's own timeout, s),
        in one Redis round trip, or none when the rate is unlimited."""
        n = len(timeouts)
        if n == 0:
            return []
        if self.rate <= 0:
            left = self._fresh_pause()
            if left <= 0:
                return [time.monotonic()] * n
            self._count_refused(kind, n)
            return self._refused(kind, [Refused(left, "paused")] * n)
        horizons = [max(0.0, min(self.horizon, t / 2)) for t in timeouts]
        try:
            reply = self._run("reserve", self.rate, kind, self.horizon, PRESSED_FOR, *horizons)
        except redis.RedisError as exc:
            _failed("upstream.limiter_unavailable", exc, logging.WARNING, kind=kind, calls=n)
            return [Refused(UNAVAILABLE_RETRY, "unavailable")] * n
        now = time.monotonic()
        paused = self._note_pause(float(reply[0]), now) > 0
        slots: list[Slot] = []
        for item in reply[1:]:
            value = float(item)
            if item.startswith("-"):
                slots.append(Refused(-value, "paused" if paused else "rate"))
            else:
                slots.append(now + value)
        return self._refused(kind, slots)

    async def wait(self, start: float) -> Refused | None:
        """Wait on the running loop until ``start``; then the pause, if the fleet has
        been paused meanwhile (the call must then not be sent), else None."""
        delay = start - time.monotonic()
        if delay > 0:
            # A timer on the loop (what asyncio.sleep does; this module never blocks).
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            timer = loop.call_later(delay, _resolve, done)
            try:
                await done
            finally:
                timer.cancel()
            await self._recheck()
        left = self.paused_for()
        return Refused(left, "paused") if left > 0 else None

    # --- the fleet pause -----------------------------------------------------------------

    def paused_for(self) -> float:
        """Seconds of fleet pause left, as this process last saw it (no Redis)."""
        return max(0.0, self._paused_until - time.monotonic())

    def pause(self, seconds: float) -> None:
        """The upstream answered 429 with ``Retry-After: seconds``: stop every worker's
        calls that long (at most :data:`MAX_PAUSE`). Best effort: this process pauses
        even when Redis cannot be told."""
        seconds = self._note_local_pause(seconds)
        if seconds > 0:
            self._share_pause(seconds)

    def pause_soon(self, seconds: float) -> None:
        """:meth:`pause` from the event loop: this process pauses at once; Redis is
        told from a thread, so the loop never waits on Redis."""
        seconds = self._note_local_pause(seconds)
        if seconds > 0:
            asyncio.get_running_loop().run_in_executor(None, self._share_pause, seconds)

    # --- internals -----------------------------------------------------------------------

    def _run(self, op: str, *args: str | float) -> list[str]:
        now = "" if self._clock is None else repr(float(self._clock()))
        reply = self._script(keys=self._keys, args=[op, now, *args])
        return [r.decode() if isinstance(r, bytes) else str(r) for r in reply]

    def _share_pause(self, seconds: float) -> None:
        try:
            reply = self._run("pause", seconds)
        except redis.RedisError as exc:
            _failed("upstream.pause_unshared", exc, logging.WARNING, seconds=seconds)
            return
        self._note_pause(float(reply[0]), time.monotonic())

    def _note_local_pause(self, seconds: float) -> float:
        seconds = min(float(seconds), MAX_PAUSE) if math.isfinite(seconds) else MAX_PAUSE
        if seconds > 0:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)
            logs.event("upstream.paused", level=logging.WARNING, seconds=seconds)
        return seconds

    def _note_pause(self, left: float, now: float) -> float:
        """Redis's answer (pause left, s) taken as this process's view; returns it."""
        self._checked_at = now
        self._paused_until = max(self._paused_until, now + left)
        return left

    async def _recheck(self) -> None:
        """After a wait: the pause read again if this process's view is older than
        REFRESH (another worker may have met a 429 meanwhile). Read from a thread, one
        read shared by every waiter, awaited at most REFRESH: the loop never blocks."""
        if self._reading is None or self._reading.done():
            if time.monotonic() - self._checked_at < REFRESH:
                return
            self._reading = asyncio.get_running_loop().run_in_executor(None, self._fresh_pause)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._reading), REFRESH)

    def _fresh_pause(self) -> float:
        """The pause left, read again from Redis if the view is older than REFRESH."""
        now = time.monotonic()
        if now - self._checked_at >= REFRESH:
            self._checked_at = now  # one reader per period, even if Redis fails
            try:
                self._note_pause(float(self._run("peek")[0]), time.monotonic())
            except redis.RedisError as exc:
                _failed("upstream.pause_unread", exc, logging.DEBUG)
        return self.paused_for()

    def _count_refused(self, kind: Kind, n: int) -> None:
        """Unlimited mode's refusals (a pause: rare) counted for the metrics."""
        # A counter must not decide what happens to the calls.
        with contextlib.suppress(redis.RedisError):
            self._redis.hincrby(self._stats, f"upstream_throttled:{kind}", n)

    def _refused(self, kind: Kind, slots: list[Slot]) -> list[Slot]:
        refused = [s for s in slots if isinstance(s, Refused)]
        if refused:
            logs.event(
                "upstream.throttled",
                level=logging.DEBUG,
                kind=kind,
                calls=len(slots),
                refused=len(refused),
                reason=refused[0].reason,
                retry_after=round(min(s.retry_after for s in refused), 3),
            )
        return slots


def _failed(event: str, exc: redis.RedisError, level: int, **fields: object) -> None:
    logs.event(event, level=level, error=f"{type(exc).__name__}: {str(exc)[:200]}", **fields)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
