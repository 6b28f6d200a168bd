"""Celery's configuration, derived from videoq's settings, and a publisher.

Producers publish by task name through :func:`publisher`, a plain Celery app with
this configuration: they never import the worker's task code or build a worker.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from .settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings derived from videoq's settings (see docs/configuration.md)."""
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
        # A task that raised (JobEnded: its step ended the job failed or timed out) is
        # acknowledged, never redelivered: the job's record already holds the outcome.
        "task_acks_on_failure": True,
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


def publisher(settings: Settings) -> Celery:
    """A Celery app that only sends videoq's tasks (by name), for producers."""
    celery = Celery("videoq", set_as_current=False)
    celery.config_from_object(celery_config(settings))
    return celery
