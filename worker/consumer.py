"""Celery's consumer, made to survive losing its Redis connection.

With celery 5.7.0 and kombu 5.7.0, a worker whose broker connection drops while it
holds unacknowledged messages (videoq's countdown tasks, always) dies with
``Unrecoverable error: AttributeError("'NoneType' object has no attribute
'hostname'")``: on the connection error the consumer first releases the transport,
then closes the channel, and closing the channel tries to hand the held messages back
to Redis through that released transport. (Seen here when Redis was restarted: see
``tests/reliability/test_redis_faults.py``.)

Handing them back cannot work anyway while Redis is unreachable, and it is not
needed: the held messages are still in Redis's ``unacked`` set (they were never
acknowledged), Redis restores them after the visibility timeout, and the sweeper
resumes their jobs from the records sooner. So on a connection error this consumer
turns the hand-back off for that connection's channels and lets Celery reconnect as
usual. A warm shutdown still hands held messages back.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer
from redis.exceptions import ResponseError

from . import logs


class VideoqConsumer(Consumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Redis refusing a command (out of memory at maxmemory, a read-only replica, a
        # failed save) used to stop the worker ("Unrecoverable error:
        # OutOfMemoryError"): the transport writes to Redis as it takes each message.
        # Treat it as a lost connection instead: reconnect, and go on once Redis
        # takes writes again. Jobs of messages lost meanwhile are resumed from their
        # records by the sweeper.
        errors: tuple[type[BaseException], ...] = tuple(self.conninfo.connection_errors)
        self.connection_errors = (*errors, ResponseError)

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        transport = getattr(self.connection, "_transport", None)
        channels: list[Any] = list(getattr(transport, "channels", None) or [])
        default = getattr(self.connection, "_default_channel", None)
        if default is not None and default not in channels:
            channels.append(default)
        held = 0
        for channel in channels:
            channel.do_restore = False
            held += len(getattr(getattr(channel, "qos", None), "_delivered", None) or ())
        logs.event(
            "broker.connection_lost",
            error=type(exc).__name__,
            held_messages=held,
            note="held messages stay in Redis's unacked set; the sweeper resumes their jobs",
        )
        super().on_connection_error_after_connected(exc)
