"""Signed webhooks: on each terminal state, POST the job record to the job's ``webhook_url``.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<body>">``, keyed with the decoded ``whsec_...`` secret
(``VIDEOQ_WEBHOOK_SECRET``). The id is the same for every retry of one message, so a
receiver can drop repeats. A failed delivery is retried with backoff by rescheduling
(never sleeping) until ``VIDEOQ_WEBHOOK_WINDOW`` seconds after the job ended; every
attempt is recorded on the job (``webhook_attempts``).

A slow receiver cannot starve the pipeline. The delivery task only claims the
delivery and hands it to the process's event loop, then returns: the worker slot is
free for creates and polls at once. Each attempt is one bounded call
(``VIDEOQ_WEBHOOK_TIMEOUT`` in all, an answer of at most :data:`MAX_ANSWER_BYTES`, no
redirects, no internal addresses unless ``VIDEOQ_ALLOW_PRIVATE_URLS``). The claim is a
lease on the record that outlasts the attempt, so no second delivery of the same
webhook starts while one is in progress, whoever asks (a duplicate message, the
sweeper); a worker that dies mid-attempt leaves the lease to run out, and the sweeper
then tries again.

Signing and verifying live in ``worker.signatures`` (receivers use
``producers.verify_webhook``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from typing import TYPE_CHECKING

from . import logs
from .errors import HttpFailure, UrlRefused
from .http import BoundedHttp, EventLoop
from .settings import Settings
from .signatures import headers_for
from .urls import address_guard, check_url

if TYPE_CHECKING:
    from .runtime import Runtime

MAX_ANSWER_BYTES = 64 * 1024  # a receiver's answer is read up to this, then cut off
CONCURRENCY = 100  # deliveries one worker process makes at once
PER_HOST = 10  # ... and to one receiver host, so one slow receiver cannot take them all
LEASE_MARGIN = 5.0  # seconds a delivery's lease outlasts its longest attempt


def webhook_http(settings: Settings, loop: EventLoop) -> BoundedHttp:
    """The bounded HTTP client webhook deliveries use, on the process's event loop."""
    return BoundedHttp(
        loop,
        connect_timeout=min(5.0, settings.webhook_timeout),
        read_timeout=settings.webhook_timeout,
        total_timeout=settings.webhook_timeout,
        max_bytes=MAX_ANSWER_BYTES,
        concurrency=CONCURRENCY,
        per_host=PER_HOST,
        guard=address_guard(settings.allow_private_urls),
    )


async def deliver(
    http: BoundedHttp,
    url: str,
    secret: str,
    msg_id: str,
    body: bytes,
    now: float,
    *,
    allow_private: bool,
) -> tuple[int | None, str | None]:
    """POST once, bounded. Returns (HTTP status or None, error text or None); never
    raises, so that no failure goes unrecorded."""
    try:
        check_url(url, allow_private=allow_private, resolve=None)
        answer = await http.request(
            "POST", url, data=body, headers=headers_for(secret, msg_id, int(now), body)
        )
    except UrlRefused as exc:
        return None, f"refused: {exc}"
    except HttpFailure as exc:
        return None, f"{exc.kind}: {exc}"
    except Exception as exc:  # a bad secret, say: an attempt that failed, with the reason
        return None, f"error: {type(exc).__name__}: {str(exc)[:200]}"
    if 200 <= answer.status < 300:
        return answer.status, None
    if 300 <= answer.status < 400:
        return answer.status, f"HTTP {answer.status}: redirects are not followed"
    return answer.status, f"HTTP {answer.status}"


def run_webhook(rt: Runtime, job_id: str, attempt: int) -> concurrent.futures.Future[None] | None:
    """Start one delivery attempt of a finished job's webhook on the event loop, and
    return at once (the future is for tests). Nothing starts unless this call takes
    the delivery's lease."""
    job = rt.store.get(job_id)
    if job is None or not job.webhook_url or job.webhook_state != "pending":
        return None
    now = rt.clock()
    lease_until = now + rt.settings.webhook_timeout + LEASE_MARGIN
    if rt.http is None:
        raise RuntimeError("this runtime has no HTTP client for webhooks")
    if rt.http.in_flight >= CONCURRENCY:  # this process is busy: try again shortly
        logs.event(
            "webhook.deferred",
            job_id=job_id,
            state=job.state.value,
            attempt=attempt,
            in_flight=rt.http.in_flight,
        )
        rt.scheduler.webhook(job_id, attempt, countdown=1.0)
        return None
    lease = rt.store.claim_webhook(job_id, now, lease_until)
    if lease is None:
        logs.event(
            "webhook.skipped",
            job_id=job_id,
            state=job.state.value,
            attempt=attempt,
            reason="another delivery of this webhook is in progress",
        )
        return None
    record = job.to_dict()
    for name in ("webhook_attempts", "webhook_state"):
        record.pop(name, None)
    body = json.dumps(record, sort_keys=True).encode()
    msg_id = f"{job_id}.{job.state.value}"
    finished_at = job.finished_at or now
    future = rt.http.loop.submit(
        _attempt(rt, rt.http, job_id, job.webhook_url, msg_id, body, attempt, finished_at, lease)
    )
    future.add_done_callback(lambda done: _report_crash(job_id, attempt, done))
    return future


def _report_crash(job_id: str, attempt: int, done: concurrent.futures.Future[None]) -> None:
    """An attempt that failed outside the delivery itself (Redis refusing the record,
    say) is logged; its lease runs out and the sweeper tries again."""
    exc = None if done.cancelled() else done.exception()
    if exc is not None:
        logs.event(
            "webhook.crashed",
            level=logging.ERROR,
            job_id=job_id,
            attempt=attempt,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )


async def _attempt(
    rt: Runtime,
    http: BoundedHttp,
    job_id: str,
    url: str,
    msg_id: str,
    body: bytes,
    attempt: int,
    finished_at: float,
    lease: str,
) -> None:
    secret = rt.settings.webhook_secret.get_secret_value()
    now = rt.clock()
    if secret:
        status, error = await deliver(
            http, url, secret, msg_id, body, now, allow_private=rt.settings.allow_private_urls
        )
    else:
        status, error = None, "VIDEOQ_WEBHOOK_SECRET is not set on the worker"
    # Recording the outcome and scheduling a retry are blocking calls: off the loop.
    await asyncio.to_thread(
        _record, rt, job_id, attempt, finished_at, now, status, error, bool(secret), lease
    )


def _record(
    rt: Runtime,
    job_id: str,
    attempt: int,
    finished_at: float,
    now: float,
    status: int | None,
    error: str | None,
    secret: bool,
    lease: str,
) -> None:
    """Record the attempt under its lease, and schedule the next one if it failed. A
    lease that ran out (another delivery holds the webhook now) records nothing."""
    info: dict[str, object] = {"attempt": attempt, "at": round(now, 3), "status": status}
    if error:
        info["error"] = error
    delay = rt.backoff(attempt - 1, None, floor=1.0)
    if error is None:
        state, next_at = "delivered", None
    elif not secret or now + delay > finished_at + rt.settings.webhook_window:
        state, next_at = "failed", None
    else:
        state, next_at = "pending", now + delay + rt.settings.stall_timeout
    if rt.store.webhook_attempt(job_id, info, state, next_at, lease=lease) < 0:
        logs.event(
            "webhook.stale",
            level=logging.WARNING,
            job_id=job_id,
            attempt=attempt,
            status=status,
            error=error,
            reason="the lease ran out during the attempt",
        )
        return
    _log(job_id, attempt, state, status, error)
    if state == "pending":
        rt.scheduler.webhook(job_id, attempt + 1, countdown=delay)


def _log(job_id: str, attempt: int, state: str, status: int | None, error: str | None) -> None:
    logs.event(
        "webhook.attempt",
        level=logging.INFO if error is None else logging.WARNING,
        job_id=job_id,
        attempt=attempt,
        webhook_state=state,
        status=status,
        error=error,
    )
