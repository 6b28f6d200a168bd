"""BoundedHttp against real sockets on 127.0.0.1: a total deadline over the whole exchange,
a size cap on the streamed body, no redirects, the address guard, and the event loop."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.rawhttp import (
    Handler,
    RawServer,
    answer,
    endless_chunked,
    huge_content_length,
    silent,
    trickle_body,
    trickle_headers,
)
from worker.errors import AddressRefused, ConnectFailed, TimedOut, TooLarge
from worker.http import Answer, BoundedHttp, EventLoop

# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def make_http(io_loop: EventLoop) -> Iterator[Callable[..., BoundedHttp]]:
    made: list[BoundedHttp] = []

    def make(**overrides: Any) -> BoundedHttp:
        options: dict[str, Any] = {
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
            "total_timeout": 5.0,
            "max_bytes": 64 * 1024,
        }
        options.update(overrides)
        http = BoundedHttp(io_loop, **options)
        made.append(http)
        return http

    yield make
    for http in made:
        io_loop.run(http.aclose(), 5)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def timed(call: Callable[[], object]) -> tuple[BaseException | object, float]:
    start = time.monotonic()
    try:
        result: BaseException | object = call()
    except Exception as exc:
        result = exc
    return result, time.monotonic() - start


# --- the total deadline -------------------------------------------------------------------------


def test_a_body_trickling_under_the_read_timeout_is_cut_at_the_total_deadline(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(trickle_body)
    http = make_http(read_timeout=2.0, total_timeout=1.5)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TimedOut), error
    assert error.sent is True
    assert 1.5 - 0.2 < elapsed < 1.5 + 0.5
    assert server.sent > len(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")  # it did trickle


def test_headers_trickling_under_the_read_timeout_are_cut_at_the_total_deadline(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(trickle_headers)
    http = make_http(read_timeout=2.0, total_timeout=1.5)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TimedOut), error
    assert error.sent is True
    assert 1.5 - 0.2 < elapsed < 1.5 + 0.5


def test_a_server_that_never_answers_times_out_as_sent(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(silent)
    http = make_http(read_timeout=5.0, total_timeout=1.0)
    error, elapsed = timed(lambda: http.call("POST", server.url, json={"a": 1}))
    assert isinstance(error, TimedOut), error
    assert error.sent is True  # the request went out: a create must not be repeated
    assert elapsed < 1.0 + 0.5
    assert server.connections == 1 and b'{"a": 1}' in server.requests[0]


def test_a_closed_port_is_connect_failed_and_not_sent(
    make_http: Callable[..., BoundedHttp],
) -> None:
    http = make_http()
    error, elapsed = timed(lambda: http.call("GET", f"http://127.0.0.1:{closed_port()}/"))
    assert isinstance(error, ConnectFailed), error
    assert error.sent is False
    assert elapsed < 1.0


def test_no_time_left_is_a_timeout_before_connecting(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(answer("200 OK", b"{}"))
    http = make_http()
    with pytest.raises(TimedOut) as info:
        http.call("POST", server.url, json={}, timeout=0)
    assert info.value.sent is False
    time.sleep(0.2)
    assert server.connections == 0


# --- the size cap ---------------------------------------------------------------------------


def test_an_endless_chunked_body_is_cut_one_byte_past_the_cap(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(endless_chunked)
    http = make_http(max_bytes=64 * 1024, total_timeout=10.0)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TooLarge), error
    assert error.sent is True
    assert elapsed < 2.0
    # The client hung up: the server's sending stops with an error, well short of the
    # bound, having sent the cap plus what the two sockets' buffers hold.
    assert server.closed_by_peer.wait(5)
    assert server.sent < 1024 * 1024  # measured: about 110-180 KB with a 64 KB cap


def test_a_content_length_over_the_cap_is_refused_before_reading(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(huge_content_length)
    http = make_http(max_bytes=64 * 1024, total_timeout=10.0)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TooLarge), error
    assert str(52428800) in str(error)  # refused on the header, not by counting
    assert elapsed < 2.0
    assert server.closed_by_peer.wait(5)
    assert server.sent < 1024 * 1024  # measured: about 110-180 KB with a 64 KB cap


def test_a_gzip_bomb_is_cut_at_the_cap_after_decompression(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 64 * 1024  # small on the wire: Content-Length is under the cap
    server = raw_server(answer("200 OK", bomb, {"Content-Encoding": "gzip"}))
    http = make_http(max_bytes=64 * 1024)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TooLarge), error
    assert elapsed < 2.0


def test_an_answer_at_the_cap_is_read_whole(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(answer("200 OK", b"y" * 1000))
    http = make_http(max_bytes=1000)
    result = http.call("GET", server.url)
    assert result.status == 200 and result.body == b"y" * 1000


# --- no redirects ----------------------------------------------------------------------------


def test_a_redirect_is_returned_as_it_is_and_never_followed(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    target = raw_server(answer("200 OK", b'{"followed": true}'))
    server = raw_server(
        answer(
            "302 Found",
            b'{"moved": true}',
            {"Location": target.url + "elsewhere", "Content-Type": "application/json"},
        )
    )
    http = make_http()
    result = http.call("POST", server.url, json={"a": 1})
    assert isinstance(result, Answer)
    assert result.status == 302
    assert result.headers["location"] == target.url + "elsewhere"  # case-insensitive
    assert result.body == b'{"moved": true}'
    time.sleep(0.2)
    assert target.connections == 0


# --- the address guard ---------------------------------------------------------------------------


def refuse_loopback_v4(host: str) -> str | None:
    return "loopback address" if host == "127.0.0.1" else None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_guard_refuses_an_address_and_a_name_that_resolves_to_it(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
    host: str,
) -> None:
    server = raw_server(answer("200 OK", b"{}"))
    http = make_http(guard=refuse_loopback_v4)
    with pytest.raises(AddressRefused) as info:
        http.call("POST", f"http://{host}:{server.port}/hook", json={})
    assert info.value.sent is False
    assert "loopback" in str(info.value)
    time.sleep(0.2)
    assert server.connections == 0


def test_the_guard_lets_other_hosts_through(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(answer("204 No Content"))
    seen: list[str] = []

    def record(host: str) -> str | None:
        seen.append(host)
        return None

    http = make_http(guard=record)
    assert http.call("POST", server.url, json={}).status == 204
    assert "127.0.0.1" in seen


# --- the loop ------------------------------------------------------------------------------


def test_call_from_plain_threads_runs_calls_in_parallel(
    raw_server: Callable[[Handler], RawServer],
    make_http: Callable[..., BoundedHttp],
) -> None:
    server = raw_server(answer("200 OK", b"slow", delay=1.0))
    http = make_http(total_timeout=5.0)
    results: list[object] = []

    def one() -> None:
        try:
            results.append(http.call("GET", server.url))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - start
    assert [getattr(r, "status", r) for r in results] == [200, 200]
    assert all(isinstance(r, Answer) and r.body == b"slow" for r in results)
    assert elapsed < 1.8
    assert server.connections == 2


def test_event_loop_run_bounds_the_wait(io_loop: EventLoop) -> None:
    with pytest.raises(TimedOut):
        io_loop.run(asyncio.sleep(5), 0.2)
    assert io_loop.run(asyncio.sleep(0, result=7), 1.0) == 7
