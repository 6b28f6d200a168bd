"""The producers' test helpers: a client on the test Redis, and what it wrote there."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from producers import Client, Update
from worker.settings import Settings
from worker.states import ACTIVE_STATES, JobState
from worker.store import JobStore

IMG = "https://example.com/a.png"


@pytest.fixture
def client(make_settings: Callable[..., Settings]) -> Client:
    return Client(settings=make_settings())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]) -> Settings:
    """Settings on the test Redis, and the CLI's environment pointing at the same Redis,
    queue and key prefix."""
    s = make_settings()
    monkeypatch.setenv("VIDEOQ_REDIS_URL", s.redis_url)
    monkeypatch.setenv("VIDEOQ_QUEUE", s.queue)
    monkeypatch.setenv("VIDEOQ_KEY_PREFIX", s.key_prefix)
    return s


def queued_messages(client: Client) -> list[dict[str, object]]:
    raw = client.store.redis.lrange(client.settings.queue, 0, -1)
    return [json.loads(m) for m in raw]


def job_keys(client: Client) -> list[str]:
    return list(client.store.redis.scan_iter(match=client.store.keys.job_pattern()))


def booked_creates(client: Client) -> list[str]:
    return [str(i) for i in client.store.redis.zrange(client.store.keys.creates(), 0, -1)]


def only_job(client: Client) -> str:
    """The id of the one job stored."""
    [key] = job_keys(client)
    return key.rpartition(":")[2]


def end(store: JobStore, job_id: str, state: JobState, **fields: object) -> None:
    """What a worker's last step does to a record (from any state it may be in)."""
    store.transition(job_id, ACTIVE_STATES, state, fields)


class Steps:
    """An ``on_update`` that keeps each update and runs the next action after it: the
    test moves the record between the waiting caller's reads."""

    def __init__(self, *actions: Callable[[], object]) -> None:
        self._todo: Iterator[Callable[[], object]] = iter(actions)
        self.seen: list[Update] = []

    def __call__(self, update: Update) -> None:
        self.seen.append(update)
        next(self._todo, lambda: None)()
