"""The simulator's model, shared by both servers (the threaded one in
:mod:`simulator.server` and the asyncio one in :mod:`simulator.aio`): its settings,
one-shot faults, generations and their status names, the request log, and the
upstream's request-rate window."""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

API_PATHS = ("/v2/generate/video/kling/generation", "/v2/video/generations")
MODEL_ID = "kling-video/v2.1/pro/image-to-video"
TIME_TAG = re.compile(r"\[sim:time=([0-9.]+)\]")


@dataclass
class SimConfig:
    api_key: str = "sim-key"  # "" accepts any Bearer token
    generation_time: float = 5.0  # seconds for a 5 s video; a 10 s video takes twice as long
    queued_fraction: float = 0.2  # share of the time reported as queued
    latency: float = 0.0  # delay before every answer (slow upstream)
    never_finish: bool = False  # every job stays generating
    fail_generations: bool = False  # every job ends in error
    reject_create: int = 0  # answer every create with this 4xx status (0: off)
    # Over this many API requests in any 1 s window, answer 429 (0: no limit) ...
    rate_limit: float = 0.0
    rate_retry_after: float | None = 1.0  # ... with this Retry-After (None: no header)


@dataclass
class Fault:
    kind: str = "status"  # status | disconnect | delay | body
    status: int = 500
    count: int = 1
    method: str = "*"  # POST, GET or *
    retry_after: float | None = None
    seconds: float = 0.0
    message: str = "simulated fault"
    body: str = ""  # kind "body": answer with this raw text (a hostile answer) ...
    content_type: str = "text/html"
    size: int = 0  # ... repeated up to this many bytes (a huge answer)


@dataclass
class Generation:
    id: str
    created_at: float
    generation_time: float
    behaviour: str
    duration: int
    prompt: str = ""

    def status(self, now: float, queued_fraction: float) -> str:
        elapsed = now - self.created_at
        legacy = self.behaviour == "legacy"
        if elapsed < self.generation_time * queued_fraction:
            return "waiting" if legacy else "queued"
        if elapsed < self.generation_time or self.behaviour == "never":
            return "active" if legacy else "generating"
        return {"error": "error", "unknown": "mystery-state"}.get(self.behaviour, "completed")

    def has_video(self, now: float, queued_fraction: float) -> bool:
        """Whether the generation has completed with a video (its URL serves the MP4)."""
        completed = self.status(now, queued_fraction) == "completed"
        return completed and self.behaviour != "novideo"


@dataclass
class LoggedRequest:
    t: float
    method: str
    path: str
    status_code: int = 0
    generation_id: str | None = None
    prompt: str | None = None
    authorized: bool = False
    fault: str | None = None


class RateWindow:
    """The upstream's request-rate limit: at most ``limit`` API requests (answered or
    not) in any sliding one-second window; requests over it are refused with 429."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def admit(self, now: float, limit: float) -> bool:
        if limit <= 0:
            return True
        while self.times and self.times[0] <= now - 1.0:
            self.times.popleft()
        if len(self.times) >= limit:
            return False
        self.times.append(now)
        return True


def rate_limited(config: SimConfig) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The 429 answer of a request over the rate limit."""
    headers = {}
    if config.rate_retry_after is not None:
        headers["Retry-After"] = f"{config.rate_retry_after:g}"
    return 429, {"message": "Too many requests: rate limit exceeded"}, headers


@dataclass
class SimState:
    config: SimConfig = field(default_factory=SimConfig)
    faults: list[Fault] = field(default_factory=list)
    generations: dict[str, Generation] = field(default_factory=dict)
    log: list[LoggedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    window: RateWindow = field(default_factory=RateWindow)

    def take_fault(self, method: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method in ("*", method) and fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self.faults.remove(fault)
                    return fault
        return None


def behaviour_for(prompt: str, config: SimConfig) -> str:
    for tag in ("never", "error", "unknown", "novideo", "legacy"):
        if f"[sim:{tag}]" in prompt:
            return tag
    if config.never_finish:
        return "never"
    if config.fail_generations:
        return "error"
    return "normal"
