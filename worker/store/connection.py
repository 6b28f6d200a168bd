"""The connection to Redis, and what its errors mean for videoq."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from ..settings import Settings

# Redis cannot serve a command now, though nothing is wrong with the command: it is
# unreachable or too slow, or it refuses writes (out of memory at maxmemory, a
# read-only replica, a failed RDB/AOF save).
REDIS_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


def write_refusal(exc: BaseException) -> str | None:
    """Why Redis refused a write that it will take again once it has memory, is a
    primary again, or can persist again (OOM, READONLY, MISCONF); None for any other
    error."""
    if not isinstance(exc, redis.exceptions.ResponseError):
        return None
    text = str(exc)
    if (
        isinstance(exc, redis.exceptions.OutOfMemoryError)
        or text.startswith("OOM")
        or ("OOM command not allowed" in text)
    ):
        return "out of memory (maxmemory reached)"
    if isinstance(exc, redis.exceptions.ReadOnlyError) or text.startswith("READONLY"):
        return "it is a read-only replica"
    if "MISCONF" in text[:200]:
        return "it cannot persist to disk (MISCONF)"
    return None


def refuses_writes(exc: BaseException) -> bool:
    """True when Redis refused a write it will take again later (:func:`write_refusal`)."""
    return write_refusal(exc) is not None


def redis_unavailable(exc: BaseException) -> bool:
    """Redis cannot serve videoq now (unreachable, or refusing writes): retry later."""
    return isinstance(exc, REDIS_UNREACHABLE) or refuses_writes(exc)


def client_options(settings: Settings, retry_class: type[Any] = Retry) -> dict[str, Any]:
    """The options of every videoq Redis client: bounded socket waits, and commands
    retried through short connection blips (``VIDEOQ_REDIS_RETRIES``). ``retry_class``:
    redis-py's ``Retry``, or its asyncio twin for an asyncio client."""
    return {
        "decode_responses": True,
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 30,
        "retry": retry_class(ExponentialBackoff(cap=2.0, base=0.05), settings.redis_retries),
        "retry_on_error": list(REDIS_UNREACHABLE),
    }


def connect(settings: Settings) -> redis.Redis:
    """A Redis client that retries commands through short connection blips."""
    return redis.Redis.from_url(settings.redis_url, **client_options(settings))
