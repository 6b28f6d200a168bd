"""kombu's Redis transport, made to keep a worker consuming while Redis refuses writes.

Redis at ``maxmemory`` (``OOM``), a read-only replica (``READONLY``) or a failed save
(``MISCONF``) refuses the writes kombu makes around each message: recording it as
unacknowledged when it is taken, and removing that record when it is acknowledged or
rejected. kombu then leaves the message counted as *delivered* in the worker's memory.
Once as many messages as the prefetch window are stuck that way, the worker stops
taking messages for good, even after Redis takes writes again (seen here with a
``--maxmemory`` Redis: the queue filled up and stayed full while the worker idled).

It also survives a race in celery/kombu 5.7: after a lost connection, a task taken
on the old connection can finish after the worker reconnected, and its
acknowledgement then goes to the old, closed channel, which fails with
``AttributeError: 'NoneType' object has no attribute 'client'`` and stops the worker
("Unrecoverable error"; seen here once in a Redis restart test, with both workers).
On a closed channel the acknowledgement is dropped: the message is still in Redis's
``unacked`` set, and the sweeper (or Redis's redelivery) covers it.

This transport keeps the worker's own bookkeeping right when Redis refuses such a
write: the message is released in memory all the same, and a warning says what Redis
kept. What that costs:

- a message Redis could not record as unacknowledged is not redelivered if the worker
  dies while running it; its job is still in the store's active set, and the sweeper
  resumes it from the record;
- a message whose acknowledgement Redis refused stays in Redis's ``unacked`` set and
  is delivered again after ``VIDEOQ_VISIBILITY_TIMEOUT``; every step is fenced, so the
  copy does nothing.

Celery uses it through ``broker_transport`` (``worker.config.celery_config``).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import RedisError

from . import logs
from .store import refuses_writes


def _refused(action: str, delivery_tag: str, exc: RedisError) -> None:
    logs.event(
        "broker.write_refused",
        level=logging.WARNING,
        action=action,
        delivery_tag=delivery_tag,
        error=f"{type(exc).__name__}: {str(exc)[:200]}",
        note="released in memory; the sweeper and Redis's redelivery cover the message",
    )


class QoS(kombu_redis.QoS):
    def _closed(self, action: str, delivery_tag: str) -> bool:
        """True (and logged) when this QoS's channel was closed with its connection."""
        if getattr(self.channel, "connection", None) is not None:
            return False
        logs.event(
            "broker.closed_channel",
            level=logging.WARNING,
            action=action,
            delivery_tag=delivery_tag,
            note="taken on a lost connection; Redis's unacked set keeps the message",
        )
        return True

    def append(self, message: Any, delivery_tag: str) -> None:
        try:
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            if not refuses_writes(exc):
                raise
            _refused("append", delivery_tag, exc)
            virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: str) -> None:
        if self._closed("ack", delivery_tag):
            return
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            if not refuses_writes(exc):
                raise
            _refused("ack", delivery_tag, exc)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._closed("reject", delivery_tag):
            return
        try:
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            if not refuses_writes(exc):
                raise
            _refused("reject", delivery_tag, exc)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
