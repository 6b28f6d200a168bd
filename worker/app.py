"""The Celery app and its configuration.

``celery -A worker.app worker`` (or ``videoq worker``) runs it. Producers import only
this module and ``worker.store`` to publish by task name; the task code in
``worker.tasks`` is imported by the worker alone.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from celery import Celery, signals

from .chain import Runtime, Scheduler
from .http import EventLoop
from .logs import install_json_format, install_redaction
from .pump import PumpStep
from .settings import Settings, load_settings
from .store import JobStore, connect
from .sweeper import SweeperStep
from .upstream import UpstreamClient
from .webhooks import webhook_http


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from videoq's settings (see README, "Configuration")."""
    return {
        "broker_url": settings.redis_url,
        # kombu's Redis transport, kept consuming while Redis refuses writes (OOM ...).
        "broker_transport": "worker.transport:Transport",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            # Unacknowledged messages (a killed worker's countdown tasks included)
            # come back after this long, not after Redis's default hour.
            "visibility_timeout": settings.visibility_timeout,
            # ... by a scan every few seconds (kombu's default scans once in 10 x 10 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 6)),
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "health_check_interval": 30,
        },
        "task_default_queue": settings.queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # Every step is idempotent (atomic claims in the job store), so a step whose
        # worker died may safely run again: acknowledge only after it ran.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Publishing the next step must not fail on a momentary broker error.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 20,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        # Batch mode's ticks are few and long: a worker reserves one per free pool
        # process, so a tick waits for no busy process while another worker is idle.
        "worker_prefetch_multiplier": 1 if settings.poll_mode == "batch" else 4,
        "worker_eta_task_limit": settings.eta_task_limit,
        # Flower: see tasks as they are sent, started and finished.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Survives a lost broker connection (works around a celery/kombu 5.7 crash).
        "worker_consumer": "worker.consumer:VideoqConsumer",
        "enable_utc": True,
        "timezone": "UTC",
    }


class VideoqCelery(Celery):  # type: ignore[misc]
    """The Celery app, carrying videoq's settings and each process's runtime."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("videoq", include=["worker.tasks"])
        self.videoq_settings = settings
        self.config_from_object(celery_config(settings))
        self.steps["worker"].add(SweeperStep)
        self.steps["worker"].add(PumpStep)
        self._runtime: tuple[int, Runtime] | None = None
        self._locks: dict[int, threading.Lock] = {}

    def runtime(self, scheduler: Scheduler) -> Runtime:
        """This process's Redis pool, event loop and HTTP clients (made after fork, once
        per process)."""
        pid = os.getpid()
        if self._runtime is not None and self._runtime[0] == pid:
            return self._runtime[1]
        # Pool threads may ask at once; a lock per process (a forked child gets its own,
        # never one a parent's thread held at the fork).
        with self._locks.setdefault(pid, threading.Lock()):
            if self._runtime is not None and self._runtime[0] == pid:
                return self._runtime[1]
            settings = self.videoq_settings
            loop = EventLoop()
            store = JobStore(connect(settings), settings)
            self._runtime = (
                pid,
                Runtime(
                    settings=settings,
                    store=store,
                    # the rate limiter shares the store's Redis pool
                    upstream=UpstreamClient.from_settings(settings, loop, redis_client=store.redis),
                    scheduler=scheduler,
                    clock=time.time,
                    rng=random.Random(),
                    http=webhook_http(settings, loop),
                ),
            )
            return self._runtime[1]


def create_app(settings: Settings | None = None) -> VideoqCelery:
    return VideoqCelery(settings or load_settings())


app = create_app()


@signals.after_setup_logger.connect  # type: ignore[untyped-decorator]
@signals.after_setup_task_logger.connect  # type: ignore[untyped-decorator]
def _redact_logs(**_: object) -> None:
    secrets = [app.videoq_settings.aimlapi_key.get_secret_value()]
    install_redaction(secrets)
    if app.videoq_settings.log_format == "json":
        install_json_format(secrets)
