"""Producers: what applications use to submit videoq jobs (Python client and CLI).

from producers import Client
job_id = Client().submit("https://example.com/cat.jpg", prompt="a cat surfing")
job = Client().wait(job_id)
"""

from typing import TYPE_CHECKING, Any

from worker.errors import (
    DownloadFailed,
    JobNotFound,
    RequestError,
    Unavailable,
    VideoqError,
    WebhookVerificationError,
)
from worker.job import Job, JobError
from worker.keys import GENERATE_TASK
from worker.signatures import verify as verify_webhook
from worker.states import TERMINAL_STATES, JobState

if TYPE_CHECKING:
    from .client import Client


def __getattr__(name: str) -> Any:
    # Imported on first use, not with the package: the client brings in Celery, kombu
    # and redis-py, which `videoq --help` and the webhook receivers do not need.
    if name == "Client":
        from . import client

        return client.Client
    raise AttributeError(f"module 'producers' has no attribute {name!r}")


__all__ = [
    "GENERATE_TASK",
    "TERMINAL_STATES",
    "Client",
    "DownloadFailed",
    "Job",
    "JobError",
    "JobNotFound",
    "JobState",
    "RequestError",
    "Unavailable",
    "VideoqError",
    "WebhookVerificationError",
    "verify_webhook",
]
