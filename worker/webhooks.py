"""Signed webhooks: on each terminal state, POST the job record to the job's ``webhook_url``.

Signatures follow Standard Webhooks (https://www.standardwebhooks.com): headers
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256
of "<id>.<timestamp>.<body>">``, keyed with the decoded ``whsec_...`` secret
(``VIDEOQ_WEBHOOK_SECRET``). The id is the same for every retry of one message, so a
receiver can drop repeats. A failed delivery is retried with backoff by rescheduling
(never sleeping) until ``VIDEOQ_WEBHOOK_WINDOW`` seconds after the job ended; every
attempt is recorded on the job (``webhook_attempts``).

Receivers verify with :func:`verify` (also exported as ``producers.verify_webhook``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import requests

from . import logs

if TYPE_CHECKING:
    from .chain import Runtime

PREFIX = "whsec_"
TOLERANCE = 300  # seconds a timestamp may differ from the receiver's clock


class WebhookVerificationError(ValueError):
    """The webhook's signature, timestamp or headers do not check out."""


def _key(secret: str) -> bytes:
    raw = secret.removeprefix(PREFIX)
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not whsec_ + base64") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers_for(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a received webhook and return the job record it carries.

    Raises :class:`WebhookVerificationError` on a missing header, a timestamp outside
    ``tolerance`` seconds, or no matching signature.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        signatures = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        raise WebhookVerificationError("missing or malformed webhook headers") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("the timestamp is too old or too new")
    expected = sign(secret, msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures):
        raise WebhookVerificationError("no signature matches")
    record: dict[str, Any] = json.loads(body)
    return record


def deliver(
    http: requests.Session, url: str, secret: str, msg_id: str, body: bytes, now: float
) -> tuple[int | None, str | None]:
    """POST once. Returns (HTTP status or None, error text or None)."""
    try:
        answer = http.post(
            url, data=body, headers=headers_for(secret, msg_id, int(now), body),
            timeout=(5, 10), allow_redirects=False,
        )
        answer.close()
    except requests.RequestException as exc:
        return None, type(exc).__name__
    if 200 <= answer.status_code < 300:
        return answer.status_code, None
    return answer.status_code, f"HTTP {answer.status_code}"


def run_webhook(rt: Runtime, job_id: str, attempt: int) -> None:
    """One delivery attempt of a finished job's webhook; reschedules itself on failure."""
    job = rt.store.get(job_id)
    if job is None or not job.webhook_url or job.webhook_state != "pending":
        return
    now = rt.clock()
    secret = rt.settings.webhook_secret.get_secret_value()
    record = job.to_dict()
    for name in ("webhook_attempts", "webhook_state"):
        record.pop(name, None)
    body = json.dumps(record, sort_keys=True).encode()
    if secret:
        status, error = deliver(rt.http, job.webhook_url, secret, f"{job_id}.{job.state.value}",
                                body, now)
    else:
        status, error = None, "VIDEOQ_WEBHOOK_SECRET is not set on the worker"
    info: dict[str, object] = {"attempt": attempt, "at": round(now, 3), "status": status}
    if error:
        info["error"] = error
    if error is None:
        rt.store.webhook_attempt(job_id, info, "delivered", None)
        return _log(job_id, attempt, "delivered", status, None)
    delay = rt.backoff(attempt - 1, None, floor=1.0)
    window_end = (job.finished_at or now) + rt.settings.webhook_window
    if not secret or now + delay > window_end:
        rt.store.webhook_attempt(job_id, info, "failed", None)
        return _log(job_id, attempt, "failed", status, error)
    rt.store.webhook_attempt(job_id, info, "pending", now + delay + rt.settings.stall_timeout)
    _log(job_id, attempt, "pending", status, error)
    rt.scheduler.webhook(job_id, attempt + 1, countdown=delay)
    return None


def _log(job_id: str, attempt: int, state: str, status: int | None, error: str | None) -> None:
    logs.event(
        "webhook.attempt", level=logging.INFO if error is None else logging.WARNING,
        job_id=job_id, attempt=attempt, webhook_state=state, status=status, error=error,
    )
