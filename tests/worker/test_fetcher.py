"""Batch mode's async status calls against real HTTP: the threaded simulator with
faults, a silent server and a closed port. Each answer is classified as the
synchronous client classifies it."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr

from simulator import Simulator
from tests.worker.test_upstream import silent_server  # noqa: F401 (a fixture)
from worker.fetcher import StatusFetcher
from worker.upstream import (
    MAX_BODY_BYTES,
    ProtocolError,
    Rejected,
    Status,
    Transient,
    UpstreamClient,
)

KEY = "sk-fetcher-secret-0123"


@pytest.fixture
def sim() -> Iterator[Simulator]:
    server = Simulator(api_key=KEY, generation_time=0.0).start()
    yield server
    server.stop()


def fetcher_for(url: str, read_timeout: float = 5.0) -> StatusFetcher:
    client = UpstreamClient(url, SecretStr(KEY), connect_timeout=1.0, read_timeout=read_timeout)
    return StatusFetcher(client, concurrency=10)


def _generation(sim: Simulator) -> str:
    import requests

    answer = requests.post(
        f"{sim.base_url}/generate/video/kling/generation", timeout=5,
        headers={"Authorization": f"Bearer {KEY}"},
        json={"model": "kling-video/v2.1/pro/image-to-video", "image_url": "https://x/y.png"},
    )
    return str(answer.json()["id"])


def test_many_at_once_in_order_with_the_bearer_key(sim: Simulator) -> None:
    ids = [_generation(sim) for _ in range(30)]
    fetcher = fetcher_for(sim.base_url)
    try:
        answers = fetcher.fetch([*ids, "no-such-generation"])
    finally:
        fetcher.close()
    assert [a.generation_id for a in answers[:30] if isinstance(a, Status)] == ids
    assert all(isinstance(a, Status) and a.status == "completed" and a.video_url
               for a in answers[:30])
    assert isinstance(answers[30], Rejected) and answers[30].status_code == 404
    assert all(r.authorized for r in sim.requests() if r.method == "GET")


@pytest.mark.parametrize(
    ("fault", "expected", "check"),
    [
        ({"status": 429, "retry_after": 2}, Transient,
         lambda e: e.kind == "rate_limited" and e.retry_after == 2.0),
        ({"status": 503}, Transient, lambda e: e.kind == "server_error"),
        ({"kind": "body", "status": 200, "body": "<html>oops</html>"}, ProtocolError,
         lambda e: "not JSON" in str(e)),
        ({"kind": "body", "status": 200, "body": "x", "size": MAX_BODY_BYTES + 10},
         ProtocolError, lambda e: "over" in str(e)),
        ({"kind": "body", "status": 401, "body": f'{{"message": "bad key {KEY}"}}',
          "content_type": "application/json"}, Rejected,
         lambda e: KEY not in str(e) and "bad key ***" in str(e)),
        # aiohttp itself retries an idempotent GET once on a dropped connection
        ({"kind": "disconnect", "count": 2}, Transient, lambda e: e.kind == "connection"),
    ],
)
def test_each_failure_is_classified_like_the_sync_client(
    sim: Simulator, fault: dict[str, object], expected: type, check: Callable[[object], bool],
) -> None:
    gen = _generation(sim)
    sim.add_fault(method="GET", **fault)
    fetcher = fetcher_for(sim.base_url)
    try:
        [answer] = fetcher.fetch([gen])
    finally:
        fetcher.close()
    assert isinstance(answer, expected), answer
    assert check(answer), answer


def test_a_silent_upstream_is_a_timeout(silent_server: Callable[[], int]) -> None:  # noqa: F811
    fetcher = fetcher_for(f"http://127.0.0.1:{silent_server()}/v2", read_timeout=0.3)
    try:
        [answer] = fetcher.fetch(["g"])
    finally:
        fetcher.close()
    assert isinstance(answer, Transient) and answer.kind == "timeout"


def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    fetcher = fetcher_for(f"http://127.0.0.1:{port}/v2")
    try:
        [answer] = fetcher.fetch(["g"])
    finally:
        fetcher.close()
    assert isinstance(answer, Transient) and answer.kind == "connection"
