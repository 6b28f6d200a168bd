"""Producers: what applications use to submit videoq jobs (Python client and CLI).

from producers import Client
job_id = Client().submit("https://example.com/cat.jpg", prompt="a cat surfing")
job = Client().wait(job_id)
"""

from typing import TYPE_CHECKING, Any

from worker.job import Job, JobError
from worker.keys import GENERATE_TASK
from worker.request import RequestError
from worker.states import TERMINAL_STATES, JobState
from worker.webhooks import WebhookVerificationError
from worker.webhooks import verify as verify_webhook

if TYPE_CHECKING:
    from .client import Client, JobNotFound, Unavailable


def __getattr__(name: str) -> Any:
    # The client is imported on first use, not with the package: importing it builds
    # the Celery app from the settings, and the CLI must be able to report refused
    # settings in one line rather than fail while it is being imported.
    if name in ("Client", "JobNotFound", "Unavailable"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'producers' has no attribute {name!r}")


ValidationError = RequestError  # the name SPEC uses; same class

__all__ = [
    "GENERATE_TASK",
    "TERMINAL_STATES",
    "Client",
    "Job",
    "JobError",
    "JobNotFound",
    "JobState",
    "RequestError",
    "Unavailable",
    "ValidationError",
    "WebhookVerificationError",
    "verify_webhook",
]
