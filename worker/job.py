"""The job record as producers see it (``videoq status --json``, ``Client.get``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import DownloadFailed
from .states import JobState


@dataclass(frozen=True)
class JobError:
    kind: str
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    state: JobState
    request: dict[str, Any] = field(default_factory=dict)
    generation_id: str | None = None
    video_url: str | None = None
    error: JobError | None = None
    last_error: str | None = None
    credits_used: float | None = None
    attempts: int = 0
    polls: int = 0
    created_at: float | None = None
    updated_at: float | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    deadline_at: float | None = None
    next_poll_at: float | None = None
    next_create_at: float | None = None  # when a create retried after an error is due
    idempotency_key: str | None = None
    owner: str | None = None  # the gateway caller's name (VIDEOQ_API_TOKENS name:token)
    webhook_url: str | None = None
    webhook_state: str | None = None  # pending | delivered | failed
    webhook_attempts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was ignored or noticed, and why

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    def require_video(self) -> str:
        """The video's URL; :class:`DownloadFailed` when the job has none (it is not
        completed)."""
        if self.state is not JobState.COMPLETED:
            later = "" if self.state.is_terminal else " (only a completed job has one)"
            raise DownloadFailed(f"job {self.id} has no video: it is {self.state.value}{later}")
        if not self.video_url:
            raise DownloadFailed(f"job {self.id} completed without a video URL")
        return self.video_url

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        timeout: float | None = None,
        allow_private: bool | None = None,
    ) -> Path:
        """Save the job's video to ``path`` and return it as a :class:`~pathlib.Path`.

        The video is downloaded from ``video_url``, the upstream's link (which expires;
        videoq keeps no copy of its own yet), streamed and bounded: see
        :mod:`worker.download` (``max_bytes``, default 2 GiB; ``timeout`` for the whole
        download, default 600 s). Private and loopback hosts are refused unless
        ``allow_private`` (default: ``VIDEOQ_ALLOW_PRIVATE_URLS``). A failure, or a job
        that has no video (not completed), raises :class:`DownloadFailed`; no partial
        file is left at ``path``.
        """
        # Imported here: the downloader brings in aiohttp, which reading records does not need.
        from .download import DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT, save_video
        from .settings import load_settings

        if allow_private is None:
            allow_private = load_settings().allow_private_urls
        return save_video(
            self.require_video(),
            path,
            allow_private=allow_private,
            max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        )

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Job:
        def num(name: str) -> float | None:
            value = raw.get(name)
            return float(value) if value not in (None, "") else None

        def text(name: str) -> str | None:
            value = raw.get(name)
            return value if value else None

        error = None
        if raw.get("error_kind"):
            error = JobError(kind=raw["error_kind"], message=raw.get("error_message", ""))
        return cls(
            id=raw["id"],
            state=JobState(raw["state"]),
            request=json.loads(raw.get("request") or "{}"),
            generation_id=text("generation_id"),
            video_url=text("video_url"),
            error=error,
            last_error=text("last_error"),
            credits_used=num("credits_used"),
            attempts=int(raw.get("attempts") or 0),
            polls=int(raw.get("poll_seq") or 0),
            created_at=num("created_at"),
            updated_at=num("updated_at"),
            submitted_at=num("submitted_at"),
            finished_at=num("finished_at"),
            deadline_at=num("deadline_at"),
            next_poll_at=num("next_poll_at"),
            next_create_at=num("next_create_at"),
            idempotency_key=text("idempotency_key"),
            owner=text("owner"),
            webhook_url=text("webhook_url"),
            webhook_state=text("webhook_state"),
            webhook_attempts=json.loads(raw.get("webhook_attempts") or "[]"),
            notes=json.loads(raw.get("notes") or "[]"),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
