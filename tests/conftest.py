"""Shared fixtures: a real Redis for every test, isolated by key prefix and queue name.

Redis: a private ``redis-server`` on a free port when the binary is on PATH; else
``VIDEOQ_TEST_REDIS_URL``, else 127.0.0.1:6379. No Redis at all is a test *failure*
(never a skip): the suite is meaningless without it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
import redis

from producers.local import RedisServer
from worker.settings import Settings, load_settings

TEST_KEY = "sk-test-TOPSECRET-0123456789abcdef"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    explicit = os.environ.get("VIDEOQ_TEST_REDIS_URL")
    if explicit:
        yield explicit
        return
    if shutil.which("redis-server"):
        server = RedisServer().start()
        try:
            yield server.url
        finally:
            server.cleanup()
        return
    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.fail(
            "no Redis: install redis-server, or run one at 127.0.0.1:6379, "
            "or set VIDEOQ_TEST_REDIS_URL",
            pytrace=False,
        )
    yield url


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def settings_for(redis_url: str, name: str, /, **overrides: object) -> Settings:
    """Test settings: their own key prefix and queue (``name``), short timings."""
    base: dict[str, object] = {
        "redis_url": redis_url,
        "key_prefix": name,
        "queue": name,
        "aimlapi_key": TEST_KEY,
        "aimlapi_base_url": "http://127.0.0.1:9/v2",
        "poll_interval": 1.0,
        "deadline": 30.0,
        "retry_backoff": 0.5,
        "retry_backoff_max": 4.0,
        "http_read_timeout": 5.0,
        "visibility_timeout": 60,
        "allow_private_urls": True,
    }
    base.update(overrides)
    return load_settings(**base)


@pytest.fixture
def make_settings(redis_url: str, unique: str) -> object:
    def make(**overrides: object) -> Settings:
        return settings_for(redis_url, f"t{unique}", **overrides)

    return make


@pytest.fixture
def settings(make_settings: object) -> Settings:
    return make_settings()  # type: ignore[operator,no-any-return]


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def fill_until_refused(client: redis.Redis, prefix: str = "filler:") -> int:
    """Write 16 KB values until Redis refuses writes (its maxmemory); returns how many."""
    chunk = "x" * 16384
    for n in range(100_000):
        try:
            client.set(f"{prefix}{n}", chunk)
        except redis.exceptions.OutOfMemoryError:
            return n
    raise AssertionError("Redis never refused a write: is --maxmemory set?")


@pytest.fixture
def full_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A private redis-server with 2 MB of memory and no eviction, filled until it
    refuses writes. A server that cannot start fails the test (never a skip)."""
    server = RedisServer(
        extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]
    ).start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        fill_until_refused(client)
        yield server.url, client
    finally:
        client.close()
        server.cleanup()
