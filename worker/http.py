"""Outbound HTTP with hard bounds: every call videoq makes goes through :class:`BoundedHttp`.

That is the upstream's creates and status calls, webhook deliveries, and any later
download. A slow, huge or hostile peer costs at most one bounded call:

- **a total deadline** over the whole exchange (connect, send, headers, body). A peer
  that trickles a byte at a time, each under the read timeout, is still cut off at the
  deadline;
- **a size cap**: the answer is streamed and reading stops one byte past the cap, so a
  huge or endless (chunked) body costs at most the cap in memory;
- **no redirects**: a 3xx comes back as it is, for the caller to refuse;
- **an address guard** (optional, for caller-supplied URLs such as webhooks): the host
  and every address it resolves to are checked before connecting, so neither a numeric
  form nor a DNS name can smuggle in a loopback or private address.

The calls run on one asyncio loop per process, in a daemon thread (:class:`EventLoop`).
Batch mode's ticks and webhook deliveries await them there; a synchronous caller (a
chain task's create or poll) waits on a future bounded by the same deadline.

Failures are :class:`HttpFailure` subclasses. ``sent`` says whether the request may have
reached the peer: a create whose answer was lost after sending must not be repeated.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult

from .errors import AddressRefused, ConnectFailed, Dropped, HttpFailure, TimedOut, TooLarge

T = TypeVar("T")
CLEANUP_WAIT = 2.0  # seconds a caller that gave up waits for the cancelled work's cleanup

# Given a host (a name as written in a URL, or an address), why it must not be
# contacted, or None. See ``worker.urls``.
Guard = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str | None
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


class EventLoop:
    """One asyncio loop in a daemon thread, started on first use in each process (a
    forked pool child starts its own)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="videoq-io", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start ``coro`` on the loop; the caller may wait on the future, or not."""
        return asyncio.run_coroutine_threadsafe(coro, self.get())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for it.

        A caller that stops waiting (the timeout, or an exception such as Ctrl-C's
        ``KeyboardInterrupt`` raised while it waits) cancels ``coro`` and gives its
        cleanup up to :data:`CLEANUP_WAIT` seconds to run: no work outlives its caller."""
        ended = threading.Event()

        async def tracked() -> T:
            try:
                return await coro
            finally:
                ended.set()

        future = self.submit(tracked())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            ended.wait(CLEANUP_WAIT)
            raise TimedOut(f"no result within {timeout:.1f}s", sent=True) from None
        except BaseException:
            future.cancel()  # no-op when coro itself raised
            ended.wait(CLEANUP_WAIT)
            raise


class _Blocked(OSError):
    pass


class _Resolver(AbstractResolver):
    """The system resolver on a thread pool of this client's own (so that slow lookups
    for one client's peers never hold up another's), refusing, when there is a guard,
    any name that resolves to a blocked address."""

    def __init__(self, guard: Guard | None, threads: int) -> None:
        self._guard = guard
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, "videoq-dns")

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        lookup = functools.partial(
            socket.getaddrinfo, host, port, family, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG
        )
        infos = await asyncio.get_running_loop().run_in_executor(self._pool, lookup)
        found: list[ResolveResult] = []
        for fam, _, proto, _, address in infos:
            if fam not in (socket.AF_INET, socket.AF_INET6):
                continue
            if self._guard is not None and (reason := self._guard(str(address[0]))):
                raise _Blocked(f"{host} resolves to {address[0]}: {reason}")
            found.append(
                ResolveResult(
                    hostname=host,
                    host=str(address[0]),
                    port=int(address[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not found:
            raise OSError(f"{host} has no address")
        return found

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


async def _connected(_: aiohttp.ClientSession, ctx: SimpleNamespace, __: object) -> None:
    ctx.trace_request_ctx["connected"] = True


def _ssl_context() -> ssl.SSLContext | bool:
    """The CA bundle named by the usual variables, read once (as ``requests`` does)."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle) if bundle else True


class BoundedHttp:
    """HTTP calls with a total deadline, a size cap, no redirects and an optional guard.

    ``total_timeout`` is the longest any call may take; a caller may ask for less (a
    job near its deadline). ``connect_timeout`` and ``read_timeout`` bound the
    connection and each read within that.
    """

    def __init__(
        self,
        loop: EventLoop,
        *,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        max_bytes: int,
        concurrency: int = 100,
        per_host: int = 0,
        reuse: bool = True,
        guard: Guard | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.per_host = per_host  # most connections to one host (0: no limit of its own)
        self.reuse = reuse  # False: a new connection for every call
        self.guard = guard
        self.in_flight = 0  # calls under way now (read by callers that shed load)
        self.headers = dict(headers or {})
        self._proxies = urllib.request.getproxies_environment()
        self._ssl = _ssl_context()
        self._session: tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession] | None = None

    def _client(self) -> aiohttp.ClientSession:
        """This loop's session (made on the loop, on first use)."""
        running = asyncio.get_running_loop()
        if self._session is None or self._session[0] is not running:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(_connected)
            trace.on_connection_reuseconn.append(_connected)
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.concurrency,
                    limit_per_host=self.per_host,
                    force_close=not self.reuse,
                    resolver=_Resolver(self.guard, 4),
                    ssl=self._ssl,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                headers=self.headers,
                trust_env=False,
                # No peer's cookie is ever sent back (and none is kept or parsed).
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=[trace],
            )
            self._session = (running, session)
        return self._session[1]

    def _proxy(self, url: str) -> str | None:
        if self.guard is not None:
            # Through a proxy only the proxy's address would be checked: a guarded
            # client connects directly, so that every address it reaches is checked.
            return None
        scheme = url.split(":", 1)[0].lower()
        proxy = self._proxies.get(scheme)
        if not proxy:
            return None
        host = urlsplit(url).hostname or ""
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        return None if bypass(host, self._proxies) else proxy

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        max_bytes: int | None = None,
        encoded: bool = False,
        sink: Callable[[bytes], object] | None = None,
    ) -> Answer:
        """One call, awaited on this object's loop. Raises :class:`HttpFailure`.
        ``encoded``: ``url`` is already percent-encoded (taken as it is, unparsed).
        ``sink`` (a download): a 200 answer's body goes to it chunk by chunk, within the
        same deadline and cap, and the :class:`Answer`'s body is empty; any other
        answer's body is not read."""
        total = self.total_timeout if timeout is None else min(timeout, self.total_timeout)
        cap = self.max_bytes if max_bytes is None else max_bytes
        if total <= 0:
            raise TimedOut("no time left for the call", sent=False)
        if self.guard is not None:
            reason = self.guard(urlsplit(url).hostname or "")
            if reason:
                raise AddressRefused(reason)
        state: dict[str, bool] = {"connected": False}
        self.in_flight += 1
        try:
            async with asyncio.timeout(total):
                async with self._client().request(
                    method,
                    yarl.URL(url, encoded=True) if encoded else url,
                    params=params,
                    json=json,
                    data=data,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self._proxy(url),
                    trace_request_ctx=state,
                ) as resp:
                    if resp.content_length is not None and resp.content_length > cap:
                        raise TooLarge(f"answer over {cap} bytes ({resp.content_length} announced)")
                    if sink is not None:
                        if resp.status == 200:
                            await _read_capped(resp.content, cap, sink)
                        return Answer(resp.status, resp.reason, resp.headers, b"")
                    body = await _read_capped(resp.content, cap)
                    return Answer(resp.status, resp.reason, resp.headers, body)
        except HttpFailure:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._failure(exc, connected=state["connected"], total=total) from None
        finally:
            self.in_flight -= 1

    def _failure(self, exc: BaseException, *, connected: bool, total: float) -> HttpFailure:
        """The :class:`HttpFailure` a call's exception stands for; ``connected``: the
        request may have gone out; ``total``: the call's whole deadline."""
        if isinstance(exc, aiohttp.ServerTimeoutError):  # a connect or a read too slow
            if not connected:
                return TimedOut(f"connect timeout after {self.connect_timeout}s", sent=False)
            return TimedOut(f"read timeout after {self.read_timeout}s", sent=True)
        if isinstance(exc, TimeoutError):
            return TimedOut(
                f"no complete answer within {total:.1f}s"
                if connected
                else f"no connection within {total:.1f}s (connecting, or waiting for a "
                "free connection)",
                sent=connected,
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            if isinstance(exc.os_error, _Blocked):
                return AddressRefused(str(exc.os_error))
            return ConnectFailed(f"connection failed: {type(exc.os_error).__name__}")
        if not connected:
            return ConnectFailed(f"connection failed: {type(exc).__name__}")
        return Dropped(f"connection dropped: {type(exc).__name__}", sent=True)

    def call(self, method: str, url: str, **kwargs: Any) -> Answer:
        """:meth:`request` for synchronous callers: waits on the loop's thread."""
        timeout = kwargs.get("timeout")
        total = self.total_timeout if timeout is None else min(timeout, self.total_timeout)
        # The call ends itself at ``total``; the extra second only covers a loop that
        # is too busy to say so.
        return self.loop.run(self.request(method, url, **kwargs), max(0.0, total) + 1.0)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session[1].close()
            self._session = None


async def _read_capped(
    stream: aiohttp.StreamReader, cap: int, sink: Callable[[bytes], object] | None = None
) -> bytes:
    """The body, or :class:`TooLarge` as soon as more than ``cap`` bytes arrived. With
    ``sink``, each chunk goes to it instead, and the result is empty."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await stream.read(min(1 << 16, cap + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"answer over {cap} bytes")
        if sink is None:
            chunks.append(chunk)
        else:
            sink(chunk)
