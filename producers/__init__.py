"""Producers: what applications use to submit videoq jobs (Python client and CLI).

from producers import Client
job = Client().run("https://example.com/cat.jpg", prompt="a cat surfing")

``AsyncClient`` is the same for asyncio apps: ``job = await AsyncClient().run(...)``.
"""

from typing import TYPE_CHECKING, Any

from worker.errors import (
    DownloadFailed,
    JobFailed,
    JobNotFound,
    JobOverdue,
    ModeUnsupported,
    RequestError,
    Unavailable,
    VideoqError,
    WaitTimeout,
    WebhookVerificationError,
)
from worker.job import Job, JobError
from worker.keys import GENERATE_TASK
from worker.signatures import verify as verify_webhook
from worker.states import TERMINAL_STATES, JobState

from .updates import Update

if TYPE_CHECKING:
    from .aio import AsyncClient
    from .client import Client


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: the client brings in Celery, kombu
    # and redis-py, which `videoq --help` and the webhook receivers do not need.
    if name == "Client":
        from . import client

        return client.Client
    if name == "AsyncClient":
        from . import aio

        return aio.AsyncClient
    raise AttributeError(f"module 'producers' has no attribute {name!r}")


__all__ = [
    "GENERATE_TASK",
    "TERMINAL_STATES",
    "AsyncClient",
    "Client",
    "DownloadFailed",
    "Job",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobOverdue",
    "JobState",
    "ModeUnsupported",
    "RequestError",
    "Unavailable",
    "Update",
    "VideoqError",
    "WaitTimeout",
    "WebhookVerificationError",
    "verify_webhook",
]
