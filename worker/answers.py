"""The upstream's answers: how each one is classified, and what videoq reads from it.

- :class:`~worker.errors.Transient` (429, 5xx, network, timeout): retry later;
  ``retry_after`` honours the upstream's ``Retry-After``. ``outcome_unknown`` is set
  when the request may have been received and acted on but no answer came back (a
  timeout or a connection dropped after sending): a create in that state must not be
  repeated.
- :class:`~worker.errors.Rejected` (other 4xx): the upstream refused the request;
  never retried.
- :class:`~worker.errors.ProtocolError`: an answer the code cannot use (a redirect,
  too large, not JSON, missing fields).
- Otherwise a :class:`Status`: the generation's id and status, its video, its error,
  the credits it used.

Upstream text is data, not trusted: error messages and ids are length-capped, their
control characters escaped, and the API key masked before they are stored or logged.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from .errors import HttpFailure, ProtocolError, Rejected, TooLarge, Transient, UpstreamError
from .logs import clean, mask

MAX_BODY_BYTES = 1024 * 1024
IN_PROGRESS = frozenset({"queued", "generating", "waiting", "active"})
PATHS = {
    "legacy": "/generate/video/kling/generation",
    "universal": "/video/generations",
}
MAX_ID_LENGTH = 128  # a generation id longer than this is cut (and then unusable)
MAX_TEXT_LENGTH = 500  # upstream error names and messages are cut to this


@dataclass(frozen=True)
class Status:
    generation_id: str
    status: str
    video_url: str | None = None
    error_name: str | None = None
    error_message: str | None = None
    credits_used: float | None = None
    note: str | None = None  # something the answer had that was ignored, and why


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def decode(
    code: int, reason: str | None, retry_after: str | None, body: bytes, *, secret: str
) -> dict[str, Any]:
    """Classify one answer (status, reason, ``Retry-After``, body): the JSON object,
    or :class:`Transient`, :class:`Rejected`, :class:`ProtocolError`. ``secret``: the
    API key, masked in any upstream text kept."""
    if len(body) > MAX_BODY_BYTES:
        raise ProtocolError(f"answer over {MAX_BODY_BYTES} bytes (HTTP {code})")
    if code == 429 or code >= 500:
        raise Transient(
            f"HTTP {code}: {scrub(_error_text(reason, body), secret)}",
            retry_after=parse_retry_after(retry_after),
            kind="rate_limited" if code == 429 else "server_error",
        )
    if code >= 400:
        raise Rejected(code, scrub(_error_text(reason, body), secret))
    if code >= 300 or code < 200:
        raise ProtocolError(f"HTTP {code} answer (redirects are not followed)")
    try:
        data = _loads(body)
    except ValueError:
        raise ProtocolError(f"answer is not JSON (HTTP {code})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"answer is not a JSON object (HTTP {code})")
    return data


def status_from(data: dict[str, Any], *, what: str, secret: str) -> Status:
    """The :class:`Status` a ``what`` (create, status) answer's JSON object gives, or
    :class:`ProtocolError` when it has no generation id or no status."""
    gen_id = data.get("id") or data.get("generation_id")
    if not isinstance(gen_id, str | int) or isinstance(gen_id, bool) or gen_id == "":
        raise ProtocolError(f"{what} answer has no generation id")
    status = data.get("status")
    if not isinstance(status, str):
        raise ProtocolError(f"{what} answer has no status")
    video = data.get("video")
    url = video.get("url") if isinstance(video, dict) else None
    err = data.get("error")
    err_name = err_msg = None
    if isinstance(err, dict):
        err_name = str(err.get("name") or "") or None
        err_msg = str(err.get("message") or "") or None
    elif isinstance(err, str):
        err_msg = err
    credits, note = _credits(data)
    return Status(
        generation_id=clean(str(gen_id), MAX_ID_LENGTH),
        status=scrub(status, secret),
        video_url=url if isinstance(url, str) and url else None,
        error_name=scrub(err_name, secret) if err_name else None,
        error_message=scrub(err_msg, secret) if err_msg else None,
        credits_used=credits,
        note=note,
    )


def failed_call(exc: HttpFailure) -> UpstreamError:
    """A failed call in the upstream's terms. A too-large answer is a protocol error;
    the rest are transient, with ``outcome_unknown`` when the request went out."""
    if isinstance(exc, TooLarge):
        return ProtocolError(str(exc))
    kind = "timeout" if exc.kind == "timeout" else "connection"
    return Transient(str(exc), outcome_unknown=exc.sent, kind=kind)


def scrub(text: str, secret: str) -> str:
    """Upstream text made safe: the API key masked (some APIs echo a bad key back),
    control characters escaped, the length capped."""
    return clean(mask(text, [secret]), MAX_TEXT_LENGTH)


def _error_text(reason: str | None, body: bytes) -> str:
    try:
        data = _loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[: MAX_TEXT_LENGTH * 2]
        for key in ("message", "detail", "error"):
            if data.get(key):
                return str(data[key])[: MAX_TEXT_LENGTH * 2]
    text = body[: MAX_TEXT_LENGTH * 8].decode("utf-8", "replace").strip()
    if text.lstrip().startswith("<"):
        return f"{(reason or 'error')[:100]} (HTML error page)"
    return text[: MAX_TEXT_LENGTH * 2] or (reason or "no message")[:100]


def _credits(data: dict[str, Any]) -> tuple[float | None, str | None]:
    """``meta.usage.credits_used`` when it is a finite, non-negative number; else None,
    and a note saying what was ignored."""
    meta = data.get("meta")
    usage = meta.get("usage") if isinstance(meta, dict) else None
    value = usage.get("credits_used") if isinstance(usage, dict) else None
    if value is None:
        return None, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            number = math.inf
        if math.isfinite(number) and number >= 0:
            return number, None
    shown = clean(repr(value), 40)
    return None, f"ignored credits_used={shown} from the upstream: not a finite number >= 0"


def _loads(body: bytes) -> Any:
    """JSON from the upstream; ValueError for anything unreadable (a nesting deep
    enough to exhaust the parser's recursion included)."""
    try:
        return json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
