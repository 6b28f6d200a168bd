"""The AI/ML API client: create a generation, read its status.

Every call goes through :class:`worker.http.BoundedHttp`: a total deadline (at most
``VIDEOQ_HTTP_TOTAL_TIMEOUT``, and never past the job's deadline), an answer cap of
:data:`MAX_BODY_BYTES`, no redirects. Failures are classified so the tasks can decide
without guessing:

- :class:`Transient` (429, 5xx, network, timeout): retry later; ``retry_after`` honours
  the upstream's ``Retry-After``. ``outcome_unknown`` is set when the request may have
  been received and acted on but no answer came back (a timeout or a connection
  dropped after sending): a create in that state must not be repeated.
- :class:`Rejected` (other 4xx): the upstream refused the request; never retried.
- :class:`ProtocolError`: an answer the code cannot use (a redirect, too large, not
  JSON, missing fields).
- :class:`Throttled` (a :class:`Transient`): the call was **not sent**: the fleet-wide
  rate limit (``VIDEOQ_UPSTREAM_RATE``, :mod:`worker.ratelimit`) had no slot for it
  soon enough, or the fleet is paused after a 429's ``Retry-After``. Every call draws
  from that limit, and a 429 with ``Retry-After`` pauses every worker's calls.

Upstream text is data, not trusted: error messages and ids are length-capped, their
control characters escaped, and the API key masked before they are stored or logged.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import queue
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal
from urllib.parse import quote

import redis
from pydantic import SecretStr

from .errors import (
    HttpFailure,
    ProtocolError,
    Rejected,
    Throttled,
    TooLarge,
    Transient,
    UpstreamError,
)
from .http import Answer, BoundedHttp, EventLoop
from .keys import Keys
from .logs import clean, mask
from .ratelimit import Kind, RateLimiter, Refused, Slot
from .settings import Settings
from .store import connect

MAX_BODY_BYTES = 1024 * 1024
IN_PROGRESS = frozenset({"queued", "generating", "waiting", "active"})
PATHS = {
    "legacy": "/generate/video/kling/generation",
    "universal": "/video/generations",
}


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


MAX_ID_LENGTH = 128  # a generation id longer than this is cut (and then unusable)
MAX_TEXT_LENGTH = 500  # upstream error names and messages are cut to this


@dataclass(frozen=True)
class Status:
    generation_id: str
    status: str
    video_url: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    credits_used: float | None = None
    note: str | None = None  # something the answer had that was ignored, and why


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _error_text(reason: str | None, body: bytes) -> str:
    try:
        data = _loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[: MAX_TEXT_LENGTH * 2]
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])[: MAX_TEXT_LENGTH * 2]
    text = body[: MAX_TEXT_LENGTH * 8].decode("utf-8", "replace").strip()
    if text.lstrip().startswith("<"):
        return f"{(reason or 'error')[:100]} (HTML error page)"
    return text[: MAX_TEXT_LENGTH * 2] or (reason or "no message")[:100]


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
        return {"Authorization": f"Bearer {self._key.get_secret_value()}"}

    # --- the calls ----------------------------------------------------------------------

    def create(self, body: dict[str, Any], *, timeout: float | None = None) -> Status:
        """One create call, of at most ``timeout`` seconds (default: the total timeout),
        its wait for a rate-limit slot included. :class:`Throttled`: not sent."""
        data = self._limited("create", self.create_http, "POST", timeout, json=body)
        return self._status_from(data, what="create")

    def status(self, generation_id: str, *, timeout: float | None = None) -> Status:
        """One status call, of at most ``timeout`` seconds. :class:`Throttled`: not sent."""
        data = self._limited(
            "poll", self.http, "GET", timeout, params={"generation_id": generation_id}
        )
        return self._status_from(data, what="status")

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

    def statuses(self, calls: Sequence[tuple[str, float]]) -> list[Status | UpstreamError]:
        """Many status calls at once on the loop, each ``(generation id, timeout)``: each
        generation's status or its classified error, in the order given."""
        answers: list[Status | UpstreamError | None] = [None] * len(calls)
        for item in self.each_status(calls):
            if item is not None:
                answers[item[0]] = item[1]
        return [a for a in answers if a is not None]

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
        """The calls of :meth:`statuses`, made at once on the loop, each answer given as
        soon as it arrives, with its index in ``calls``: one slow peer holds back no
        other answer. While no answer arrives for ``idle`` seconds, None is given, so
        the caller can do its own work meanwhile. Every call ends by its own timeout."""
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
        if reserved is not None:
            slots: list[Slot] = reserved[: len(calls)]
            slots += [Refused(limiter.horizon if limiter else 1.0, "rate")] * (
                len(calls) - len(slots)
            )
        else:
            slots = [0.0] * len(calls) if limiter is None else limiter.reserve(kind, list(timeouts))
        granted: list[tuple[int, float]] = []  # (index, start)
        for index, slot in enumerate(slots):
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
        pending = set(range(len(calls)))
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

    async def _create_async(self, body: dict[str, Any], timeout: float) -> Status | UpstreamError:
        try:
            try:
                answer = await self.create_http.request(
                    "POST", self.url, json=body, timeout=timeout
                )
            except HttpFailure as exc:
                raise _transient(exc) from None
            return self._status_from(self._decoded(answer, on_loop=True), what="create")
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
                raise _transient(exc) from None
            return self._status_from(self._decoded(answer, on_loop=True), what="status")
        except UpstreamError as exc:
            return exc
        except Exception as exc:  # one unreadable answer must not sink the whole batch
            return ProtocolError(f"status: unreadable answer ({type(exc).__name__})")

    def _classified(self, call: Any) -> dict[str, Any]:
        try:
            answer = call()
        except HttpFailure as exc:
            raise _transient(exc) from None
        return self._decoded(answer)

    def _decoded(self, answer: Answer, *, on_loop: bool = False) -> dict[str, Any]:
        """:meth:`decode`; a 429 with ``Retry-After`` also pauses the fleet's calls."""
        try:
            return self.decode(
                answer.status, answer.reason, answer.headers.get("Retry-After"), answer.body
            )
        except Transient as exc:
            if self.limiter is not None and exc.kind == "rate_limited" and exc.retry_after:
                if on_loop:
                    self.limiter.pause_soon(exc.retry_after)
                else:
                    self.limiter.pause(exc.retry_after)
            raise

    # --- reading answers ------------------------------------------------------------------

    def decode(
        self, code: int, reason: str | None, retry_after: str | None, body: bytes
    ) -> dict[str, Any]:
        """Classify one answer (status, reason, ``Retry-After``, body): the JSON object,
        or :class:`Transient`, :class:`Rejected`, :class:`ProtocolError`."""
        if len(body) > MAX_BODY_BYTES:
            raise ProtocolError(f"answer over {MAX_BODY_BYTES} bytes (HTTP {code})")
        if code == 429 or code >= 500:
            raise Transient(
                f"HTTP {code}: {self._scrub(_error_text(reason, body))}",
                retry_after=parse_retry_after(retry_after),
                kind="rate_limited" if code == 429 else "server_error",
            )
        if code >= 400:
            raise Rejected(code, self._scrub(_error_text(reason, body)))
        if code >= 300 or code < 200:
            raise ProtocolError(f"HTTP {code} answer (redirects are not followed)")
        try:
            data = _loads(body)
        except ValueError:
            raise ProtocolError(f"answer is not JSON (HTTP {code})") from None
        if not isinstance(data, dict):
            raise ProtocolError(f"answer is not a JSON object (HTTP {code})")
        return data

    def _scrub(self, text: str) -> str:
        """Upstream text made safe: the API key masked (some APIs echo a bad key back),
        control characters escaped, the length capped."""
        return clean(mask(text, [self._key.get_secret_value()]), MAX_TEXT_LENGTH)

    def _status_from(self, data: dict[str, Any], *, what: str) -> Status:
        gen_id = data.get("id") or data.get("generation_id")
        if not isinstance(gen_id, str | int) or isinstance(gen_id, bool) or gen_id == "":
            raise ProtocolError(f"{what} answer has no generation id")
        status = data.get("status")
        if not isinstance(status, str):
            raise ProtocolError(f"{what} answer has no status")
        video = data.get("video")
        url = video.get("url") if isinstance(video, dict) else None
        err = data.get("error")
        err_name = err_msg = None
        if isinstance(err, dict):
            err_name = str(err.get("name") or "") or None
            err_msg = str(err.get("message") or "") or None
        elif isinstance(err, str):
            err_msg = err
        credits, note = _credits(data)
        return Status(
            generation_id=clean(str(gen_id), MAX_ID_LENGTH),
            status=self._scrub(status),
            video_url=url if isinstance(url, str) and url else None,
            error_name=self._scrub(err_name) if err_name else None,
            error_message=self._scrub(err_msg) if err_msg else None,
            credits_used=credits,
            note=note,
        )


def _credits(data: dict[str, Any]) -> tuple[float | None, str | None]:
    """``meta.usage.credits_used`` when it is a finite, non-negative number; else None,
    and a note saying what was ignored."""
    meta = data.get("meta")
    usage = meta.get("usage") if isinstance(meta, dict) else None
    value = usage.get("credits_used") if isinstance(usage, dict) else None
    if value is None:
        return None, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if math.isfinite(number) and number >= 0:
            return number, None
    shown = clean(repr(value), 40)
    return None, f"ignored credits_used={shown} from the upstream: not a finite number >= 0"


def _transient(exc: HttpFailure) -> UpstreamError:
    """A failed call in the upstream's terms. A too-large answer is a protocol error;
    the rest are transient, with ``outcome_unknown`` when the request went out."""
    if isinstance(exc, TooLarge):
        return ProtocolError(str(exc))
    kind = "timeout" if exc.kind == "timeout" else "connection"
    return Transient(str(exc), outcome_unknown=exc.sent, kind=kind)


def _loads(body: bytes) -> Any:
    """JSON from the upstream; ValueError for anything unreadable (a nesting deep
    enough to exhaust the parser's recursion included)."""
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
