"""The worker's consumer as the worker app runs it (``worker.consumer.VideoqConsumer``,
named by ``worker_consumer`` in ``worker.config``): on a lost broker connection it turns
off the hand-back of held messages, which celery/kombu 5.7 would try through the
released transport and crash the worker, then lets Celery reconnect as usual.
(End to end: ``tests/reliability/test_redis_faults.py``, where the crash is a race.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from celery.utils.imports import symbol_by_name
from celery.worker.consumer import Consumer

from worker.app import app
from worker.consumer import VideoqConsumer


def _consumer_class() -> Any:
    """The consumer class the worker app runs, looked up as Celery's worker does: the
    ``worker_consumer`` setting, by name."""
    return symbol_by_name(app.conf.worker_consumer)


def test_the_worker_app_runs_videoqs_consumer() -> None:
    cls = _consumer_class()
    assert issubclass(cls, VideoqConsumer), f"the worker would run {cls.__module__}.{cls.__name__}"


def test_a_lost_connection_keeps_the_held_messages_in_redis_and_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reconnects: list[Exception] = []
    monkeypatch.setattr(
        Consumer,
        "on_connection_error_after_connected",
        lambda self, exc: reconnects.append(exc),
    )
    held = SimpleNamespace(do_restore=True, qos=SimpleNamespace(_delivered={"t1": 1, "t2": 2}))
    default = SimpleNamespace(do_restore=True, qos=None)
    cls = _consumer_class()
    consumer = cls.__new__(cls)  # without Celery's start-up: only the connection is used
    consumer.connection = SimpleNamespace(
        _transport=SimpleNamespace(channels=[held]), _default_channel=default
    )
    lost = ConnectionError("Redis went away")
    consumer.on_connection_error_after_connected(lost)
    # No hand-back through the released transport: the messages stay in Redis's
    # unacked set (redelivered after the visibility timeout; the sweeper resumes sooner).
    assert held.do_restore is False
    assert default.do_restore is False
    assert reconnects == [lost]  # Celery's own reconnect still runs
