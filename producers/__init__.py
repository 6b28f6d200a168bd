"""Producers: what applications use to submit videoq jobs (Python client and CLI).

    from producers import Client
    job_id = Client().submit("https://example.com/cat.jpg", prompt="a cat surfing")
    job = Client().wait(job_id)
"""

from worker.job import Job, JobError
from worker.keys import GENERATE_TASK
from worker.request import RequestError
from worker.states import TERMINAL_STATES, JobState
from worker.webhooks import WebhookVerificationError
from worker.webhooks import verify as verify_webhook

from .client import Client, JobNotFound, Unavailable

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
