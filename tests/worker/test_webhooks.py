"""Webhook signing and verification (Standard Webhooks), and the delivery step on a fake
clock with a fake HTTP session."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.worker.conftest import World
from worker.request import parse_request
from worker.upstream import Status
from worker.webhooks import WebhookVerificationError, headers_for, run_webhook, sign, verify

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signature_matches_the_standard_webhooks_recipe() -> None:
    body = b'{"id": "j1"}'
    expected = base64.b64encode(
        hmac.new(b"0123456789abcdef0123456789abcdef", b"msg_1.1700000000." + body,
                 hashlib.sha256).digest()
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


class FakeHTTP:
    """A requests.Session stand-in that answers with scripted statuses."""

    def __init__(self, statuses: list[int | Exception]) -> None:
        self.statuses = statuses
        self.sent: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        self.sent.append({"url": url, **kwargs})
        answer = self.statuses.pop(0)
        if isinstance(answer, Exception):
            raise answer
        response = requests.Response()
        response.status_code = answer
        response._content = b""
        response._content_consumed = True  # close() has nothing to release
        return response


def finished_job_with_hook(w: World) -> str:
    w.store.create("job-1", parse_request({"image_url": "https://example.com/a.png"}),
                   accepted_at=w.clock.now, deadline_at=w.deadline_at,
                   webhook_url="https://hooks.example.com/videoq")
    w.generate()
    w.scheduler.pop()
    w.upstream.status_answers.append(Status("gen-1", "completed", video_url="https://v/1.mp4"))
    w.poll(1)
    return "job-1"


def test_a_finished_job_schedules_its_webhook_which_retries_then_delivers(
    world: Callable[..., World],
) -> None:
    w = world(webhook_secret=SECRET, webhook_window=60.0)
    job_id = finished_job_with_hook(w)
    call = w.scheduler.pop()
    assert (call.step, call.attempt, call.countdown) == ("webhook", 1, 0)
    w.rt.http = FakeHTTP([500, requests.ConnectionError("refused"), 204])  # type: ignore[assignment]
    run_webhook(w.rt, job_id, 1)
    retry = w.scheduler.pop()
    assert retry.step == "webhook" and retry.attempt == 2 and retry.countdown >= 1.0
    w.clock.advance(retry.countdown)
    run_webhook(w.rt, job_id, 2)
    w.clock.advance(w.scheduler.pop().countdown)
    run_webhook(w.rt, job_id, 3)
    assert w.scheduler.calls == []
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "delivered"
    assert [a.get("status") for a in job.webhook_attempts] == [500, None, 204]
    assert job.webhook_attempts[1]["error"] == "ConnectionError"
    sent = w.rt.http.sent  # type: ignore[attr-defined]
    assert {s["headers"]["webhook-id"] for s in sent} == {"job-1.completed"}
    verify(SECRET, sent[-1]["headers"], sent[-1]["data"], now=w.clock.now)
    run_webhook(w.rt, job_id, 4)  # a duplicate message after delivery sends nothing
    assert len(sent) == 3


def test_webhook_gives_up_at_the_end_of_the_window(world: Callable[..., World]) -> None:
    w = world(webhook_secret=SECRET, webhook_window=5.0, retry_backoff=2.0)
    job_id = finished_job_with_hook(w)
    w.scheduler.pop()
    w.rt.http = FakeHTTP([503] * 20)  # type: ignore[assignment]
    attempt = 1
    while True:
        run_webhook(w.rt, job_id, attempt)
        if not w.scheduler.calls:
            break
        w.clock.advance(w.scheduler.pop().countdown)
        attempt += 1
    job = w.store.get(job_id)
    assert job is not None and job.webhook_state == "failed"
    assert job.finished_at is not None
    assert w.clock.now <= job.finished_at + 5.0
    assert len(job.webhook_attempts) == attempt >= 2
