"""Batch mode's status calls (``UpstreamClient.each_status``) against real HTTP: the
threaded simulator with faults, a silent server and a closed port. Each call is bounded
by its own timeout, each answer classified as a single status call classifies it, and
the answers come back in the order asked."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
import requests
from pydantic import SecretStr

from simulator import Simulator
from tests.worker.conftest import SIM_KEY
from tests.worker.test_upstream import silent_server  # noqa: F401 (a fixture)
from tests.worker.upstream_fakes import all_answers
from worker.answers import MAX_BODY_BYTES, Status
from worker.errors import ProtocolError, Rejected, Transient
from worker.http import BoundedHttp, EventLoop
from worker.upstream import UpstreamClient


@pytest.fixture
def client_for(io_loop: EventLoop) -> Iterator[Callable[..., UpstreamClient]]:
    made: list[BoundedHttp] = []

    def make(url: str, read_timeout: float = 5.0, total_timeout: float = 10.0) -> UpstreamClient:
        http = BoundedHttp(
            io_loop,
            connect_timeout=1.0,
            read_timeout=read_timeout,
            total_timeout=total_timeout,
            max_bytes=MAX_BODY_BYTES,
            concurrency=10,
        )
        made.append(http)
        return UpstreamClient(url, SecretStr(SIM_KEY), http)

    yield make
    for http in made:
        io_loop.run(http.aclose(), 5)


def _generation(sim: Simulator) -> str:
    answer = requests.post(
        f"{sim.base_url}/generate/video/kling/generation",
        timeout=5,
        headers={"Authorization": f"Bearer {SIM_KEY}"},
        json={"model": "kling-video/v2.1/pro/image-to-video", "image_url": "https://x/y.png"},
    )
    return str(answer.json()["id"])


def test_many_at_once_in_order_with_the_bearer_key(
    sim: Simulator,
    client_for: Callable[..., UpstreamClient],
) -> None:
    ids = [_generation(sim) for _ in range(30)]
    client = client_for(sim.base_url)
    answers = all_answers(client, [(g, 5.0) for g in [*ids, "no-such-generation"]])
    assert [a.generation_id for a in answers[:30] if isinstance(a, Status)] == ids
    assert all(
        isinstance(a, Status) and a.status == "completed" and a.video_url for a in answers[:30]
    )
    assert isinstance(answers[30], Rejected) and answers[30].status_code == 404
    assert all(r.authorized for r in sim.requests() if r.method == "GET")
    assert list(client.each_status([])) == []


@pytest.mark.parametrize(
    ("fault", "expected", "check"),
    [
        (
            {"status": 429, "retry_after": 2},
            Transient,
            lambda e: e.kind == "rate_limited" and e.retry_after == 2.0,
        ),
        ({"status": 503}, Transient, lambda e: e.kind == "server_error"),
        (
            {"kind": "body", "status": 200, "body": "<html>oops</html>"},
            ProtocolError,
            lambda e: "not JSON" in str(e),
        ),
        (
            {"kind": "body", "status": 200, "body": "x", "size": MAX_BODY_BYTES + 10},
            ProtocolError,
            lambda e: "over" in str(e),
        ),
        (
            {
                "kind": "body",
                "status": 401,
                "body": f'{{"message": "bad key {SIM_KEY}"}}',
                "content_type": "application/json",
            },
            Rejected,
            lambda e: SIM_KEY not in str(e) and "bad key ***" in str(e),
        ),
        (
            {
                "kind": "body",
                "status": 302,
                "body": '{"id": "g", "status": "completed"}',
                "content_type": "application/json",
            },
            ProtocolError,
            lambda e: "redirects are not followed" in str(e),
        ),
        (
            {
                "kind": "body",
                "status": 400,
                "body": '{"message": "bad\\r\\nevent=forged"}',
                "content_type": "application/json",
            },
            Rejected,
            lambda e: "\r" not in str(e) and "\n" not in str(e) and "bad\\x0d\\x0a" in str(e),
        ),
        # aiohttp itself retries an idempotent GET once on a dropped connection
        (
            {"kind": "disconnect", "count": 2},
            Transient,
            lambda e: e.kind == "connection" and e.outcome_unknown,
        ),
    ],
)
def test_each_failure_is_classified_like_a_single_call(
    sim: Simulator,
    client_for: Callable[..., UpstreamClient],
    fault: dict[str, object],
    expected: type,
    check: Callable[[object], bool],
) -> None:
    gen = _generation(sim)
    sim.add_fault(method="GET", **fault)
    [answer] = all_answers(client_for(sim.base_url), [(gen, 5.0)])
    assert isinstance(answer, expected), answer
    assert check(answer), answer


def test_each_call_is_bounded_by_its_own_timeout(
    sim: Simulator,
    client_for: Callable[..., UpstreamClient],
) -> None:
    """One slow answer costs its own timeout; the others come back complete, each in
    its place."""
    ids = [_generation(sim) for _ in range(4)]
    sim.add_fault(method="GET", kind="delay", seconds=3.0)  # whichever GET arrives first
    client = client_for(sim.base_url)
    start = time.monotonic()
    answers = all_answers(client, [(g, 1.0) for g in ids])
    assert time.monotonic() - start < 2.0
    late = [a for a in answers if isinstance(a, Transient)]
    assert len(late) == 1 and late[0].kind == "timeout" and late[0].outcome_unknown
    for gen, got in zip(ids, answers, strict=True):
        assert isinstance(got, Transient) or (isinstance(got, Status) and got.generation_id == gen)


def test_a_silent_upstream_is_a_timeout(
    silent_server: Callable[[], int],  # noqa: F811
    client_for: Callable[..., UpstreamClient],
) -> None:
    client = client_for(f"http://127.0.0.1:{silent_server()}/v2", read_timeout=5.0)
    start = time.monotonic()
    answers = all_answers(client, [("g1", 0.3), ("g2", 0.6)])
    assert time.monotonic() - start < 1.5
    assert all(
        isinstance(a, Transient) and a.kind == "timeout" and a.outcome_unknown for a in answers
    ), answers


def test_a_closed_port_is_a_connection_error(client_for: Callable[..., UpstreamClient]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [answer] = all_answers(client_for(f"http://127.0.0.1:{port}/v2"), [("g", 5.0)])
    assert isinstance(answer, Transient) and answer.kind == "connection"
    assert not answer.outcome_unknown


def test_a_call_with_no_time_left_is_not_made(
    sim: Simulator,
    client_for: Callable[..., UpstreamClient],
) -> None:
    gen = _generation(sim)
    before = len(sim.requests())
    [answer] = all_answers(client_for(sim.base_url), [(gen, 0.0)])
    assert isinstance(answer, Transient) and answer.kind == "timeout"
    assert not answer.outcome_unknown
    assert len(sim.requests()) == before


def test_a_generation_id_of_any_characters_reaches_the_upstream_as_it_is(
    sim: Simulator,
    client_for: Callable[..., UpstreamClient],
) -> None:
    """Status URLs are built once, percent-encoded: an id with query syntax in it
    (``&``, ``=``, ``#``, spaces, non-ASCII) is one parameter, not several."""
    odd = "a b&generation_id=x#frag/é%20?"
    [answer] = all_answers(client_for(sim.base_url), [(odd, 5.0)])
    assert isinstance(answer, Rejected) and answer.status_code == 404
    [logged] = [r for r in sim.requests() if r.method == "GET"]
    assert logged.generation_id == odd
