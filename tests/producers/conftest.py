"""The producers' test helpers: a client on the test Redis, and what it wrote there."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from producers import Client
from worker.settings import Settings

IMG = "https://example.com/a.png"


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Client:
    return Client(settings=make_settings())


def queued_messages(client: Client) -> list[dict[str, object]]:
    raw = client.store.redis.lrange(client.settings.queue, 0, -1)
    return [json.loads(m) for m in raw]


def job_keys(client: Client) -> list[str]:
    return list(client.store.redis.scan_iter(match=client.store.keys.job_pattern()))


def booked_creates(client: Client) -> list[str]:
    return [str(i) for i in client.store.redis.zrange(client.store.keys.creates(), 0, -1)]
