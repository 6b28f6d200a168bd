"""The simulator's videos: real MP4 bytes at the ``video.url`` a completed generation
reports (``/_sim/videos/<id>.mp4``), for ``<video>`` tags and for saving a job's video.

``sample.mp4`` beside this module is a 2 s, 160x96, 12 fps H.264 (Constrained Baseline,
yuv420p) clip with its ``moov`` box before ``mdat`` ("faststart"), 6.4 KB. It was made
once with PyAV (libx264, crf 30, ``movflags=+faststart``) from a moving gradient; every
generation's URL serves the same bytes.

A URL whose ``expires`` query value (a Unix time, as the threaded simulator writes it)
is in the past answers 403, like the upstream's signed, expiring links; an unknown
generation, or one that has not completed with a video, answers 404.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib.resources import files

VIDEO_PATH = re.compile(r"^/_sim/videos/([0-9A-Za-z_-]{1,64})\.mp4$")
VIDEO = files("simulator").joinpath("sample.mp4").read_bytes()


@dataclass
class VideoAnswer:
    """One answer of the video route: status, headers and body (empty for HEAD)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def video_id(path: str) -> str | None:
    """The generation id in a video path, or None when ``path`` is not one."""
    match = VIDEO_PATH.match(path)
    return match.group(1) if match else None


def video_answer(method: str, ready: bool, expires: str | None, now: float) -> VideoAnswer:
    """The answer to ``GET``/``HEAD`` of a video: ``ready`` says the generation exists
    and has completed with a video; ``expires`` is the URL's ``expires`` value, if any."""
    if not ready:
        return _text(404, "no such video", method)
    if expires is not None:
        try:
            expired = not float(expires) >= now  # nan: expired, as any unreadable time
        except ValueError:
            expired = True
        if expired:
            return _text(403, "this video link has expired", method)
    headers = {"Content-Type": "video/mp4", "Content-Length": str(len(VIDEO))}
    headers["Cache-Control"] = "private, max-age=3600"
    return VideoAnswer(200, b"" if method == "HEAD" else VIDEO, headers)


def _text(status: int, message: str, method: str) -> VideoAnswer:
    body = message.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body))}
    return VideoAnswer(status, b"" if method == "HEAD" else body, headers)
