"""Test doubles: a fake clock, a scripted upstream, a recording scheduler."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from worker.answers import Status
from worker.errors import UpstreamError
from worker.ratelimit import Refused


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeUpstream:
    """Answers from scripted queues; each item a :class:`Status` or an exception."""

    create_answers: deque[Status | UpstreamError] = field(default_factory=deque)
    status_answers: deque[Status | UpstreamError] = field(default_factory=deque)
    creates: list[dict[str, Any]] = field(default_factory=list)
    polls: list[str] = field(default_factory=list)

    def create(self, body: dict[str, Any], *, timeout: float | None = None) -> Status:
        self.creates.append(body)
        answer = self.create_answers.popleft() if self.create_answers else Status("gen-1", "queued")
        if isinstance(answer, Exception):
            raise answer
        return answer

    def status(self, generation_id: str, *, timeout: float | None = None) -> Status:
        self.polls.append(generation_id)
        answer = self.status_answers.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer

    # A batch's calls, one after another, each answer given as it comes (a tick's
    # ``fetch``; the real client makes them at once on its event loop).

    def reserve(self, kind: str, count: int, timeout: float) -> list[float | Refused] | None:
        return None  # no rate limit

    def each_status(
        self, calls: Sequence[tuple[str, float]], idle: float = 0.25, slots: object = None
    ) -> Iterator[tuple[int, Status | UpstreamError]]:
        for index, (generation_id, timeout) in enumerate(calls):
            yield index, _caught(partial(self.status, generation_id, timeout=timeout))

    def each_create(
        self,
        calls: Sequence[tuple[dict[str, Any], float]],
        idle: float = 0.25,
        slots: object = None,
    ) -> Iterator[tuple[int, Status | UpstreamError]]:
        for index, (body, timeout) in enumerate(calls):
            yield index, _caught(partial(self.create, body, timeout=timeout))


def _caught(call: Callable[[], Status]) -> Status | UpstreamError:
    try:
        return call()
    except UpstreamError as exc:
        return exc


@dataclass
class Scheduled:
    step: str
    job_id: str
    deadline_at: float
    countdown: float
    attempt: int = 0
    seq: int = 0
    errors: int = 0


@dataclass
class RecordingScheduler:
    calls: list[Scheduled] = field(default_factory=list)

    def generate(self, job_id: str, deadline_at: float, attempt: int, countdown: float) -> None:
        self.calls.append(Scheduled("generate", job_id, deadline_at, countdown, attempt=attempt))

    def poll(
        self, job_id: str, deadline_at: float, seq: int, errors: int, countdown: float
    ) -> None:
        self.calls.append(Scheduled("poll", job_id, deadline_at, countdown, seq=seq, errors=errors))

    def webhook(self, job_id: str, attempt: int, countdown: float) -> None:
        self.calls.append(Scheduled("webhook", job_id, 0.0, countdown, attempt=attempt))

    def pop(self) -> Scheduled:
        return self.calls.pop(0)
