"""Webhook signing and verification (Standard Webhooks), and delivery on the event loop:
on a fake clock, with a scripted HTTP client or a real receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from multidict import CIMultiDict

from tests.rawhttp import Handler, RawServer, answer, trickle_body
from tests.worker.conftest import World
from worker import webhooks
from worker.answers import Status
from worker.errors import ConnectFailed, HttpFailure, WebhookVerificationError
from worker.http import Answer, BoundedHttp, EventLoop
from worker.request import parse_request
from worker.signatures import headers_for, sign, verify
from worker.sweeper import sweep
from worker.urls import address_guard
from worker.webhooks import LEASE_MARGIN, run_webhook, webhook_http

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_matches_the_standard_webhooks_recipe() -> None:
    body = b'{"id": "j1"}'
    expected = base64.b64encode(
        hmac.new(
            b"0123456789abcdef0123456789abcdef", b"msg_1.1700000000." + body, hashlib.sha256
        ).digest()
    ).decode()
    assert sign(SECRET, "msg_1", 1700000000, body) == f"v1,{expected}"


def test_verify_accepts_a_good_webhook_and_refuses_tampering() -> None:
    body = b'{"id": "j1", "state": "completed"}'
    headers = headers_for(SECRET, "j1.completed", 1700000000, body)
    assert verify(SECRET, headers, body, now=1700000010)["state"] == "completed"
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(SECRET, headers, body.replace(b"completed", b"failed"), now=1700000010)
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify(SECRET, headers, body, now=1700000000 + 3600)
    other = "whsec_" + base64.b64encode(b"another key, another key, 32 by").decode()
    with pytest.raises(WebhookVerificationError, match="signature"):
        verify(other, headers, body, now=1700000010)
    with pytest.raises(WebhookVerificationError, match="headers"):
        verify(SECRET, {}, body)


class FakeHttp:
    """A BoundedHttp stand-in on a real event loop: each POST gets the next scripted
    status, or raises the scripted :class:`HttpFailure`."""

    guard = None
    in_flight = 0

    def __init__(self, loop: EventLoop, statuses: list[int | HttpFailure]) -> None:
        self.loop = loop
        self.statuses = statuses
        self.sent: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> Answer:
        self.sent.append({"method": method, "url": url, **kwargs})
        reply = self.statuses.pop(0)
        if isinstance(reply, HttpFailure):
            raise reply
        return Answer(reply, None, CIMultiDict(), b"")


def finished_job_with_hook(w: World, url: str = "https://hooks.example.com/videoq") -> str:
    w.store.create(
        "job-1",
        parse_request({"image_url": "https://example.com/a.png"}),
        accepted_at=w.clock.now,
        deadline_at=w.deadline_at,
        webhook_url=url,
    )
    w.generate()
    w.scheduler.pop()
    w.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    w.poll(1)
    return "job-1"


def deliver_now(w: World, job_id: str, attempt: int) -> None:
    """One run of the delivery task, waiting for the attempt it started."""
    future = run_webhook(w.rt, job_id, attempt)
    assert future is not None
    future.result(10)


def test_a_finished_job_schedules_its_webhook_which_retries_then_delivers(
    world: Callable[..., World],
    io_loop: EventLoop,
) -> None:
    w = world(webhook_secret=SECRET, webhook_window=60.0)
    job_id = finished_job_with_hook(w)
    call = w.scheduler.pop()
    assert (call.step, call.attempt, call.countdown) == ("webhook", 1, 0)
    http = FakeHttp(io_loop, [500, ConnectFailed("cannot connect: ConnectionRefusedError"), 204])
    w.rt.http = http  # type: ignore[assignment]
    deliver_now(w, job_id, 1)
    retry = w.scheduler.pop()
    assert retry.step == "webhook" and retry.attempt == 2 and retry.countdown >= 1.0
    w.clock.advance(retry.countdown)
    deliver_now(w, job_id, 2)
    w.clock.advance(w.scheduler.pop().countdown)
    deliver_now(w, job_id, 3)
    assert w.scheduler.calls == []
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "delivered"
    assert [a.get("status") for a in job.webhook_attempts] == [500, None, 204]
    assert job.webhook_attempts[0]["error"] == "HTTP 500"
    assert job.webhook_attempts[1]["error"].startswith("connection: cannot connect")
    sent = http.sent
    assert {s["headers"]["webhook-id"] for s in sent} == {"job-1.completed"}
    verify(SECRET, sent[-1]["headers"], sent[-1]["data"], now=w.clock.now)
    assert run_webhook(w.rt, job_id, 4) is None  # a duplicate message after delivery
    assert len(sent) == 3


def test_webhook_gives_up_at_the_end_of_the_window(
    world: Callable[..., World],
    io_loop: EventLoop,
) -> None:
    w = world(webhook_secret=SECRET, webhook_window=5.0, retry_backoff=2.0)
    job_id = finished_job_with_hook(w)
    w.scheduler.pop()
    w.rt.http = FakeHttp(io_loop, [503] * 20)  # type: ignore[assignment]
    attempt = 1
    while True:
        deliver_now(w, job_id, attempt)
        if not w.scheduler.calls:
            break
        assert attempt < 20, "still retried long after the window"
        w.clock.advance(w.scheduler.pop().countdown)
        attempt += 1
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "failed"
    assert job.finished_at is not None
    assert w.clock.now <= job.finished_at + 5.0
    assert len(job.webhook_attempts) == attempt >= 2
    assert run_webhook(w.rt, job_id, attempt + 1) is None


# --- a real receiver on 127.0.0.1 ------------------------------------------------------------


@pytest.fixture
def real_http(io_loop: EventLoop) -> Iterator[Callable[[World], BoundedHttp]]:
    made: list[BoundedHttp] = []

    def attach(w: World) -> BoundedHttp:
        http = webhook_http(w.rt.settings, io_loop)
        w.rt.http = http
        made.append(http)
        return http

    yield attach
    for http in made:
        io_loop.run(http.aclose(), 5)


def received_headers(raw: bytes) -> tuple[dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode().split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def wait_for(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def test_a_delivery_in_progress_holds_the_lease_so_nothing_is_sent_twice(
    world: Callable[..., World],
    raw_server: Callable[[Handler], RawServer],
    real_http: Callable[[World], BoundedHttp],
) -> None:
    release = threading.Event()

    def hold_then_accept(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        release.wait(10)
        server.send(
            conn, b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        conn.close()

    server = raw_server(hold_then_accept)
    w = world(webhook_secret=SECRET, webhook_timeout=5.0)
    job_id = finished_job_with_hook(w, server.url + "hook")
    w.scheduler.pop()
    real_http(w)
    first = run_webhook(w.rt, job_id, 1)
    assert first is not None
    assert wait_for(lambda: len(server.requests) == 1)
    # A duplicate message, the sweeper's resend: neither starts a second delivery.
    assert run_webhook(w.rt, job_id, 1) is None
    w.clock.advance(w.rt.settings.webhook_timeout)
    assert run_webhook(w.rt, job_id, 2) is None
    sweep(w.rt, 0)
    assert w.scheduler.calls == []
    release.set()
    first.result(10)
    assert server.connections == 1 and len(server.requests) == 1
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "delivered"
    assert [a["status"] for a in job.webhook_attempts] == [204]
    headers, body = received_headers(server.requests[0])
    assert verify(SECRET, headers, body, now=w.clock.now)["id"] == job_id


def test_after_a_dead_workers_lease_runs_out_the_sweeper_delivers_again(
    world: Callable[..., World],
    raw_server: Callable[[Handler], RawServer],
    real_http: Callable[[World], BoundedHttp],
) -> None:
    server = raw_server(answer("200 OK", b"ok"))
    w = world(webhook_secret=SECRET, webhook_timeout=3.0)
    job_id = finished_job_with_hook(w, server.url + "hook")
    w.scheduler.pop()
    real_http(w)
    # A worker claimed the delivery and died before recording anything.
    lease_until = w.clock.now + 3.0 + LEASE_MARGIN
    assert w.store.claim_webhook(job_id, w.clock.now, lease_until)
    assert run_webhook(w.rt, job_id, 1) is None
    sweep(w.rt, 0)
    assert w.scheduler.calls == []
    w.clock.now = lease_until + w.rt.settings.stall_timeout + 0.1
    sweep(w.rt, 0)
    resumed = w.scheduler.pop()
    assert (resumed.step, resumed.job_id, resumed.countdown) == ("webhook", job_id, 0)
    deliver_now(w, job_id, resumed.attempt)
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "delivered"
    assert server.connections == 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_private_receiver_is_refused_unless_allowed(
    world: Callable[..., World],
    raw_server: Callable[[Handler], RawServer],
    real_http: Callable[[World], BoundedHttp],
    host: str,
) -> None:
    server = raw_server(answer("204 No Content"))
    w = world(webhook_secret=SECRET, allow_private_urls=False)
    job_id = finished_job_with_hook(w, f"http://{host}:{server.port}/hook")
    w.scheduler.pop()
    assert real_http(w).guard is not None
    deliver_now(w, job_id, 1)
    job = w.store.get(job_id)
    assert job is not None and len(job.webhook_attempts) == 1
    error = job.webhook_attempts[0]["error"]
    assert error.startswith(("refused:", "blocked:")), error
    assert job.webhook_attempts[0]["status"] is None
    time.sleep(0.2)
    assert server.connections == 0


def test_a_redirecting_receiver_is_not_followed(
    world: Callable[..., World],
    raw_server: Callable[[Handler], RawServer],
    real_http: Callable[[World], BoundedHttp],
) -> None:
    target = raw_server(answer("204 No Content"))
    server = raw_server(answer("302 Found", b"", {"Location": target.url + "hook"}))
    w = world(webhook_secret=SECRET, webhook_window=60.0)
    job_id = finished_job_with_hook(w, server.url + "hook")
    w.scheduler.pop()
    real_http(w)
    deliver_now(w, job_id, 1)
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "pending"
    [attempt] = job.webhook_attempts
    assert attempt["status"] == 302
    assert attempt["error"] == "HTTP 302: redirects are not followed"
    assert w.scheduler.pop().attempt == 2  # retried later, at the same URL
    time.sleep(0.2)
    assert target.connections == 0 and server.connections == 1


def test_a_receiver_trickling_past_the_webhook_timeout_is_a_timeout(
    world: Callable[..., World],
    raw_server: Callable[[Handler], RawServer],
    real_http: Callable[[World], BoundedHttp],
) -> None:
    server = raw_server(trickle_body)
    w = world(webhook_secret=SECRET, webhook_timeout=1.0, webhook_window=60.0)
    job_id = finished_job_with_hook(w, server.url + "hook")
    w.scheduler.pop()
    real_http(w)
    start = time.monotonic()
    deliver_now(w, job_id, 1)
    assert time.monotonic() - start < 1.0 + 1.0
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "pending"
    [attempt] = job.webhook_attempts
    assert attempt["status"] is None
    assert attempt["error"].startswith("timeout"), attempt
    assert w.scheduler.pop().attempt == 2


def test_a_busy_process_defers_a_delivery_without_taking_its_lease(
    world: Callable[..., World],
    io_loop: EventLoop,
) -> None:
    w = world(webhook_secret=SECRET)
    job_id = finished_job_with_hook(w)
    w.scheduler.pop()
    http = FakeHttp(io_loop, [204])
    http.in_flight = 100  # as many deliveries under way as the process allows
    w.rt.http = http  # type: ignore[assignment]
    assert run_webhook(w.rt, job_id, 1) is None
    again = w.scheduler.pop()
    assert (again.step, again.attempt, again.countdown) == ("webhook", 1, 1.0)
    assert http.sent == []
    assert w.store.claim_webhook(job_id, w.clock.now, w.clock.now + 5), "lease still free"


def test_an_attempt_whose_lease_ran_out_records_nothing_and_schedules_nothing(
    world: Callable[..., World],
    io_loop: EventLoop,
) -> None:
    """A late attempt (its lease ran out, another delivery took the webhook) must not
    end the newer delivery's lease, nor start a third one."""
    w = world(webhook_secret=SECRET, webhook_window=60.0)
    job_id = finished_job_with_hook(w)
    w.scheduler.pop()
    http = FakeHttp(io_loop, [500])
    w.rt.http = http  # type: ignore[assignment]
    first = w.store.claim_webhook(job_id, w.clock.now, w.clock.now + 15)
    assert first is not None
    w.clock.advance(20)  # the first lease runs out; another delivery takes the webhook
    second = w.store.claim_webhook(job_id, w.clock.now, w.clock.now + 15)
    assert second is not None and second != first
    webhooks._record(
        w.rt, job_id, 1, w.clock.now - 30, w.clock.now - 20, 500, "HTTP 500", True, first
    )
    job = w.store.get(job_id)
    assert job is not None and job.webhook_attempts == [] and job.webhook_state == "pending"
    assert w.store.redis.hget(w.store.keys.job(job_id), "webhook_lease") == second
    assert w.scheduler.calls == []


@pytest.mark.parametrize("allow_private", [False, True])
def test_the_connection_guard_refuses_the_metadata_service_in_any_mode(
    allow_private: bool,
) -> None:
    guard = address_guard(allow_private)
    for host in ("169.254.169.254", "64:ff9b::a9fe:a9fe", "::ffff:169.254.169.254", "0.0.0.0"):
        assert guard(host), host
    assert (guard("127.0.0.1") is None) is allow_private
    assert (guard("10.1.2.3") is None) is allow_private
    assert guard("93.184.216.34") is None
    assert guard("cdn.example.com") is None  # names are judged by what they resolve to


def test_a_guarded_client_never_goes_through_a_proxy(
    monkeypatch: pytest.MonkeyPatch,
    io_loop: EventLoop,
) -> None:
    """Through a proxy only the proxy's address would be checked."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    guarded = BoundedHttp(
        io_loop,
        connect_timeout=1,
        read_timeout=1,
        total_timeout=1,
        max_bytes=10,
        guard=address_guard(False),
    )
    plain = BoundedHttp(io_loop, connect_timeout=1, read_timeout=1, total_timeout=1, max_bytes=10)
    assert guarded._proxy("http://hooks.example.com/h") is None
    assert plain._proxy("http://hooks.example.com/h") == "http://proxy.example:3128"
