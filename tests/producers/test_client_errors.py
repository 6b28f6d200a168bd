"""Truthful errors from the Python client: Redis URLs shown with every secret masked;
reads, cancels and submits during an outage, a submit whose outcome is unknown, and
Redis refusing writes (out of memory, a read-only replica), each said as it is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from producers import Client, JobState, Unavailable
from producers.local import free_port
from tests.producers.conftest import IMG
from worker.settings import Settings


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
    from producers.failures import safe_url

    assert safe_url(url) == shown
    assert "hunter2" not in safe_url(url)


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
