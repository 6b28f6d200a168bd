"""The Python producer API on real Redis (no worker needed: we inspect the queue)."""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers import Client, JobNotFound, JobState, RequestError, Unavailable
from producers.local import free_port
from tests.producers.conftest import IMG, booked_creates, job_keys, queued_messages
from worker.keys import GENERATE_TASK
from worker.settings import Settings


def test_submit_stores_the_job_and_books_its_create_in_the_same_script(client: Client) -> None:
    """Batch mode (the default): no message; the workers' pumps find the create."""
    assert client.settings.poll_mode == "batch"
    job_id = client.submit(IMG, prompt="hi", duration="10", cfg_scale=0.3)
    job = client.get(job_id)
    assert job.state is JobState.QUEUED
    assert job.request == {"image_url": IMG, "prompt": "hi", "duration": 10, "cfg_scale": 0.3}
    assert booked_creates(client) == [job_id]
    assert queued_messages(client) == []


def test_in_chain_mode_submit_enqueues_the_task_by_name(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(poll_mode="chain"))
    job_id = client.submit(IMG, prompt="hi")
    assert booked_creates(client) == []
    [message] = queued_messages(client)
    assert message["headers"]["task"] == GENERATE_TASK  # type: ignore[index]
    assert message["headers"]["kwargsrepr"] == f"job {job_id}, create 1"  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_url": "nope"}, "image_url"),
        ({"image_url": IMG, "duration": 6}, "duration"),
        ({"image_url": IMG, "cfg_scale": 2}, "cfg_scale"),
        ({"image_url": IMG, "negative_prompt": 5}, "negative_prompt"),
        (
            {"image_url": IMG, "camera_control": {"type": "simple", "config": {"roll": 99}}},
            "camera_control.config.roll",
        ),
        (
            {"image_url": IMG, "dynamic_masks": [{"mask": IMG, "trajectories": []}]},
            "dynamic_masks.0.trajectories",
        ),
        ({"image_url": IMG, "static_mask": "x"}, "static_mask"),
        ({"image_url": IMG, "seed": 3}, "seed"),
        ({"image_url": IMG, "idempotency_key": "has space"}, "idempotency_key"),
    ],
)
def test_bad_input_names_the_field_and_enqueues_nothing(
    client: Client, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(RequestError) as info:
        client.submit(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert queued_messages(client) == []
    assert job_keys(client) == []


@pytest.mark.parametrize("mode", ["batch", "chain"])
def test_idempotency_key_gives_one_job_and_one_create(
    make_settings: Callable[..., Settings], mode: str
) -> None:
    client = Client(settings=make_settings(poll_mode=mode))
    first = client.submit(IMG, prompt="p", idempotency_key="order-1")
    again = client.submit(IMG, prompt="p", idempotency_key="order-1")
    assert first == again
    assert len(queued_messages(client)) + len(booked_creates(client)) == 1
    with pytest.raises(RequestError, match="idempotency_key"):
        client.submit(IMG, prompt="other", idempotency_key="order-1")


def test_unknown_job(client: Client) -> None:
    with pytest.raises(JobNotFound, match="no job"):
        client.get("does-not-exist")


def test_wait_times_out_on_a_job_nobody_works_on(client: Client) -> None:
    job_id = client.submit(IMG)
    seen: list[JobState] = []
    with pytest.raises(TimeoutError):
        client.wait(job_id, timeout=0.3, interval=0.1, on_update=lambda j: seen.append(j.state))
    assert seen and set(seen) == {JobState.QUEUED}


def test_redis_down_is_a_clear_error_not_a_hang(make_settings: Callable[..., Settings]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    client = Client(settings=make_settings(redis_url=url, redis_retries=1))
    with pytest.raises(Unavailable) as info:
        client.submit(IMG)
    assert "unreachable" in str(info.value) and "nothing was enqueued" in str(info.value)
    assert "hunter2" not in str(info.value)
    with pytest.raises(Unavailable):
        client.get("x")


def test_client_reads_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("VIDEOQ_REDIS_URL", redis_url)
    monkeypatch.setenv("VIDEOQ_DEADLINE", "123")
    client = Client()
    assert client.settings.redis_url == redis_url
    assert client.settings.deadline == 123.0
    assert Client(redis_url="redis://elsewhere:1/0").settings.redis_url == "redis://elsewhere:1/0"
    assert isinstance(client.store.redis, redis.Redis)


WEBHOOK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://2130706433/hook",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://localhost/hook",
        "http://hooks.internal/",
        "http://169.254.169.254/latest/",
        "http://192.168.1.1/",
        "http://example.com@10.0.0.1/",
    ],
)
def test_webhook_url_at_an_internal_host_is_refused(
    make_settings: Callable[..., Settings], url: str
) -> None:
    client = Client(settings=make_settings(webhook_secret=WEBHOOK_SECRET, allow_private_urls=False))
    with pytest.raises(RequestError) as info:
        client.submit(IMG, webhook_url=url)
    assert info.value.field == "webhook_url"
    assert "not a public host" in info.value.message
    assert not job_keys(client) and not queued_messages(client)


def test_webhook_url_whose_name_resolves_to_an_internal_address_is_refused(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "hooks.rebind-webhook.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 0))]
        return real(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    client = Client(settings=make_settings(webhook_secret=WEBHOOK_SECRET, allow_private_urls=False))
    with pytest.raises(RequestError) as info:
        client.submit(IMG, webhook_url="https://hooks.rebind-webhook.example/x")
    assert info.value.field == "webhook_url"
    assert "resolves to a private address" in info.value.message
    assert not job_keys(client)


def test_webhook_url_on_loopback_when_private_urls_are_allowed(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(webhook_secret=WEBHOOK_SECRET, allow_private_urls=True))
    job_id = client.submit(IMG, webhook_url="http://127.0.0.1:8080/hook")
    assert client.get(job_id).webhook_url == "http://127.0.0.1:8080/hook"
    for url in ("javascript:alert(1)", "file:///etc/passwd", "http://127.0.0.1/\r\nX: 1"):
        with pytest.raises(RequestError) as info:
            client.submit(IMG, webhook_url=url)
        assert info.value.field == "webhook_url"


def test_webhook_url_without_a_secret_says_webhooks_are_off(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(allow_private_urls=False))
    with pytest.raises(RequestError) as info:
        client.submit(IMG, webhook_url="https://hooks.example.com/videoq")
    assert (info.value.field, info.value.message) == (
        "webhook_url",
        "webhooks are off: VIDEOQ_WEBHOOK_SECRET is not set",
    )
