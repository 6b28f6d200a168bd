"""The upstream client against fake HTTP: how each answer and each failure is classified."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import urllib3
from pydantic import SecretStr
from requests.adapters import BaseAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from worker.upstream import (
    MAX_BODY_BYTES,
    PATHS,
    Rejected,
    Transient,
    UpstreamClient,
    parse_retry_after,
)
from worker.upstream import (
    ProtocolError as UpstreamProtocolError,
)

KEY = "sk-unit-secret"


class FakeAdapter(BaseAdapter):
    """Answers each request with the next scripted reply (or raises it)."""

    def __init__(self, *replies: Any) -> None:
        super().__init__()
        self.replies = list(replies)
        self.sent: list[requests.PreparedRequest] = []
        self.kwargs: list[dict[str, Any]] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        self.kwargs.append(kwargs)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        code, body, headers = reply
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        resp = requests.Response()
        resp.status_code = code
        resp.reason = "Reason"
        resp.headers = requests.structures.CaseInsensitiveDict(headers)
        resp.raw = urllib3.HTTPResponse(
            body=io.BytesIO(data), headers=headers, status=code, preload_content=False
        )
        resp.url = request.url or ""
        resp.request = request
        return resp

    def close(self) -> None:
        pass


def client_with(*replies: Any, path: str = "legacy") -> tuple[UpstreamClient, FakeAdapter]:
    session = requests.Session()
    adapter = FakeAdapter(*replies)
    session.mount("http://", adapter)
    client = UpstreamClient(
        "http://upstream.test/v2",
        SecretStr(KEY),
        path=path,  # type: ignore[arg-type]
        connect_timeout=1.5,
        read_timeout=7,
        session=session,
    )
    return client, adapter


def test_create_sends_bearer_json_and_timeouts() -> None:
    client, adapter = client_with((200, {"id": "g1", "status": "queued"}, {}))
    status = client.create({"model": "m", "image_url": "https://x/y.png"})
    assert (status.generation_id, status.status) == ("g1", "queued")
    sent = adapter.sent[0]
    assert sent.method == "POST"
    assert sent.url == "http://upstream.test/v2" + PATHS["legacy"]
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(sent.body or b"{}") == {"model": "m", "image_url": "https://x/y.png"}
    assert adapter.kwargs[0]["timeout"] == (1.5, 7)


def test_universal_path_and_status_query() -> None:
    done = {
        "id": "g1",
        "status": "completed",
        "video": {"url": "https://cdn/v.mp4"},
        "meta": {"usage": {"credits_used": 210}},
    }
    client, adapter = client_with((200, done, {}), path="universal")
    status = client.status("g1")
    assert adapter.sent[0].url == "http://upstream.test/v2/video/generations?generation_id=g1"
    assert adapter.sent[0].method == "GET"
    assert (status.video_url, status.credits_used) == ("https://cdn/v.mp4", 210.0)


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


def test_429_is_transient_with_retry_after() -> None:
    client, _ = client_with((429, {"message": "slow down"}, {"Retry-After": "12"}))
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.retry_after == 12.0
    assert not info.value.outcome_unknown


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_5xx_is_transient(code: int) -> None:
    client, _ = client_with(
        (code, b"<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"})
    )
    with pytest.raises(Transient) as info:
        client.status("g")
    assert f"HTTP {code}" in str(info.value)
    assert "<html" not in str(info.value)


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


def test_huge_answer_is_refused_without_reading_it_all() -> None:
    client, _ = client_with((200, b"x" * (MAX_BODY_BYTES + 10), {}))
    with pytest.raises(UpstreamProtocolError, match="bytes"):
        client.status("g")


def _refused() -> requests.ConnectionError:
    inner = NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/", inner))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        (requests.ConnectTimeout("connect"), False),
        (_refused(), False),
        (
            requests.ConnectionError(ProtocolError("Connection aborted", ConnectionResetError())),
            True,
        ),
        (requests.ReadTimeout("read"), True),
    ],
)
def test_network_errors_say_whether_the_request_may_have_arrived(
    error: Exception, unknown: bool
) -> None:
    client, _ = client_with(error)
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.outcome_unknown is unknown
    assert KEY not in str(info.value)


def test_parse_retry_after() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") in (None, 0.0)
    http_date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after(http_date, now=1445412480.0) == pytest.approx(10.0)


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


def test_read_timeout_on_a_real_socket_is_an_unknown_outcome(
    silent_server: Callable[[], int],
) -> None:
    client = UpstreamClient(
        f"http://127.0.0.1:{silent_server()}/v2", SecretStr(KEY), read_timeout=0.3
    )
    with pytest.raises(Transient) as info:
        client.create({})
    assert info.value.outcome_unknown


def test_refused_port_is_known_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = UpstreamClient(f"http://127.0.0.1:{port}/v2", SecretStr(KEY))
    with pytest.raises(Transient) as info:
        client.create({})
    assert not info.value.outcome_unknown


def test_a_key_echoed_by_the_upstream_is_masked() -> None:
    client, _ = client_with(
        (401, {"message": f"invalid key {KEY}"}, {}),
        (200, {"id": "g", "status": "error", "error": {"message": f"bad {KEY}"}}, {}),
    )
    with pytest.raises(Rejected) as info:
        client.create({})
    assert KEY not in str(info.value) and "invalid key ***" in str(info.value)
    assert client.status("g").error_message == "bad ***"
