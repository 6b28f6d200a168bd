"""The broker transport keeps a worker consuming: Redis refusing writes, a closed channel."""

from __future__ import annotations

from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from worker import transport


class Pipe:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self

    def execute(self) -> None:
        if self.error is not None:
            raise self.error


class Channel:
    """What kombu's Redis QoS reaches through its channel."""

    unacked_key = "unacked"
    unacked_index_key = "unacked_index"
    unacked_mutex_key = "unacked_mutex"
    unacked_mutex_expire = 300
    visibility_timeout = 300
    unacked_restore_limit = None
    do_restore = False

    def __init__(self, error: Exception | None, connected: bool = True) -> None:
        self.error = error
        self.connection = object() if connected else None

    def conn_or_acquire(self, client: Any = None) -> Any:
        error = self.error

        class Client:
            def __enter__(self) -> Any:
                if self_channel.connection is None:  # kombu fails like this
                    raise AttributeError("'NoneType' object has no attribute 'client'")
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def pipeline(self) -> Pipe:
                return Pipe(error)

        self_channel = self
        return Client()


def delivered_qos(channel: Channel) -> transport.QoS:
    qos = transport.QoS(channel)  # type: ignore[no-untyped-call]  # kombu's QoS is untyped
    qos._delivered["tag-1"] = object()
    return qos


def test_an_ack_redis_refuses_still_frees_the_prefetch_window() -> None:
    qos = delivered_qos(Channel(OutOfMemoryError("command not allowed")))
    qos.ack("tag-1")
    qos._flush()  # type: ignore[no-untyped-call]
    assert "tag-1" not in qos._delivered


def test_a_reject_redis_refuses_still_frees_the_prefetch_window() -> None:
    qos = delivered_qos(Channel(OutOfMemoryError("command not allowed")))
    qos.reject("tag-1", requeue=False)
    qos._flush()  # type: ignore[no-untyped-call]
    assert "tag-1" not in qos._delivered


def test_other_redis_errors_still_raise() -> None:
    qos = delivered_qos(Channel(RedisConnectionError("gone")))
    try:
        qos.ack("tag-1")
    except redis.RedisError:
        return
    raise AssertionError("a connection error must reach the consumer (it reconnects)")


def test_an_ack_on_a_channel_closed_with_its_connection_does_not_stop_the_worker() -> None:
    qos = delivered_qos(Channel(None, connected=False))
    qos.ack("tag-1")  # kombu 5.7 raises AttributeError here; the worker would stop
    qos.reject("tag-1", requeue=True)
