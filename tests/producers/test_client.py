"""The Python producer API on real Redis (no worker needed: we inspect the queue)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis

from producers import Client, JobNotFound, JobState, RequestError, Unavailable
from producers.local import free_port
from worker.errors import RequestTooLarge
from worker.keys import GENERATE_TASK
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
    assert message["headers"]["kwargsrepr"] == repr(  # type: ignore[index]
        {"step": "create", "n": 1, "state": "queued", "job_id": job_id}
    )


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


# --- hardening: sizes, owners, listings, truthful errors ---------------------------------

DATA = "data:image/png;base64," + "iVBORw0KGgoA" * 400


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:hunter2@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://user:hunter2@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://hunter2@h:6379/0", "redis://***@h:6379/0"),
        ("redis://h:6379/0?password=hunter2&db=1", "redis://h:6379/0?password=***&db=1"),
        (
            "rediss://h/0?PASS=hunter2&ssl_cert_reqs=none",
            "rediss://h/0?PASS=***&ssl_cert_reqs=none",
        ),
        ("redis://h/0?auth=hunter2&x=1", "redis://h/0?auth=***&x=1"),
        ("redis://h/0?token=hunter2", "redis://h/0?token=***"),
        ("redis://h/0?sentinel_password=hunter2", "redis://h/0?sentinel_password=***"),
        ("redis://h/0?ssl_keyfile_Secret=hunter2", "redis://h/0?ssl_keyfile_Secret=***"),
        ("redis://h/0?api_key=hunter2", "redis://h/0?api_key=***"),
        (
            "sentinel://:hunter2@a:26379;sentinel://b:26379?password=hunter2",
            "sentinel://:***@a:26379;sentinel://b:26379?password=***",
        ),
    ],
)
def test_safe_url_masks_every_secret(url: str, shown: str) -> None:
    from producers.client import safe_url

    assert safe_url(url) == shown
    assert "hunter2" not in safe_url(url)


def test_a_request_over_the_size_cap_is_refused(make_settings: Callable[..., Settings]) -> None:
    client = Client(settings=make_settings(max_request_bytes=4096))
    with pytest.raises(RequestError) as info:
        client.submit(DATA, static_mask=DATA)
    assert info.value.field == "request" and "VIDEOQ_MAX_REQUEST_BYTES" in str(info.value)
    assert isinstance(info.value, RequestTooLarge)
    assert queued_messages(client) == [] and job_keys(client) == []
    client.submit(IMG)  # a small one still goes


def test_inline_images_are_not_echoed_by_get(client: Client) -> None:
    job_id = client.submit(DATA, prompt="inline")
    job = client.get(job_id)
    assert job.request["prompt"] == "inline"
    assert "bytes, sha256" in job.request["image_url"] and len(job.request["image_url"]) < 100
    assert len(job.to_json()) < 2000
    assert client.store.full_request(job)["image_url"] == DATA


def test_same_idempotency_key_with_another_webhook_url_is_a_conflict(
    make_settings: Callable[..., Settings],
) -> None:
    client = Client(settings=make_settings(webhook_secret="whsec_" + "A" * 32))
    first = client.submit(IMG, idempotency_key="hook-1", webhook_url="https://a.example.com/h")
    again = client.submit(IMG, idempotency_key="hook-1", webhook_url="https://a.example.com/h")
    assert first == again
    with pytest.raises(RequestError) as info:
        client.submit(IMG, idempotency_key="hook-1", webhook_url="https://b.example.com/h")
    assert info.value.field == "idempotency_key"
    with pytest.raises(RequestError):
        client.submit(IMG, idempotency_key="hook-1")


def test_owners_see_only_their_jobs_and_have_their_own_keys(client: Client) -> None:
    alice = client.submit(IMG, prompt="a", idempotency_key="k", owner="alice")
    bob = client.submit(IMG, prompt="a", idempotency_key="k", owner="bob")
    assert alice != bob  # one key, two callers: two jobs
    assert client.submit(IMG, prompt="a", idempotency_key="k", owner="alice") == alice
    assert client.get(alice, owner="alice").owner == "alice"
    assert client.get(alice).owner == "alice"  # no owner given: every job
    with pytest.raises(JobNotFound):
        client.get(alice, owner="bob")
    with pytest.raises(JobNotFound):
        client.cancel(alice, owner="bob")
    assert client.get(alice).state is JobState.QUEUED  # untouched
    assert client.cancel(alice, owner="alice").state is JobState.CANCELLED
    jobs, _ = client.list_jobs(owner="bob", limit=50)
    assert [j.id for j in jobs] == [bob]


@pytest.mark.parametrize("limit", [1, 2, 7, 50])
def test_listing_pages_hold_at_most_limit_and_resume_exactly(client: Client, limit: int) -> None:
    ids = {client.submit(IMG, prompt=f"list {i}") for i in range(23)}
    seen: list[str] = []
    cursor: str | None = "0"
    pages = 0
    while cursor is not None:
        jobs, cursor = client.list_jobs(cursor=cursor, limit=limit)
        assert len(jobs) <= limit
        seen += [j.id for j in jobs]
        pages += 1
        assert pages < 100
    assert sorted(seen) == sorted(ids)  # none repeated, none skipped
    if limit == 1:
        assert pages >= 23
    first, _ = client.list_jobs(limit=1)
    assert len(first) == 1


@pytest.mark.parametrize(
    "cursor",
    [
        "abc",
        "1",
        "-1.0",
        "1.2.3",
        "1.-2",
        "",
        " 0",
        "1e3.0",
        "99999999999999999999.0",
        "18446744073709551616.0",
    ],
)
def test_a_garbage_cursor_is_refused(client: Client, cursor: str) -> None:
    with pytest.raises(RequestError) as info:
        client.list_jobs(cursor=cursor)
    assert info.value.field == "cursor"


def test_reads_during_an_outage_say_the_job_is_not_affected(
    make_settings: Callable[..., Settings],
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0?password=hunter2"
    client = Client(settings=make_settings(redis_url=url, redis_retries=0))
    with pytest.raises(Unavailable) as info:
        client.get("abc123")
    message = str(info.value)
    assert message.startswith("could not read job abc123: Redis at redis://:***@127.0.0.1")
    assert "the job is not affected" in message and "nothing was enqueued" not in message
    assert "hunter2" not in message and info.value.job_id == "abc123"
    with pytest.raises(Unavailable) as waited:
        client.wait("abc123", timeout=1)
    assert "could not read job abc123" in str(waited.value)
    with pytest.raises(Unavailable) as listed:
        client.list_jobs()
    assert "could not list jobs" in str(listed.value)
    with pytest.raises(Unavailable) as cancelled:
        client.cancel("abc123")
    assert "could not cancel job abc123" in str(cancelled.value)
    assert "retry it" in str(cancelled.value) and "nothing was enqueued" not in str(cancelled.value)
    with pytest.raises(Unavailable) as refused:
        client.submit(IMG)
    assert "the job was not accepted" in str(refused.value)  # the connection was refused
    assert refused.value.job_id is None


class DropAfterConnect:
    """A TCP server that accepts, reads a command, then closes: a Redis that fails
    after the command was sent."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def test_a_submit_whose_outcome_is_unknown_says_so(make_settings: Callable[..., Settings]) -> None:
    server = DropAfterConnect()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        client = Client(settings=make_settings(redis_url=url, redis_retries=1))
        with pytest.raises(Unavailable) as info:
            client.submit(IMG, idempotency_key="order-9")
    finally:
        server.close()
    message = str(info.value)
    assert "outcome is unknown" in message and "same idempotency key" in message
    assert "not accepted" not in message and "nothing was enqueued" not in message
    assert info.value.job_id and info.value.job_id in message


def test_redis_refusing_writes_is_unavailable_with_the_reason(
    full_redis: tuple[str, redis.Redis],
    make_settings: Callable[..., Settings],
) -> None:
    url, filler = full_redis
    client = Client(settings=make_settings(redis_url=url))
    with pytest.raises(Unavailable) as info:
        client.submit(IMG)
    assert str(info.value) == (
        "Redis refuses writes: out of memory (maxmemory reached); the job was not accepted"
    )
    filler.config_set("maxmemory", 0)
    assert client.get(client.submit(IMG)).state is JobState.QUEUED


def test_write_refusals_are_told_apart_from_other_errors() -> None:
    from redis.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, ResponseError

    from worker.store import refuses_writes
    from worker.store import write_refusal as _refusal

    assert _refusal(OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
    assert _refusal(ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert "read-only" in (_refusal(ReadOnlyError("You can't write against a replica")) or "")
    misconf = ResponseError(
        "MISCONF Redis is configured to save RDB snapshots, but it's "
        "currently unable to persist to disk"
    )
    assert "MISCONF" in (_refusal(misconf) or "")
    assert _refusal(ResponseError("WRONGTYPE Operation against a key")) is None
    assert refuses_writes(misconf) and not refuses_writes(ConnectionError("refused"))


def test_a_read_only_replica_is_unavailable_with_the_reason(
    make_settings: Callable[..., Settings],
) -> None:
    from producers.local import RedisServer

    server = RedisServer().start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.replicaof("127.0.0.1", free_port())  # a master that never answers
        client = Client(settings=make_settings(redis_url=server.url))
        with pytest.raises(Unavailable) as info:
            client.submit(IMG)
        assert str(info.value) == (
            "Redis refuses writes: it is a read-only replica; the job was not accepted"
        )
        admin.replicaof("NO", "ONE")
        assert client.get(client.submit(IMG)).state is JobState.QUEUED
        admin.close()
    finally:
        server.cleanup()
