"""The checks both clients make before a job is stored (its size, its webhook URL, its
idempotency key), and the pause between a submit's tries."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.errors import RequestError, RequestTooLarge, UrlRefused
from worker.request import MAX_URL_LENGTH, GenerationRequest
from worker.settings import Settings
from worker.store import write_refusal
from worker.urls import Resolver, check_url, resolve_host

from . import failures

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


def check_submission(
    settings: Settings,
    request: GenerationRequest,
    idempotency_key: str | None,
    webhook_url: str | None,
    *,
    resolve: Resolver | None = resolve_host,
) -> None:
    """Raise :class:`RequestError` (``field`` set) for a request this job store must
    refuse: too large, a webhook URL not allowed, a malformed idempotency key. The
    webhook's host is resolved with ``resolve`` (``None``: not resolved, see
    :func:`check_webhook_url`)."""
    size = len(json.dumps(request.stored(), sort_keys=True).encode())
    if size > settings.max_request_bytes:
        raise RequestTooLarge(
            "request",
            f"is {size} bytes, more than the {settings.max_request_bytes} bytes "
            "VIDEOQ_MAX_REQUEST_BYTES allows (send large images by URL)",
        )
    if webhook_url is not None:
        check_webhook_url(settings, webhook_url, resolve)
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not _IDEMPOTENCY_KEY.match(idempotency_key)
    ):
        raise RequestError(
            "idempotency_key", "must be 1-200 printable ASCII characters without spaces"
        )


def check_webhook_url(settings: Settings, url: object, resolve: Resolver | None) -> None:
    """Refuse (:class:`RequestError`) a webhook URL the URL policy refuses, its host
    resolved with ``resolve``, or any webhook URL while webhooks are off."""
    try:
        check_url(
            url,
            allow_private=settings.allow_private_urls,
            resolve=resolve,
            max_length=MAX_URL_LENGTH,
        )
    except UrlRefused as exc:
        raise RequestError("webhook_url", str(exc)) from None
    if not settings.webhook_secret.get_secret_value():
        raise RequestError("webhook_url", "webhooks are off: VIDEOQ_WEBHOOK_SECRET is not set")


def retry_pause(attempt: int) -> float:
    """Seconds before a submit's next try after try ``attempt`` (0-based) failed."""
    return min(2.0, 0.05 * 2.0**attempt)


# What a try at storing a new job may raise and :meth:`CreateTries.failed` judges.
CREATE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, RedisResponseError)


class CreateTries:
    """The tries at storing one new job (``VIDEOQ_REDIS_RETRIES`` + 1), shared by both
    clients: iterate for the try numbers; after a failed try, :meth:`failed` gives the
    pause before the next, or raises what the caller is told (whether the job may have
    been stored). ``maybe_written``: an earlier try may have reached Redis."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self.settings = settings
        self.job_id = job_id
        self.maybe_written = False

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.settings.redis_retries + 1))

    def failed(self, exc: Exception, attempt: int) -> float:
        url = self.settings.redis_url
        if isinstance(exc, RedisResponseError):
            if write_refusal(exc) is None:
                raise exc
            raise failures.not_accepted(url, self.job_id, exc, self.maybe_written) from None
        self.maybe_written = self.maybe_written or not failures.never_sent(exc)
        if attempt == self.settings.redis_retries:
            raise failures.not_accepted(url, self.job_id, exc, self.maybe_written) from None
        return retry_pause(attempt)
