"""BoundedHttp against real sockets on 127.0.0.1: a total deadline over the whole exchange,
a size cap on the streamed body, no redirects, the address guard, and the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from worker.http import (
    AddressRefused,
    Answer,
    BoundedHttp,
    ConnectFailed,
    EventLoop,
    TimedOut,
    TooLarge,
)

# What a connection handler is given: the accepted socket and the server (for its
# counters and its stop event). It answers however its mode says.
Handler = Callable[[socket.socket, "RawServer"], None]
TRICKLE_EVERY = 0.3
MAX_SENT = 64 * 1024 * 1024  # an "endless" answer stops here whatever happens


class RawServer:
    """A tiny threaded TCP server on 127.0.0.1 that answers every connection with
    ``handler``. It counts connections and the bytes it managed to send; every loop is
    bounded by ``stop`` (set at teardown) and by a socket timeout."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.connections = 0
        self.sent = 0
        self.requests: list[bytes] = []
        self.closed_by_peer = threading.Event()  # a send failed: the client hung up
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(5.0)
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            self.closed_by_peer.set()

    def read_request(self, conn: socket.socket) -> bytes:
        """The request's head and (by Content-Length) body."""
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length and not self.stop.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        with self.lock:
            self.requests.append(head + b"\r\n\r\n" + body)
        return head + b"\r\n\r\n" + body

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self.lock:
            self.sent += len(data)

    def close(self) -> None:
        self.stop.set()
        self.acceptor.join(5)
        with self.lock:
            conns = list(self.conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for thread in self.threads:
            thread.join(5)
        self.sock.close()


# --- modes -----------------------------------------------------------------------------------


def answer(status: str, body: bytes = b"", headers: dict[str, str] | None = None,
           delay: float = 0.0) -> Handler:
    """A complete answer (after ``delay`` seconds), then close."""
    def handle(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        if delay:
            server.stop.wait(delay)
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        server.send(conn, ("\r\n".join(head) + "\r\n\r\n").encode() + body)
        conn.close()
    return handle


def trickle_body(conn: socket.socket, server: RawServer) -> None:
    """Headers at once, then one byte of a 100-byte body every TRICKLE_EVERY seconds."""
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    for _ in range(100):
        if server.stop.wait(TRICKLE_EVERY):
            return
        server.send(conn, b"x")


def trickle_headers(conn: socket.socket, server: RawServer) -> None:
    """The status line, then the headers one byte every TRICKLE_EVERY seconds."""
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\n")
    for byte in b"X-Slow: " + b"a" * 100:
        if server.stop.wait(TRICKLE_EVERY):
            return
        server.send(conn, bytes([byte]))


def silent(conn: socket.socket, server: RawServer) -> None:
    """Accept, read the request, never answer."""
    server.read_request(conn)
    server.stop.wait(30)


def endless_chunked(conn: socket.socket, server: RawServer) -> None:
    """A chunked answer that never ends (until the client hangs up, or MAX_SENT)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    server.read_request(conn)
    server.send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 16384 + b"x" * 16384 + b"\r\n"
    while not server.stop.is_set() and server.sent < MAX_SENT:
        server.send(conn, chunk)


def huge_content_length(conn: socket.socket, server: RawServer) -> None:
    """Content-Length says 50 MB, and the server tries to send them."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    server.read_request(conn)
    size = 50 * 1024 * 1024
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
    block = b"x" * 16384
    while not server.stop.is_set() and server.sent < size:
        server.send(conn, block)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def event_loop_thread() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    running = loop.get()
    running.call_soon_threadsafe(running.stop)


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        server = RawServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def make_http(event_loop_thread: EventLoop) -> Iterator[Callable[..., BoundedHttp]]:
    made: list[BoundedHttp] = []

    def make(**overrides: Any) -> BoundedHttp:
        options: dict[str, Any] = {
            "connect_timeout": 1.0, "read_timeout": 2.0, "total_timeout": 5.0,
            "max_bytes": 64 * 1024,
        }
        options.update(overrides)
        http = BoundedHttp(event_loop_thread, **options)
        made.append(http)
        return http

    yield make
    for http in made:
        event_loop_thread.run(http.aclose(), 5)


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
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(trickle_body)
    http = make_http(read_timeout=2.0, total_timeout=1.5)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TimedOut), error
    assert error.sent is True
    assert 1.5 - 0.2 < elapsed < 1.5 + 0.5
    assert server.sent > len(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")  # it did trickle


def test_headers_trickling_under_the_read_timeout_are_cut_at_the_total_deadline(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(trickle_headers)
    http = make_http(read_timeout=2.0, total_timeout=1.5)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TimedOut), error
    assert error.sent is True
    assert 1.5 - 0.2 < elapsed < 1.5 + 0.5


def test_a_server_that_never_answers_times_out_as_sent(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(silent)
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
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(answer("200 OK", b"{}"))
    http = make_http()
    with pytest.raises(TimedOut) as info:
        http.call("POST", server.url, json={}, timeout=0)
    assert info.value.sent is False
    time.sleep(0.2)
    assert server.connections == 0


# --- the size cap ---------------------------------------------------------------------------


def test_an_endless_chunked_body_is_cut_one_byte_past_the_cap(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(endless_chunked)
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
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(huge_content_length)
    http = make_http(max_bytes=64 * 1024, total_timeout=10.0)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TooLarge), error
    assert str(52428800) in str(error)  # refused on the header, not by counting
    assert elapsed < 2.0
    assert server.closed_by_peer.wait(5)
    assert server.sent < 1024 * 1024  # measured: about 110-180 KB with a 64 KB cap


def test_a_gzip_bomb_is_cut_at_the_cap_after_decompression(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    assert len(bomb) < 64 * 1024  # small on the wire: Content-Length is under the cap
    server = serve(answer("200 OK", bomb, {"Content-Encoding": "gzip"}))
    http = make_http(max_bytes=64 * 1024)
    error, elapsed = timed(lambda: http.call("GET", server.url))
    assert isinstance(error, TooLarge), error
    assert elapsed < 2.0


def test_an_answer_at_the_cap_is_read_whole(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(answer("200 OK", b"y" * 1000))
    http = make_http(max_bytes=1000)
    result = http.call("GET", server.url)
    assert result.status == 200 and result.body == b"y" * 1000


# --- no redirects ----------------------------------------------------------------------------


def test_a_redirect_is_returned_as_it_is_and_never_followed(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    target = serve(answer("200 OK", b'{"followed": true}'))
    server = serve(answer("302 Found", b'{"moved": true}',
                          {"Location": target.url + "elsewhere",
                           "Content-Type": "application/json"}))
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
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp], host: str,
) -> None:
    server = serve(answer("200 OK", b"{}"))
    http = make_http(guard=refuse_loopback_v4)
    with pytest.raises(AddressRefused) as info:
        http.call("POST", f"http://{host}:{server.port}/hook", json={})
    assert info.value.sent is False
    assert "loopback" in str(info.value)
    time.sleep(0.2)
    assert server.connections == 0


def test_the_guard_lets_other_hosts_through(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(answer("204 No Content"))
    seen: list[str] = []

    def record(host: str) -> str | None:
        seen.append(host)
        return None

    http = make_http(guard=record)
    assert http.call("POST", server.url, json={}).status == 204
    assert "127.0.0.1" in seen


# --- the loop ------------------------------------------------------------------------------


def test_call_from_plain_threads_runs_calls_in_parallel(
    serve: Callable[[Handler], RawServer], make_http: Callable[..., BoundedHttp],
) -> None:
    server = serve(answer("200 OK", b"slow", delay=1.0))
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


def test_event_loop_run_bounds_the_wait(event_loop_thread: EventLoop) -> None:
    with pytest.raises(TimedOut):
        event_loop_thread.run(asyncio.sleep(5), 0.2)
    assert event_loop_thread.run(asyncio.sleep(0, result=7), 1.0) == 7
