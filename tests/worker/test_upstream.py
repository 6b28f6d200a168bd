"""The upstream client against a fake BoundedHttp: how each answer and each failure is
classified, and the two network cases that matter most on real sockets. How upstream
text is made safe, and what is read from an answer: test_answers.py."""

from __future__ import annotations

import email.utils
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.worker.upstream_fakes import KEY, all_answers, client_with
from worker.answers import MAX_BODY_BYTES, PATHS, Status
from worker.errors import (
    AddressRefused,
    ConnectFailed,
    Dropped,
    HttpFailure,
    Rejected,
    TimedOut,
    TooLarge,
    Transient,
)
from worker.errors import ProtocolError as UpstreamProtocolError
from worker.http import BoundedHttp, EventLoop
from worker.upstream import UpstreamClient


def test_create_sends_bearer_json_and_its_timeout() -> None:
    client, http = client_with((200, {"id": "g1", "status": "queued"}, {}))
    status = client.create({"model": "m", "image_url": "https://x/y.png"}, timeout=3.5)
    assert (status.generation_id, status.status) == ("g1", "queued")
    sent = http.sent[0]
    assert sent["method"] == "POST"
    assert sent["url"] == "http://upstream.test/v2" + PATHS["legacy"]
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"
    assert sent["json"] == {"model": "m", "image_url": "https://x/y.png"}
    assert sent["timeout"] == 3.5


def test_from_settings_bounds_every_call_and_carries_the_key(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings(aimlapi_key=KEY, http_connect_timeout=1.5, http_read_timeout=7.0)
    client = UpstreamClient.from_settings(settings, EventLoop())
    assert isinstance(client.http, BoundedHttp)
    assert client.http.headers["Authorization"] == f"Bearer {KEY}"
    assert (client.http.connect_timeout, client.http.read_timeout) == (1.5, 7.0)
    assert client.http.total_timeout == settings.upstream_call_timeout == 8.5
    assert client.http.max_bytes == MAX_BODY_BYTES
    assert client.http.guard is None


def test_universal_path_and_status_query() -> None:
    done = {
        "id": "g1",
        "status": "completed",
        "video": {"url": "https://cdn/v.mp4"},
        "meta": {"usage": {"credits_used": 210}},
    }
    client, http = client_with((200, done, {}), path="universal")
    status = client.status("g1", timeout=2.0)
    sent = http.sent[0]
    assert sent["url"] == "http://upstream.test/v2/video/generations"
    assert sent["params"] == {"generation_id": "g1"}
    assert (sent["method"], sent["timeout"]) == ("GET", 2.0)
    assert (status.video_url, status.credits_used, status.note) == (
        "https://cdn/v.mp4",
        210.0,
        None,
    )


def test_error_status_carries_name_and_message() -> None:
    body = {"id": "g1", "status": "error", "error": {"name": "Bad", "message": "no faces"}}
    client, _ = client_with((200, body, {}))
    status = client.status("g1")
    assert (status.status, status.error_name, status.error_message) == ("error", "Bad", "no faces")


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
def test_4xx_is_rejected_with_the_upstreams_message(code: int) -> None:
    client, _ = client_with((code, {"message": "Invalid API key"}, {}))
    with pytest.raises(Rejected) as info:
        client.create({})
    assert info.value.status_code == code
    assert "Invalid API key" in str(info.value)


def test_429_is_transient_with_retry_after_seconds() -> None:
    client, _ = client_with((429, {"message": "slow down"}, {"Retry-After": "12"}))
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.retry_after == 12.0
    assert info.value.kind == "rate_limited"
    assert not info.value.outcome_unknown


def test_429_is_transient_with_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    client, _ = client_with((429, {"message": "slow down"}, {"retry-after": when}))
    with pytest.raises(Transient) as info:
        client.status("g")
    assert info.value.retry_after is not None and 25 <= info.value.retry_after <= 31


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_is_transient(code: int) -> None:
    client, _ = client_with(
        (code, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
    )
    with pytest.raises(Transient) as info:
        client.status("g")
    assert f"HTTP {code}" in str(info.value)
    assert "<html" not in str(info.value)
    assert info.value.kind == "server_error" and not info.value.outcome_unknown


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308, 304, 101])
def test_a_redirect_or_informational_answer_is_a_protocol_error(code: int) -> None:
    client, _ = client_with(
        (code, {"id": "g", "status": "completed"}, {"Location": "http://elsewhere.test/"})
    )
    with pytest.raises(UpstreamProtocolError, match="redirects are not followed"):
        client.create({})


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"status": "queued"}).encode(),
        json.dumps({"id": "g", "status": 3}).encode(),
        json.dumps({"id": "", "status": "x"}).encode(),
    ],
)
def test_malformed_answers_are_protocol_errors(body: bytes) -> None:
    client, _ = client_with((200, body, {}))
    with pytest.raises(UpstreamProtocolError):
        client.status("g")


def test_huge_answer_is_a_protocol_error() -> None:
    client, _ = client_with((200, b"x" * (MAX_BODY_BYTES + 10), {}))
    with pytest.raises(UpstreamProtocolError, match="bytes"):
        client.status("g")


def test_an_answer_cut_off_at_the_cap_is_a_protocol_error() -> None:
    client, _ = client_with(TooLarge(f"answer over {MAX_BODY_BYTES} bytes"))
    with pytest.raises(UpstreamProtocolError, match="over"):
        client.create({})


@pytest.mark.parametrize(
    ("error", "unknown", "kind"),
    [
        (TimedOut("could not connect within 1.0s", sent=False), False, "timeout"),
        (ConnectFailed("cannot connect: ConnectionRefusedError"), False, "connection"),
        (AddressRefused("blocked"), False, "connection"),
        (Dropped("the answer broke off: ServerDisconnectedError", sent=True), True, "connection"),
        (TimedOut("no complete answer within 8.5s", sent=True), True, "timeout"),
    ],
)
def test_network_errors_say_whether_the_request_may_have_arrived(
    error: HttpFailure, unknown: bool, kind: str
) -> None:
    client, _ = client_with(error)
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.outcome_unknown is unknown
    assert info.value.kind == kind
    assert KEY not in str(info.value)


def test_a_batch_on_the_fake_keeps_order_and_classifies_each() -> None:
    client, http = client_with(
        (200, {"id": "a", "status": "generating"}, {}),
        (404, {"message": "no such generation"}, {}),
        TimedOut("no complete answer within 1.0s", sent=True),
    )
    calls = [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    answers = all_answers(client, calls)
    assert isinstance(answers[0], Status) and answers[0].generation_id == "a"
    assert isinstance(answers[1], Rejected) and answers[1].status_code == 404
    assert isinstance(answers[2], Transient) and answers[2].kind == "timeout"
    assert [s["timeout"] for s in http.sent] == [1.0, 2.0, 3.0]


# --- real sockets: the two network cases that matter most for "one create per job" ---------


@pytest.fixture
def silent_server() -> Iterator[Callable[[], int]]:
    """A server that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield lambda: int(sock.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()


@pytest.fixture
def real_client(io_loop: EventLoop) -> Iterator[Callable[..., UpstreamClient]]:
    made: list[BoundedHttp] = []

    def make(url: str, *, read_timeout: float = 5.0, total_timeout: float = 5.0) -> UpstreamClient:
        http = BoundedHttp(
            io_loop,
            connect_timeout=1.0,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            max_bytes=MAX_BODY_BYTES,
        )
        made.append(http)
        return UpstreamClient(url, SecretStr(KEY), http)

    yield make
    for http in made:
        io_loop.run(http.aclose(), 5)


def test_read_timeout_on_a_real_socket_is_an_unknown_outcome(
    silent_server: Callable[[], int],
    real_client: Callable[..., UpstreamClient],
) -> None:
    client = real_client(f"http://127.0.0.1:{silent_server()}/v2", read_timeout=0.3)
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.outcome_unknown and info.value.kind == "timeout"


def test_total_deadline_on_a_real_socket_is_an_unknown_outcome(
    silent_server: Callable[[], int],
    real_client: Callable[..., UpstreamClient],
) -> None:
    client = real_client(f"http://127.0.0.1:{silent_server()}/v2")
    start = time.monotonic()
    with pytest.raises(Transient) as info:
        client.create({}, timeout=0.5)
    assert time.monotonic() - start < 1.5
    assert info.value.outcome_unknown and info.value.kind == "timeout"


def test_refused_port_is_known_not_sent(real_client: Callable[..., UpstreamClient]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = real_client(f"http://127.0.0.1:{port}/v2")
    with pytest.raises(Transient) as info:
        client.create({})
    assert not info.value.outcome_unknown and info.value.kind == "connection"
