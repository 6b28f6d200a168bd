"""The gateway's request and answer models: the components of its OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from worker.job import Job
from worker.request import GenerationRequest


class JobRequest(GenerationRequest):
    """A generation request, plus where to POST the record when the job ends."""

    webhook_url: str | None = Field(default=None, max_length=4096)


class JobPage(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class UpstreamCreated(BaseModel):
    id: str
    status: Literal["queued"]


class UpstreamVideo(BaseModel):
    url: str


# A failed generation's "error" in the upstream's shape (not worker.errors.UpstreamError,
# the exception raised on upstream failures). No docstring: it would enter the schema.
class UpstreamFailure(BaseModel):
    name: str
    message: str


class UpstreamStatus(BaseModel):
    id: str
    status: Literal["queued", "generating", "completed", "error"]
    video: UpstreamVideo | None = None
    error: UpstreamFailure | None = None


class Problem(BaseModel):
    detail: Any
