"""The AI/ML API client: create a generation, read its status.

Every call goes through :class:`worker.http.BoundedHttp`: a total deadline (at most
``VIDEOQ_HTTP_TOTAL_TIMEOUT``, and never past the job's deadline), an answer cap of
:data:`~worker.answers.MAX_BODY_BYTES`, no redirects. Each answer, and each failure, is
classified by :mod:`worker.answers` (:class:`Status`, or :class:`Transient`,
:class:`Rejected`, :class:`ProtocolError`), so the tasks can decide without guessing.

:class:`Throttled` (a :class:`Transient`): the call was **not sent**: the fleet-wide
rate limit (``VIDEOQ_UPSTREAM_RATE``, :mod:`worker.ratelimit`) had no slot for it soon
enough, or the fleet is paused after a 429's ``Retry-After``. Every call draws from
that limit, and a 429 with ``Retry-After`` pauses every worker's calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import redis
from pydantic import SecretStr

from . import answers
from .answers import (
    MAX_BODY_BYTES,
    PATHS,
    Status,
)
from .errors import HttpFailure, ProtocolError, Throttled, Transient, UpstreamError
from .http import Answer, BoundedHttp, EventLoop
from .keys import Keys
from .ratelimit import Kind, RateLimiter, Refused, Slot
from .settings import Settings
from .store import connect

__all__ = ["UpstreamClient", "throttled_error"]


def throttled_error(what: str, refused: Refused) -> Throttled:
    """The :class:`Throttled` error of a ``what`` call the rate limit refused."""
    if refused.reason == "paused":
        why = "the upstream asked for a pause (429 Retry-After)"
    elif refused.reason == "unavailable":
        why = "the rate limiter's Redis could not be asked"
    else:
        why = "no slot under VIDEOQ_UPSTREAM_RATE soon enough"
    return Throttled(
        f"{what} not sent: {why}; retry in {refused.retry_after:.2f}s",
        retry_after=refused.retry_after,
        reason=refused.reason,
    )


class UpstreamClient:
    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        http: BoundedHttp,
        *,
        path: Literal["legacy", "universal"] = "legacy",
        create_http: BoundedHttp | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + PATHS[path]
        self._key = api_key
        self.http = http
        # Creates may go on a client of their own that opens a fresh connection each
        # time: a pooled one the upstream has meanwhile closed would break the create
        # after it was sent, and a paid create whose answer is lost is never repeated.
        self.create_http = create_http or http
        # The fleet's rate limit and pause (None: calls are never held back).
        self.limiter = limiter
        for client in {id(http): http, id(self.create_http): self.create_http}.values():
            client.headers.update(self.headers())

    @classmethod
    def from_settings(
        cls, settings: Settings, loop: EventLoop, redis_client: redis.Redis | None = None
    ) -> UpstreamClient:
        """The worker's client. Its rate limiter shares ``redis_client``'s pool (the job
        store's); without one it makes its own (connecting on first use)."""

        def client(**options: Any) -> BoundedHttp:
            return BoundedHttp(
                loop,
                connect_timeout=settings.http_connect_timeout,
                read_timeout=settings.http_read_timeout,
                total_timeout=settings.upstream_call_timeout,
                max_bytes=MAX_BODY_BYTES,
                **options,
            )

        return cls(
            settings.aimlapi_base_url,
            settings.aimlapi_key,
            client(concurrency=settings.poll_concurrency),
            path=settings.upstream_path,
            create_http=client(concurrency=settings.poll_concurrency, reuse=False),
            limiter=RateLimiter(
                redis_client if redis_client is not None else connect(settings),
                Keys(settings.key_prefix),
                settings.upstream_rate,
            ),
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._secret()}"}

    def _secret(self) -> str:
        return self._key.get_secret_value()

    # --- the calls ----------------------------------------------------------------------

    def create(self, body: dict[str, Any], *, timeout: float | None = None) -> Status:
        """One create call, of at most ``timeout`` seconds (default: the total timeout),
        its wait for a rate-limit slot included. :class:`Throttled`: not sent."""
        data = self._limited("create", self.create_http, "POST", timeout, json=body)
        return answers.status_from(data, what="create", secret=self._secret())

    def status(self, generation_id: str, *, timeout: float | None = None) -> Status:
        """One status call, of at most ``timeout`` seconds. :class:`Throttled`: not sent."""
        data = self._limited(
            "poll", self.http, "GET", timeout, params={"generation_id": generation_id}
        )
        return answers.status_from(data, what="status", secret=self._secret())

    def _limited(
        self, kind: Kind, http: BoundedHttp, method: str, timeout: float | None, **kw: Any
    ) -> dict[str, Any]:
        """One synchronous call through the rate limit: sent at once when its slot is
        now, else after its wait on the loop, within the same total timeout."""
        limiter = self.limiter
        if limiter is None:
            return self._classified(lambda: http.call(method, self.url, timeout=timeout, **kw))
        total = http.total_timeout if timeout is None else min(timeout, http.total_timeout)
        [slot] = limiter.reserve(kind, [total])
        if isinstance(slot, Refused):
            raise throttled_error(kind, slot)
        began = time.monotonic()
        if slot <= began:
            return self._classified(lambda: http.call(method, self.url, timeout=timeout, **kw))

        async def later() -> Answer:
            refused = await limiter.wait(slot)
            if refused is not None:
                raise throttled_error(kind, refused)
            left = total - (time.monotonic() - began)
            return await http.request(method, self.url, timeout=left, **kw)

        # As BoundedHttp.call: the call ends itself; the extra second covers a busy loop.
        return self._classified(lambda: http.loop.run(later(), max(0.0, total) + 1.0))

    def reserve(self, kind: Kind, count: int, timeout: float) -> list[Slot] | None:
        """The slots of ``count`` calls of ``kind`` (each of at most ``timeout`` s), in
        order: a start time within the rate limit's horizon, or :class:`Refused`; in
        one round trip. A tick asks this before its calls, keeps the polls that got
        none in their place in line, and hands the slots to :meth:`each_status`.
        None: no limit is on and the fleet is not paused (no Redis round trip)."""
        limiter = self.limiter
        if limiter is None or (limiter.rate <= 0 and limiter.paused_for() <= 0):
            return None
        return limiter.reserve(kind, [timeout] * count)

    def each_status(
        self,
        calls: Sequence[tuple[str, float]],
        idle: float = 0.25,
        slots: list[Slot] | None = None,
    ) -> Iterator[tuple[int, Status | UpstreamError] | None]:
        """Many status calls at once on the loop, each ``(generation id, timeout)``: each
        generation's status or its classified error, given as soon as it arrives, with
        its index in ``calls``: one slow peer holds back no other answer. While no
        answer arrives for ``idle`` seconds, None is given, so the caller can do its own
        work meanwhile. Every call ends by its own timeout."""
        return self._each(
            "poll",
            [partial(self._status_async, g) for g, _ in calls],
            [t for _, t in calls],
            idle,
            slots,
        )

    def each_create(
        self,
        calls: Sequence[tuple[dict[str, Any], float]],
        idle: float = 0.25,
        slots: list[Slot] | None = None,
    ) -> Iterator[tuple[int, Status | UpstreamError] | None]:
        """Many create calls at once on the loop, each ``(body, timeout)``: each answer
        (the new generation, or the classified error) as it arrives, with its index,
        and None while none arrives for ``idle`` seconds (as :meth:`each_status`).
        ``slots``: reserved by :meth:`reserve`, one per call in order."""
        return self._each(
            "create",
            [partial(self._create_async, b) for b, _ in calls],
            [t for _, t in calls],
            idle,
            slots,
        )

    def _each(
        self,
        kind: Kind,
        calls: Sequence[Callable[[float], Awaitable[Status | UpstreamError]]],
        timeouts: Sequence[float],
        idle: float,
        reserved: list[Slot] | None = None,
    ) -> Iterator[tuple[int, Status | UpstreamError] | None]:
        """Run ``calls[i](timeout)`` at once on the loop, through the rate limit: the
        whole batch's slots in one reservation (or those :meth:`reserve` took, in
        order); a call without one is answered :class:`Throttled` at once (not sent), a
        granted one waits for its slot."""
        if not calls:
            return
        arrived: queue.SimpleQueue[tuple[int, Status | UpstreamError]] = queue.SimpleQueue()
        limiter = self.limiter
        granted: list[tuple[int, float]] = []  # (index, start)
        for index, slot in enumerate(self._slots(kind, timeouts, reserved)):
            if isinstance(slot, Refused):
                arrived.put((index, throttled_error(kind, slot)))
            else:
                granted.append((index, slot))

        async def one(index: int, start: float) -> None:
            timeout = timeouts[index]
            began = time.monotonic()
            if limiter is not None and start > began:
                refused = await limiter.wait(start)
                if refused is not None:
                    arrived.put((index, throttled_error(kind, refused)))
                    return
                timeout -= time.monotonic() - began
            arrived.put((index, await calls[index](timeout)))

        async def every() -> None:
            await asyncio.gather(*(one(i, start) for i, start in granted))

        future = self.http.loop.submit(every()) if granted else None
        give_up = time.monotonic() + max(timeouts) + 5.0
        yield from _as_they_arrive(arrived, len(calls), give_up, idle, future)

    def _slots(
        self, kind: Kind, timeouts: Sequence[float], reserved: list[Slot] | None
    ) -> list[Slot]:
        """One slot per call: those :meth:`reserve` took, in order (a call past them
        has none), else the whole batch's in one reservation (all at once with no
        limiter)."""
        limiter = self.limiter
        if reserved is None:
            if limiter is None:
                return [0.0] * len(timeouts)
            return limiter.reserve(kind, list(timeouts))
        slots: list[Slot] = reserved[: len(timeouts)]
        none_left = Refused(limiter.horizon if limiter else 1.0, "rate")
        return slots + [none_left] * (len(timeouts) - len(slots))

    async def _create_async(self, body: dict[str, Any], timeout: float) -> Status | UpstreamError:
        try:
            try:
                answer = await self.create_http.request(
                    "POST", self.url, json=body, timeout=timeout
                )
            except HttpFailure as exc:
                raise answers.failed_call(exc) from None
            data = self._decoded(answer, on_loop=True)
            return answers.status_from(data, what="create", secret=self._secret())
        except UpstreamError as exc:
            return exc
        except Exception as exc:  # one unreadable answer must not sink the whole batch
            return ProtocolError(f"create: unreadable answer ({type(exc).__name__})")

    async def _status_async(self, generation_id: str, timeout: float) -> Status | UpstreamError:
        try:
            try:
                # The URL built once per call and passed as encoded: no query parsing.
                url = f"{self.url}?generation_id={quote(generation_id, safe='')}"
                answer = await self.http.request("GET", url, timeout=timeout, encoded=True)
            except HttpFailure as exc:
                raise answers.failed_call(exc) from None
            data = self._decoded(answer, on_loop=True)
            return answers.status_from(data, what="status", secret=self._secret())
        except UpstreamError as exc:
            return exc
        except Exception as exc:  # one unreadable answer must not sink the whole batch
            return ProtocolError(f"status: unreadable answer ({type(exc).__name__})")

    def _classified(self, call: Any) -> dict[str, Any]:
        try:
            answer = call()
        except HttpFailure as exc:
            raise answers.failed_call(exc) from None
        return self._decoded(answer)

    def _decoded(self, answer: Answer, *, on_loop: bool = False) -> dict[str, Any]:
        """:func:`worker.answers.decode`; a 429 with ``Retry-After`` also pauses the
        fleet's calls."""
        try:
            return answers.decode(
                answer.status,
                answer.reason,
                answer.headers.get("Retry-After"),
                answer.body,
                secret=self._secret(),
            )
        except Transient as exc:
            if self.limiter is not None and exc.kind == "rate_limited" and exc.retry_after:
                if on_loop:
                    self.limiter.pause_soon(exc.retry_after)
                else:
                    self.limiter.pause(exc.retry_after)
            raise


def _as_they_arrive(
    arrived: queue.SimpleQueue[tuple[int, Status | UpstreamError]],
    count: int,
    give_up: float,
    idle: float,
    future: concurrent.futures.Future[None] | None,
) -> Iterator[tuple[int, Status | UpstreamError] | None]:
    """The ``count`` answers of a batch (index, answer) as they arrive, None while none
    does for ``idle`` seconds; at ``give_up`` (monotonic) the batch is cancelled and
    every call still out is answered a :class:`Transient` timeout."""
    pending = set(range(count))
    while pending:
        left = give_up - time.monotonic()
        if left <= 0:  # the loop is too busy to end the calls itself
            if future is not None:
                future.cancel()
            for index in sorted(pending):
                yield (
                    index,
                    Transient(
                        "no answer in time (the event loop is overloaded)",
                        outcome_unknown=True,
                        kind="timeout",
                    ),
                )
            return
        try:
            index, answer = arrived.get(timeout=min(idle, left))
        except queue.Empty:
            yield None
            continue
        pending.discard(index)
        yield index, answer
